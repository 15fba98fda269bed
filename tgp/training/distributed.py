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
    """Mixin: in training under DDP, normalize with the mean and variance of the global batch, computed
    as one process's BatchNorm computes them (:mod:`tgp.sync_bn`), as ``torch.nn.SyncBatchNorm`` does on GPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from tgp.sync_bn import global_batch_norm

        return global_batch_norm(self, x)


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
