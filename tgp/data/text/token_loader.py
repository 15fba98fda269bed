"""Token ids resident on the training device: batches gathered and padded there, no workers.

The split's rows live on the device back to back (``int32``) with their offsets; a batch is one
gather: ``x[b, t] = ids[offset[i_b] + t]`` where ``t < len(i_b)``, else the pad id, for ``t`` up to
the batch's longest row. The batch order and the batch lengths are computed on the host (a CPU
copy of the row lengths), so no step waits on the device to learn a shape.

Single process, the training batches equal the torch path's (same :func:`~tgp.data.base.epoch_generator`
order, same per-batch padding); under DDP each rank takes ``perm[rank::world]``, padded like
``DistributedSampler`` so every rank runs the same number of batches (as
:class:`~tgp.data.device_loader.DeviceLoader` does for images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from tgp.data.base import epoch_generator
from tgp.data.text.token_cache import TokenizedFile


class TokenDeviceLoader:
    """Iterable of ``(x long [B, L], y)`` batches built on ``device`` from a tokenized split.

    * ``shuffle``: a new order every epoch, seeded by ``(seed, epoch)``; ``epoch_fn`` gives the
      epoch (e.g. the trainer's, so a resumed run draws the epochs it had not drawn), else the count
      of ``__iter__`` calls.
    * ``batch_sampler``: the index lists of the batches instead (a self-distillation regime's
      sampler; one process only). ``with_index``: batches are ``(x, y, i)``.
    """

    def __init__(self, split: TokenizedFile, *, batch_size: int, pad_id: int, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0, regression: bool = False,
                 epoch_fn: Callable[[], int] | None = None, batch_sampler: Iterable[Sequence[int]] | None = None,
                 with_index: bool = False):
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.drop_last, self.seed = int(batch_size), shuffle, drop_last, int(seed)
        self.pad_id, self.epoch_fn = int(pad_id), epoch_fn
        self.batch_sampler, self.with_index = batch_sampler, bool(with_index)
        self._epoch = 0
        self.n = len(split)
        self.lengths_host = torch.from_numpy(np.ascontiguousarray(split.lengths, dtype=np.int64))
        self.ids = torch.from_numpy(np.ascontiguousarray(split.ids, dtype=np.int32)).to(self.device)
        self.starts = torch.from_numpy(np.ascontiguousarray(split.offsets[:-1], dtype=np.int64)).to(self.device)
        self.lengths = self.lengths_host.to(self.device)
        dtype = torch.float32 if regression else torch.int64
        self.labels = torch.as_tensor(np.asarray(split.labels)).to(self.device, dtype)
        self._positions = torch.arange(int(self.lengths_host.max()) if self.n else 0, device=self.device)

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _order(self, epoch: int) -> Tensor:
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, epoch)) if self.shuffle else torch.arange(self.n)
        rank, world = self._rank_world()
        if world > 1:
            total = -(-self.n // world) * world
            order = torch.cat([order, order[: total - self.n]])[rank::world]
        return order

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = -(-self.n // self._rank_world()[1])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self, epoch: int) -> Iterator[Tensor]:
        if self.batch_sampler is not None:
            if self._rank_world()[1] > 1:
                raise ValueError("TokenDeviceLoader: a batch_sampler is served in one process only")
            for batch in self.batch_sampler:
                yield torch.as_tensor(batch, dtype=torch.long)
            return
        order = self._order(epoch)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]

    def batch(self, idx_host: Tensor) -> tuple[Tensor, ...]:
        """The batch of rows ``idx_host`` (a CPU index tensor): padded ids and labels on the device."""
        width = int(self.lengths_host[idx_host].max())  # host data: no device sync
        idx = idx_host.to(self.device, non_blocking=True)
        positions = self._positions[:width]
        lengths = self.lengths[idx].unsqueeze(1)
        inside = positions.unsqueeze(0) < lengths
        # Positions past a row's end point at its last token (always in range); masked to pad below.
        gather = self.starts[idx].unsqueeze(1) + torch.minimum(positions.unsqueeze(0), lengths - 1)
        x = torch.where(inside, self.ids[gather].long(), self.pad_id)
        return (x, self.labels[idx], idx) if self.with_index else (x, self.labels[idx])

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch += 1
        for idx_host in self._batches(epoch):
            yield self.batch(idx_host)
