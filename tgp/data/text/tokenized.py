"""Datasets over tokenized rows and the collate function that pads each batch to its own longest row."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tgp.data.text.token_cache import TokenizedFile


class TokenizedRows(Dataset):
    """Items ``(token ids int64 [len_i], label)`` of the rows ``indices`` of a tokenized file.

    Indexed with ``(i, seed)`` too (the base class's :class:`~tgp.data.base.EpochSampler`); text has
    no augmentation, so the seed is ignored. ``targets`` are the labels (for class-subset views).
    """

    def __init__(self, source: TokenizedFile, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, tuple):
            i = i[0]
        row = int(self.indices[i])
        start, stop = self.source.offsets[row], self.source.offsets[row + 1]
        return torch.from_numpy(self.source.ids[start:stop].astype(np.int64)), self.targets[i].item()

    def compact(self) -> TokenizedFile:
        """These rows as one compact tokenized file (what the device loader uploads)."""
        return self.source.rows(self.indices)


class PadCollate:
    """``[(ids, label)] -> (x long [B, L], y)``: rows right-padded with ``pad_id`` to the longest row
    of the batch (not to a global maximum); ``y`` is ``float32`` for regression, else ``int64``."""

    def __init__(self, pad_id: int, regression: bool = False):
        self.pad_id, self.regression = int(pad_id), bool(regression)

    def __call__(self, items):
        rows = [ids for ids, _ in items]
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.pad_id)
        y = torch.tensor([label for _, label in items], dtype=torch.float32 if self.regression else torch.int64)
        return x, y
