"""Text classification data: GLUE and XGLUE tasks read from their official files, tokenized once
with the model's own tokenizer into a cache, served as ``(token ids [B, L], labels)`` batches.

Modules (each one job): :mod:`.formats` (file layouts, reading and writing rows), :mod:`.tasks`
(which files, labels and metrics each task has), :mod:`.tokenizer` (loading a tokenizer, its
fingerprint), :mod:`.token_cache` (tokenized files cached on disk), :mod:`.tokenized` (datasets over
token ids, per-batch padding), :mod:`.token_loader` (the split resident on the training device),
:mod:`.datamodule` (the LightningDataModule), :mod:`.download` (fetching through Hugging Face
``datasets``), :mod:`.generated` (a generated task and a tokenizer trained on it) and
:mod:`.fake_files` (tiny files in each real task's format, for tests).
"""
