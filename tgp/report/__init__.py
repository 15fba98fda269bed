"""Accounting (sparsity, parameters, FLOPs), run summaries, and sweep reports."""
