"""Batch samplers of the self-distillation regimes: DLB's overlapping batches, CS-KD's class pairs.

Both draw from the global torch RNG, which :mod:`tgp.training` reseeds at every epoch start, so
a resumed stage sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler


class DLBBatchSampler(Sampler[list[int]]):
    """Overlapping batches for DLB: each epoch, a random permutation cut into chunks ``c_0, c_1, …``
    of ``h = batch_size // 2``; batch ``t = c_t ∪ c_{t+1}``. So the second half of batch ``t`` is
    the first half of batch ``t+1`` (samples are loaded again, i.e. re-augmented). A remainder
    shorter than ``h`` is dropped (a different one each epoch). Global torch RNG (seeded runs)."""

    def __init__(self, num_samples: int, batch_size: int):
        self.n, self.h = int(num_samples), max(int(batch_size) // 2, 1)
        if self.n < 2 * self.h:
            raise ValueError(f"DLB needs at least {2 * self.h} training samples, got {self.n}")

    def __len__(self) -> int:
        return self.n // self.h - 1

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n).tolist()
        chunks = [perm[k * self.h:(k + 1) * self.h] for k in range(self.n // self.h)]
        for a, b in zip(chunks[:-1], chunks[1:]):
            yield a + b


class ClassPairBatchSampler(Sampler[list[int]]):
    """CS-KD batches: ``h = batch_size // 2`` shuffled samples, then for each one a random *other*
    sample of its class (itself only when its class has a single sample); batch = ``anchors + partners``."""

    def __init__(self, labels: Tensor, batch_size: int):
        self.labels = torch.as_tensor(labels).long()
        self.h = max(int(batch_size) // 2, 1)
        self.by_class = {int(c): torch.nonzero(self.labels == c).flatten() for c in self.labels.unique()}
        self.drop_last = len(self.labels) > self.h

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.h if self.drop_last else -(-n // self.h)

    def partner(self, i: int) -> int:
        pool = self.by_class[int(self.labels[i])]
        if len(pool) == 1:
            return i
        j = int(pool[torch.randint(len(pool) - 1, ()).item()])
        return j if j != i else int(pool[-1])  # uniform over the class minus i

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.labels)).tolist()
        for k in range(len(self)):
            anchors = perm[k * self.h:(k + 1) * self.h]
            yield anchors + [self.partner(i) for i in anchors]
