"""What a fit costs: the examples through its training step and their FLOPs, all ranks together,
and the device it ran on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from tgp.measure.flops import mask_densities


def stage_training_flops(module, dm):
    """The per-example :class:`~tgp.measure.flops.TrainingFlops` of ``module``'s training step on
    ``dm``'s examples, as the module says (:meth:`~tgp.lit.ClassifierModule.training_flops`: what runs
    per example); ``None`` when the datamodule gives no example input (the cost is then not recorded)."""
    example = getattr(dm, "example_input", None)
    return module.training_flops(example) if example is not None else None


def device_name(trainer) -> str:
    """``"cpu"`` or the CUDA device's name, prefixed with the process count under DDP (``"2x cpu"``)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    name = "cpu"
    if isinstance(trainer.accelerator, CUDAAccelerator) and torch.cuda.is_available():
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    elif type(trainer.accelerator).__name__ != "CPUAccelerator":
        name = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    return f"{trainer.world_size}x {name}" if trainer.world_size > 1 else name


class TrainingCost(Callback):
    """Examples through the training step and their FLOPs, summed over batches and all DDP ranks.

    Each batch's size goes into a per-epoch count; at the epoch's end the counts are all-reduced
    and added to the totals, which are checkpointed with the epoch (``state_dict``), so a resumed
    stage ends with the totals of an uninterrupted one (a redone partial epoch costs seconds but
    is not counted twice). FLOPs per batch: :meth:`TrainingFlops.batch` with the densities of the
    module's mask at the epoch's start (SDP changes it at every epoch start; a fixed mask gives
    the same number every epoch).
    """

    def __init__(self, flops=None):
        self.flops = flops  # tgp.measure.flops.TrainingFlops or None
        self.examples = self.flops_dense = self.flops_nonzero = self.epochs = 0
        self._epoch = [0, 0, 0]
        self._densities: dict[str, float] = {}
        self._per_batch: dict[int, tuple[int, int]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch = [0, 0, 0]
        self._densities = mask_densities(getattr(pl_module, "mask", None))
        self._per_batch: dict[int, tuple[int, int]] = {}  # batch size -> FLOPs, fixed within an epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        n = int(len(x))  # a shape, no device sync
        if n not in self._per_batch:  # no per-step loop over layers: once per batch size and epoch
            self._per_batch[n] = self.flops.batch(n, self._densities) if self.flops is not None else (0, 0)
        dense, nonzero = self._per_batch[n]
        self._epoch[0] += n
        self._epoch[1] += dense
        self._epoch[2] += nonzero

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = torch.tensor(self._epoch, dtype=torch.int64, device=pl_module.device)
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        examples, dense, nonzero = (int(v) for v in counts.cpu().tolist())
        self.examples += examples
        self.flops_dense += dense
        self.flops_nonzero += nonzero
        self.epochs += 1
        self._epoch = [0, 0, 0]

    def state_dict(self) -> dict:
        return {"examples": self.examples, "flops_dense": self.flops_dense, "flops": self.flops_nonzero,
                "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.examples, self.flops_dense = int(state["examples"]), int(state["flops_dense"])
        self.flops_nonzero, self.epochs = int(state["flops"]), int(state["epochs"])

    def result(self, ckpt: Path | None = None, epochs: int = 0) -> dict:
        """The stage's cost fields. Read from ``ckpt`` (this callback's state in ``last.ckpt``) when it
        has them: the ranks of ``ddp_spawn`` counted in other processes; else this process's count
        (a fit without checkpoints, e.g. a ``max_steps`` warm-up, can attach this callback and merge
        ``result()``). ``None`` when fewer than ``epochs`` epochs were counted (a stage resumed from
        a checkpoint written before the count existed)."""
        state = self.state_dict()
        if ckpt is not None and Path(ckpt).exists():
            with contextlib.suppress(Exception):
                saved = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("callbacks", {})
                state = saved.get(self.state_key, state)
        counted = int(state.get("epochs", 0)) >= int(epochs)
        flops = self.flops is not None and counted
        return {
            "train_examples": int(state["examples"]) if counted else None,
            "train_flops_dense": int(state["flops_dense"]) if flops else None,
            "train_flops": int(state["flops"]) if flops else None,
            "train_flops_mask": "at each epoch start",
        }
