"""Cross-correlation (Barlow Twins form) between two representations of the same batch.

Used by self-distilled pruning (SDP, docs/methods.md, SDP): ``z_a`` are the penultimate features of the
masked network, ``z_b`` those of a frozen copy of its dense weights. The formula is ours (the
SDP paper's is not available to us); it is the Barlow Twins objective (Zbontar et al., 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor


def standardize_batch(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Per feature over the batch: ``(z − mean_b z) / sqrt(var_b z + eps)`` (population variance)."""
    z = z.float()
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """``C = ẑ_aᵀ ẑ_b / B`` of the batch-standardized features, shape ``(D, D)``."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"expected two (batch, features) tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    return standardize_batch(z_a, eps).T @ standardize_batch(z_b, eps) / z_a.shape[0]


def cross_correlation_loss(z_a: Tensor, z_b: Tensor, off_diagonal_weight: float = 0.0, eps: float = 1e-5) -> Tensor:
    """``L_CC = Σ_i (1 − C_ii)² + λ_off · Σ_{i≠j} C_ij²`` with ``C = ẑ_aᵀ ẑ_b / B``.

    ``ẑ = (z − mean_b z) / sqrt(var_b z + eps)`` standardizes every feature over the batch of
    ``B`` samples (population variance), so ``C_ij`` is the correlation of feature ``i`` of
    ``z_a`` with feature ``j`` of ``z_b``. The diagonal term pulls each feature of ``z_a`` towards
    perfect correlation with the same feature of ``z_b``; the off-diagonal term (weight
    ``λ_off = off_diagonal_weight``) decorrelates different features. With ``z_a = z_b`` and
    ``λ_off = 0`` the loss is ``D·(eps/(var+eps))²`` ≈ 0 and its gradient ≈ 0.
    Gradients flow into both arguments; detach the target representation to freeze it.
    """
    c = cross_correlation(z_a, z_b, eps)
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    if off_diagonal_weight == 0:
        return on
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + float(off_diagonal_weight) * off
