"""Tokenize a task file once into token-id arrays on disk, and read them back.

Why: tokenizing MNLI's 393k pairs takes about a minute on two cores; every stage of every run
would pay it again. So each file is tokenized once with the model's tokenizer (truncated to
``max_length``, special tokens added, no padding) into ``<name>-<key>.npz``: the ids of all rows
back to back (``int32``), the row offsets (``int64 [n + 1]``) and the labels (``int64`` class
indices, ``float32`` scores for regression), beside a JSON manifest ``<name>.json``.

The cache follows :mod:`tgp.data.cache_files`: the key is SHA-256 over the format version, the
``tokenizers`` library version, the task's layout and labels, the tokenizer's content fingerprint
(:func:`~tgp.data.text.tokenizer.tokenizer_fingerprint`), ``max_length`` and the file's path,
size and mtime — any change rebuilds it; the payload is written to a temp file and renamed, the
manifest after it; builders hold a file lock; a payload is trusted only through its manifest and
only when it loads with the counts the manifest gives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tgp.data import cache_files
from tgp.data.cache_files import CacheResult
from tgp.data.text.formats import Example
from tgp.data.text.tasks import TextTask
from tgp.errors import DataNotFoundError

log = logging.getLogger("tgp")

FORMAT = 1
TOKENIZE_CHUNK = 4096  # rows per tokenizer call: big enough for the Rust tokenizer's batch threads


@dataclass
class TokenizedFile:
    """A tokenized file: row ``i`` is ``ids[offsets[i]:offsets[i + 1]]`` with label ``labels[i]``."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, indices: np.ndarray) -> "TokenizedFile":
        """The rows ``indices``, in that order, as a compact file of their own."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, lengths = self.offsets[indices], self.lengths[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Positions of every kept token: each row's start repeated over its length plus 0..len-1.
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        ids = self.ids[np.repeat(starts, lengths) + within]
        return TokenizedFile(ids, offsets, self.labels[indices])

    @staticmethod
    def concatenate(parts: Sequence["TokenizedFile"]) -> "TokenizedFile":
        shifts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return TokenizedFile(np.concatenate([p.ids for p in parts]), offsets.astype(np.int64),
                             np.concatenate([p.labels for p in parts]))


def tokenize_examples(examples: Sequence[Example], task: TextTask, tokenizer, max_length: int, where: str,
                      path: str) -> TokenizedFile:
    """Token ids of ``examples`` (``tokenizer(text_a, text_b, truncation=True, max_length=max_length)``:
    special tokens added, the longer text truncated first) and their labels."""
    labels = np.empty(len(examples), dtype=np.float32 if task.regression else np.int64)
    for i, ex in enumerate(examples):
        try:
            labels[i] = task.label_id(ex.label)
        except ValueError:
            known = "a number" if task.regression else ", ".join(task.labels)
            raise DataNotFoundError(
                f"{where}: data row {i + 1} of {path} has the label {ex.label!r}, which is not {known}. The file is "
                "not the official one or was edited; restore it from the official distribution.") from None
    pieces: list[np.ndarray] = []
    lengths = np.empty(len(examples), dtype=np.int64)
    for start in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[start:start + TOKENIZE_CHUNK]
        text_b = [ex.text_b for ex in chunk] if task.pair else None
        encoded = tokenizer([ex.text_a for ex in chunk], text_b, truncation=True, max_length=max_length,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for k, row in enumerate(encoded):
            lengths[start + k] = len(row)
            pieces.append(np.asarray(row, dtype=np.int32))
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return TokenizedFile(ids, offsets, labels)


def file_key(path: str, base: str, task: TextTask, fingerprint: str, max_length: int) -> str:
    """The key a cache of ``path`` tokenized this way must carry to be trusted."""
    import tokenizers

    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "tokenizers": tokenizers.__version__, "task": task.key,
                         "layouts": [repr(task.train_layout), repr(task.test_layout)], "labels": task.labels,
                         "tokenizer": fingerprint, "max_length": int(max_length)}).encode())
    for line in cache_files.stat_lines([path], base):
        h.update(line)
    return h.hexdigest()


def _load(path: str, count: int | None = None) -> TokenizedFile | None:
    """The arrays of a payload, or None when it is absent, truncated or inconsistent."""
    try:
        with np.load(path) as z:
            ids, offsets, labels = z["ids"], z["offsets"], z["labels"]
    except Exception:  # OSError, ValueError, zipfile.BadZipFile, KeyError: not a complete payload
        return None
    n = len(labels)
    if (count is not None and n != count) or offsets.shape != (n + 1,) or int(offsets[-1]) != len(ids):
        return None
    return TokenizedFile(ids, offsets, labels)


def _valid(folder: str, name: str, key: str) -> str | None:
    manifest = cache_files.read_manifest(folder, name, FORMAT, key)
    path = cache_files.payload_path(folder, manifest) if manifest is not None else None
    if path is None or _load(path, manifest.get("rows")) is None:
        return None
    return path


def _build(folder: str, name: str, key: str, tokenized: TokenizedFile, source: str) -> str:
    with cache_files.writing_payload(folder, name, key, ".npz") as (f, final):
        np.savez(f, ids=tokenized.ids, offsets=tokenized.offsets, labels=tokenized.labels)
    cache_files.write_manifest(folder, name, {
        "format": FORMAT, "key": key, "file": os.path.basename(final), "rows": len(tokenized),
        "tokens": int(len(tokenized.ids)), "source": source, "created": time.time()})
    cache_files.remove_other_payloads(folder, name, final, ".npz")
    return final


def cached_tokenized_file(path: str, base: str, examples_fn, task: TextTask, tokenizer, fingerprint: str,
                          max_length: int, folders: Sequence[str], *, name: str, dataset: str,
                          setting: str = "data.cache_dir", setting_value: object = None
                          ) -> tuple[TokenizedFile, CacheResult]:
    """The tokenized rows of ``path`` from a valid cache in one of ``folders``, built (reading the
    file with ``examples_fn()`` and tokenizing it) when there is none."""
    key = file_key(path, base, task, fingerprint, max_length)
    built: dict[str, TokenizedFile] = {}

    def build(folder: str) -> str:
        t0 = time.perf_counter()
        tokenized = tokenize_examples(examples_fn(), task, tokenizer, max_length, dataset, path)
        if file_key(path, base, task, fingerprint, max_length) != key:
            raise DataNotFoundError(f"{dataset}: {path} changed while it was tokenized; nothing was cached. Run again.")
        out = _build(folder, name, key, tokenized, path)
        log.info("%s: tokenized %s once into %s (%d rows, %d tokens, %.1f s)", dataset, os.path.basename(path),
                 folder, len(tokenized), len(tokenized.ids), time.perf_counter() - t0)
        built["file"] = tokenized
        return out

    result = cache_files.ensure(
        folders, name, valid=lambda folder: _valid(folder, name, key), build=build, count=0, dataset=dataset,
        what="tokenized", setting=setting, setting_value=setting_value,
        fix=f"set {setting} to a writable folder, or data.cache=false to tokenize in memory in every run.")
    tokenized = built.get("file") or _load(result.path)
    if tokenized is None:  # deleted between the check and the read: a race with a user's rm
        raise DataNotFoundError(f"{dataset}: the token cache {result.path} vanished while it was read; run again.")
    result.count = len(tokenized)
    return tokenized, result
