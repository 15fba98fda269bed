"""The same global batches on 1 or N processes: what makes a stage's result independent of its world size.

One process trains on the batches ``order[b·B:(b+1)·B]`` of an epoch's order (``B`` the global
batch, ``data.batch_size``; the order and each sample's augmentation seed come from
:class:`~tgp.data.base.EpochSampler`, a function of ``(seed, stage, epoch)`` only). Under DDP with
``W`` processes, rank ``r`` takes the ``r``-th contiguous share of each of these global batches
(:func:`rank_share`), so the ranks together see exactly the one-process batches; with BatchNorm
synchronized over the ranks (:mod:`tgp.training`) and DDP averaging the ranks' gradients, a DDP step
is the one-process step up to the order of floating-point reductions. Lightning's
``DistributedSampler`` (turned off: ``use_distributed_sampler=False``) would instead deal every
``W``-th sample of its own permutation to each rank — another sequence of batches.

Evaluation splits are sharded contiguously and without padding (:class:`RankShard`): every sample
counted once, so accuracies summed over the ranks (torchmetrics) equal the one-process ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import Sampler


def rank_share(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items split over ``world`` ranks
    (the first ``n % world`` ranks take one more)."""
    base, extra = divmod(int(n), int(world))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def running_ranks(trainer) -> tuple[int, int]:
    """``(rank, world)`` of this process while ``trainer`` runs distributed, else ``(0, 1)``: the process
    that launched ``ddp_spawn`` ranks, and any loader made outside a running fit or validation (a
    stage's test-set evaluation after the fit), see the whole split."""
    from lightning.pytorch.trainer.states import TrainerStatus

    if trainer is None or int(trainer.world_size) <= 1 or not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    if trainer.state.status != TrainerStatus.RUNNING:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


class GlobalBatchSampler(Sampler[list]):
    """Rank ``rank``'s batches: its share of each global batch of ``batch_size`` items of ``sampler``'s
    order (the last, partial one dropped with ``drop_last``). ``sampler`` (e.g. an
    :class:`~tgp.data.base.EpochSampler`) is exposed as ``.sampler``, where Lightning calls
    ``set_epoch`` before every epoch."""

    def __init__(self, sampler: Sized, batch_size: int, rank: int, world: int, drop_last: bool):
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)
        self.rank, self.world = int(rank), int(world)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list]:
        items = list(iter(self.sampler))
        for b in range(len(self)):
            batch = items[b * self.batch_size:(b + 1) * self.batch_size]
            start, stop = rank_share(len(batch), self.rank, self.world)
            yield batch[start:stop]


class RankShard(Sampler[int]):
    """Rank ``rank``'s contiguous share of ``range(n)``, unpadded (evaluation: each sample once)."""

    def __init__(self, n: int, rank: int, world: int):
        self.start, self.stop = rank_share(n, rank, world)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))
