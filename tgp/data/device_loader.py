"""A data path without worker processes or per-batch host→device copies, for small-image datasets.

The whole split lives on the training device as one ``uint8`` tensor (CIFAR's 50k training
images are 150 MB, 240 MB zero-padded); every batch is gathered, randomly cropped, flipped and
normalized there in a few batched tensor ops. On a GPU this replaces a pool of CPU workers
running PIL transforms per image, which cannot keep up with a ResNet-18 step in bf16.

The augmentation equals the torch path's ``RandomCrop(size, padding=p)`` (zero fill) +
``RandomHorizontalFlip()`` + ``Normalize`` per image, drawn from a device generator instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


class DeviceLoader:
    """Iterable of ``(x, y)`` batches built on ``device`` from ``images`` (``uint8 [N, H, W, C]``).

    * ``shuffle``: a new permutation every epoch, seeded by ``(seed, epoch)``; the same on
      every rank, so under DDP each rank takes its own share (``perm[rank::world]``, padded like
      ``DistributedSampler`` so all ranks run the same number of batches).
    * ``epoch_fn``: the epoch to seed with (e.g. the trainer's current epoch, so a resumed run
      draws the epochs it had not drawn yet); by default, the count of ``__iter__`` calls.
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
        seed: int = 0,
        channels_last: bool = False,
        epoch_fn: Callable[[], int] | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("DeviceLoader expects uint8 images shaped [N, H, W, C]")
        self.device = torch.device(device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.augment, self.padding, self.seed = augment, int(padding) if augment else 0, int(seed)
        self.channels_last, self.epoch_fn = channels_last, epoch_fn
        self._epoch = 0
        images = images.to(self.device)
        if self.padding:  # pad once, not per batch; zero fill as RandomCrop(padding=p) does
            p = self.padding
            images = F.pad(images.permute(0, 3, 1, 2), (p, p, p, p)).permute(0, 2, 3, 1).contiguous()
        self.images = images  # [N, H + 2p, W + 2p, C]
        self.size = (images.shape[1] - 2 * self.padding, images.shape[2] - 2 * self.padding)
        shape = (1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=self.device))).view(shape)
        self.shift = (-torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(shape)

    # -- sharding ---------------------------------------------------------------------------
    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _indices(self, epoch: int) -> Tensor:
        n = self.labels.shape[0]
        if self.shuffle:
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        rank, world = self._rank_world()
        if world > 1:
            total = -(-n // world) * world
            order = torch.cat([order, order[: total - n]])[rank::world]
        return order.to(self.device)

    def __len__(self) -> int:
        n = -(-self.labels.shape[0] // self._rank_world()[1])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # -- batches ----------------------------------------------------------------------------
    def _augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Random crop of each padded image back to ``size`` and a random horizontal flip."""
        b, (h, w) = x.shape[0], self.size
        off_y = torch.randint(0, 2 * self.padding + 1, (b, 1), device=self.device, generator=gen)
        off_x = torch.randint(0, 2 * self.padding + 1, (b, 1), device=self.device, generator=gen)
        rows = off_y + torch.arange(h, device=self.device)  # [B, H]
        cols = off_x + torch.arange(w, device=self.device)  # [B, W]
        flip = torch.rand(b, 1, device=self.device, generator=gen) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)  # a flipped crop reads its columns backwards
        batch = torch.arange(b, device=self.device)[:, None, None]
        return x[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch += 1
        order = self._indices(epoch)
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch + 1)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]
            x = self._augment(x, gen) if self.augment else x
            # uint8 NHWC → normalized float NCHW; as a view of NHWC memory it is channels_last already.
            x = x.permute(0, 3, 1, 2).float().mul_(self.scale).add_(self.shift)
            if not self.channels_last:
                x = x.contiguous()
            yield x, self.labels[idx]
