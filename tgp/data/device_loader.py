"""A data path without worker processes or per-batch host→device copies, for small-image datasets.

The whole split lives on the training device as one ``uint8`` tensor (CIFAR's 50k training
images are 150 MB; zero-padded and with their mirror images for the flips, 480 MB; Tiny
ImageNet's 90k, 2.8 GB); every batch is gathered, randomly cropped, flipped and normalized there
in a few batched tensor ops. On a GPU this replaces a pool of CPU workers running PIL transforms
per image, which cannot keep up with a ResNet-18 step in bf16; on a CPU it delivers tens of
thousands of images per second per core (``python -m tgp.bench.data``).

The augmentation equals the torch path's ``RandomCrop(size, padding=p)`` (zero fill) +
``RandomHorizontalFlip()`` (unless ``flip=False``, e.g. for digits, whose mirror images are not
digits) + ``Normalize`` per image, drawn from a device generator instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from tgp.data.global_batches import rank_share


class DeviceLoader:
    """Iterable of ``(x, y)`` batches built on ``device`` from ``images`` (``uint8 [N, H, W, C]``).

    * ``shuffle``: a new permutation every epoch, seeded by ``(seed, epoch)``; the same on
      every rank. Under DDP (``ranks=(rank, world)``) the one-process batches of ``batch_size · world``
      samples are the global batches and each rank takes its contiguous share of each, crops and
      flips drawn for the whole global batch (:mod:`tgp.data.global_batches`): the ranks together see
      exactly the one-process batches. Unshuffled (evaluation) splits are sharded contiguously,
      unpadded: every sample once.
    * ``ranks``: ``(rank, world)`` of this process (default: those of the initialized process group).
    * ``epoch_fn``: the epoch to seed with (e.g. the trainer's current epoch, so a resumed run
      draws the epochs it had not drawn yet); by default, the count of ``__iter__`` calls.
    * ``batch_sampler``: the index lists of the batches instead (a self-distillation regime's
      sampler, e.g. DLB's overlapping batches; one process only), in place of ``shuffle``.
    * ``with_index``: batches are ``(x, y, i)``, ``i`` the samples' positions in the split.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        channels_last: bool = False,
        epoch_fn: Callable[[], int] | None = None,
        batch_sampler: Iterable[Sequence[int]] | None = None,
        with_index: bool = False,
        ranks: tuple[int, int] | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("DeviceLoader expects uint8 images shaped [N, H, W, C]")
        self.batch_sampler, self.with_index, self.ranks = batch_sampler, bool(with_index), ranks
        self.device = torch.device(device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.augment, self.padding, self.seed = augment, int(padding) if augment else 0, int(seed)
        self.flip = bool(augment and flip)
        self.channels_last, self.epoch_fn = channels_last, epoch_fn
        self._format = torch.channels_last if channels_last else torch.contiguous_format
        self._epoch = 0
        images = images.to(self.device)
        self.size = (images.shape[1], images.shape[2])
        if self.padding:  # pad once, not per batch; zero fill as RandomCrop(padding=p) does
            p = self.padding
            images = F.pad(images.permute(0, 3, 1, 2), (p, p, p, p)).permute(0, 2, 3, 1).contiguous()
        if self.flip:
            # Each padded image and its mirror image, [2N, H + 2p, W + 2p, C]: a flipped crop at column
            # offset x is the mirror image's crop at offset 2p - x, so one indexing op per batch crops and
            # flips (twice the memory of the padded split; per-element gathers were 10x slower on a CPU).
            images = torch.cat([images, images.flip(2)])
        self.images = images
        shape = (1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=self.device))).view(shape)
        self.shift = (-torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(shape)

    # -- sharding ---------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        if self.ranks is not None:
            return int(self.ranks[0]), int(self.ranks[1])
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _indices(self, epoch: int) -> Tensor:
        """The epoch's order of the split (training: a seeded permutation; evaluation: this rank's
        contiguous shard)."""
        n = self.labels.shape[0]
        if self.shuffle:
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + epoch)
            return torch.randperm(n, generator=gen).to(self.device)
        start, stop = rank_share(n, *self._rank_world())
        return torch.arange(start, stop).to(self.device)

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n, (rank, world) = self.labels.shape[0], self._rank_world()
        if self.shuffle:  # global batches of batch_size · world
            n, size = n, self.batch_size * world
        else:
            start, stop = rank_share(n, rank, world)
            n, size = stop - start, self.batch_size
        return n // size if self.drop_last else -(-n // size)

    # -- batches ----------------------------------------------------------------------------
    def _augment(self, batch: Tensor, gen: torch.Generator, start: int = 0, stop: int | None = None) -> Tensor:
        """Images ``batch[start:stop]``, each randomly cropped back to ``size`` from its padded copy and
        (with ``flip``) randomly flipped horizontally: ``uint8 [B, C, H, W]`` (a view order over NHWC
        memory). The draws are made for all of ``batch`` (a global batch under DDP), the images gathered
        for the slice only."""
        b, (h, w), p = batch.shape[0], self.size, self.padding
        off_y = torch.randint(0, 2 * p + 1, (b,), device=self.device, generator=gen)[start:stop]
        off_x = torch.randint(0, 2 * p + 1, (b,), device=self.device, generator=gen)[start:stop]
        idx = source = batch[start:stop]
        if self.flip:
            flip = (torch.rand(b, device=self.device, generator=gen) < 0.5)[start:stop]
            source = torch.where(flip, idx + self.labels.shape[0], idx)  # the mirror image of a flipped sample
            off_x = torch.where(flip, 2 * p - off_x, off_x)
        windows = self.images.unfold(1, h, 1).unfold(2, w, 1)  # a view [2N, 2p+1, 2p+1, C, H, W]: every crop
        return windows[source, off_y, off_x]

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, int, int]]:
        """``(batch, start, stop)``: a batch of indices (under DDP, a training batch is the global one)
        and this rank's share of it, ``batch[start:stop]``."""
        if self.batch_sampler is not None:
            if self._rank_world()[1] > 1:
                raise ValueError("DeviceLoader: a batch_sampler is served in one process only")
            for batch in self.batch_sampler:  # drawn on the host (its RNG), a few hundred indices per batch
                idx = torch.as_tensor(batch, dtype=torch.long).to(self.device, non_blocking=True)
                yield idx, 0, len(batch)
            return
        order = self._indices(epoch)
        rank, world = self._rank_world()
        size = self.batch_size * world if self.shuffle else self.batch_size
        stop = len(order) - len(order) % size if self.drop_last else len(order)
        for first in range(0, stop, size):
            batch = order[first : first + size]
            start, end = rank_share(len(batch), rank, world) if self.shuffle else (0, len(batch))
            yield batch, start, end

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch += 1
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch + 1)
        for batch, start, stop in self._batches(epoch):
            idx = batch[start:stop]
            if self.augment:  # drawn for the whole (global) batch, so every rank draws what one process draws
                x = self._augment(batch, gen, start, stop)
            else:
                x = self.images.index_select(0, idx).permute(0, 3, 1, 2)
            # uint8 → float in the layout the model takes (NCHW memory is the NHWC view made contiguous
            # in the same copy), then normalized in place where the per-channel constants vectorize.
            x = torch.empty(x.shape, device=self.device, memory_format=self._format).copy_(x)
            x = x.mul_(self.scale).add_(self.shift)
            yield (x, self.labels[idx], idx) if self.with_index else (x, self.labels[idx])
