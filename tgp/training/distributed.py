"""DDP helpers: a rank's process group destroyed at exit, and BatchNorm synchronized over the ranks
on any device (``torch.nn.SyncBatchNorm`` is GPU-only; on CPUs, ``ddp_sim``, an all-reduce
BatchNorm does the same)."""

from __future__ import annotations

import atexit

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn


class ProcessGroupAtExit(Callback):
    """Destroys a DDP rank's process group when the rank's interpreter exits, before it finalizes.

    Lightning does this for NCCL only. A ``ddp_spawn`` rank that exits with its gloo group
    alive lets gloo's worker threads drop their last work (and the tensors it holds) while the
    interpreter is being torn down; a thread that then needs the GIL is unwound by
    ``pthread_exit`` and the rank dies with "terminate called without an active exception"
    (SIGABRT) *after* its stage finished, failing the job — rarely (one smoke pipeline in ~60 on a
    loaded 2-core machine), which makes it the worst kind of failure for a long sweep.
    Destroying the group in an ``atexit`` handler joins those threads while Python is still whole.
    Registered once per process, in the rank (``setup`` runs after the group is initialized),
    and a no-op where there is no group (one process, or already destroyed).
    """

    _registered = False  # per process: a spawned rank imports this module afresh

    def setup(self, trainer, pl_module, stage: str) -> None:
        if dist.is_available() and dist.is_initialized() and not ProcessGroupAtExit._registered:
            atexit.register(destroy_process_group)
            ProcessGroupAtExit._registered = True


def destroy_process_group() -> None:
    """``torch.distributed.destroy_process_group()`` if there is one (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- synchronized BatchNorm on any device -------------------------------------------------------
class _AllReduceBatchNorm:
    """Mixin: in training under DDP, normalize with the mean and variance of the global batch
    (summed over the ranks with a differentiable all-reduce, as ``torch.nn.SyncBatchNorm`` does on GPUs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c, dims = x.shape[1], [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class AllReduceBatchNorm1d(_AllReduceBatchNorm, nn.BatchNorm1d):
    pass


class AllReduceBatchNorm2d(_AllReduceBatchNorm, nn.BatchNorm2d):
    pass


class AllReduceBatchNorm3d(_AllReduceBatchNorm, nn.BatchNorm3d):
    pass


_SYNCED = {nn.BatchNorm1d: AllReduceBatchNorm1d, nn.BatchNorm2d: AllReduceBatchNorm2d, nn.BatchNorm3d: AllReduceBatchNorm3d}


class AllReduceBatchNormSync(LayerSync):
    """Lightning layer-sync plugin: BatchNorm layers synchronized over the DDP ranks on any device
    (the class of each layer is swapped in place, so parameters, buffers and state_dict keys stay)."""

    def apply(self, model: nn.Module) -> nn.Module:
        for m in model.modules():
            if type(m) in _SYNCED:
                m.__class__ = _SYNCED[type(m)]
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        back = {v: k for k, v in _SYNCED.items()}
        for m in model.modules():
            if type(m) in back:
                m.__class__ = back[type(m)]
        return model
