"""The LightningModule of self-distilled pruning (SDP): CE plus a cross-correlation term to the dense copy."""

from __future__ import annotations

from functools import partial

import torch

from tgp.distill.cross_correlation import cross_correlation_loss
from tgp.distill.losses import DistillationLoss
from tgp.lit.classifier import ClassifierModule
from tgp.lit.compiled import compile_method
from tgp.measure.flops import TrainingFlops


def features_and_logits(net, x):
    """``(z, fc(z))``: the penultimate features and the logits, in one call (one compiled graph)."""
    z = net.forward_features(x)
    return z, net.fc(z)


def features(net, x):
    return net.forward_features(x)


class SelfDistilledPruningModule(ClassifierModule):
    """``L_task(fc(z_p), y) + λ · L_CC(z_p, z_d)`` (``L_task`` = CE, or MSE for a regression target);
    ``z_d`` from the frozen dense copy held as ``teacher``."""

    def __init__(self, net, criterion: DistillationLoss | None = None, *, dense, cc_weight: float,
                 off_diagonal_weight: float, **kw):
        super().__init__(net, criterion or DistillationLoss(kd_weight=0.0), teacher=dense, **kw)
        self.cc_weight, self.off_diagonal_weight = float(cc_weight), float(off_diagonal_weight)
        self._student_fn = self._dense_fn = None  # compiled (features, logits) / dense features while a compiled fit runs

    # The training step does not go through net.__call__ (it needs the features too): with compile=true
    # the student's (features, logits) and the dense copy's features get graphs of their own.
    def compile_nets(self, mode: str) -> None:
        super().compile_nets(mode)  # net.__call__: the validation steps
        arch = getattr(self.net, "arch", type(self.net).__name__)
        self._student_fn = compile_method(partial(features_and_logits, self.net), mode, f"the student {arch}")
        if self.cc_weight > 0:
            self._dense_fn = compile_method(partial(features, self.teacher), mode, f"the dense copy of {arch}")

    def uncompile_nets(self) -> None:
        super().uncompile_nets()
        self._student_fn = self._dense_fn = None

    def training_flops(self, example_input) -> TrainingFlops:
        """The student's forward + backward, plus the frozen dense copy's ``forward_features`` when the
        cross-correlation term is on (``cc_weight > 0``)."""
        dense = self.teacher if self.cc_weight > 0 else None
        return TrainingFlops(self.net, example_input, dense, "forward_features")

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self._inputs(x)
        z, logits = self._student_fn(x) if self._student_fn is not None else features_and_logits(self.net, x)
        task, parts = self.criterion(logits, y)  # CE (MSE for a regression target); parts: {"ce"} or {"mse"}
        loss = task
        if self.cc_weight > 0:
            with torch.no_grad():
                z_dense = self._dense_fn(x) if self._dense_fn is not None else self.teacher.forward_features(x)
            cc = cross_correlation_loss(z.float(), z_dense.float(), self.off_diagonal_weight)
            loss = task + self.cc_weight * cc
            self.log(f"{self.stage}/train/cc", cc.detach(), on_step=False, on_epoch=True, sync_dist=True)
        self.train_metrics.update(logits.detach(), y)
        self.log(f"{self.stage}/train/loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True)
        for k, v in parts.items():
            self.log(f"{self.stage}/train/{k}", v, on_step=False, on_epoch=True, sync_dist=True)
        return loss
