"""The LightningModule of self-distilled pruning (SDP): CE plus a cross-correlation term to the dense copy."""

from __future__ import annotations

import torch

from tgp.distill.cross_correlation import cross_correlation_loss
from tgp.distill.losses import DistillationLoss
from tgp.lit.classifier import ClassifierModule


class SelfDistilledPruningModule(ClassifierModule):
    """``CE(fc(z_p), y) + λ · L_CC(z_p, z_d)``; ``z_d`` from the frozen dense copy held as ``teacher``."""

    def __init__(self, net, criterion: DistillationLoss | None = None, *, dense, cc_weight: float,
                 off_diagonal_weight: float, **kw):
        super().__init__(net, criterion or DistillationLoss(kd_weight=0.0), teacher=dense, **kw)
        self.cc_weight, self.off_diagonal_weight = float(cc_weight), float(off_diagonal_weight)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self._inputs(x)
        z = self.net.forward_features(x)
        logits = self.net.fc(z)
        ce, _ = self.criterion(logits, y)
        loss = ce
        if self.cc_weight > 0:
            with torch.no_grad():
                z_dense = self.teacher.forward_features(x)
            cc = cross_correlation_loss(z.float(), z_dense.float(), self.off_diagonal_weight)
            loss = ce + self.cc_weight * cc
            self.log(f"{self.stage}/train/cc", cc.detach(), on_step=False, on_epoch=True, sync_dist=True)
        self.train_acc(logits.detach(), y)
        self.log(f"{self.stage}/train/loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{self.stage}/train/ce", ce.detach(), on_step=False, on_epoch=True, sync_dist=True)
        self.log(f"{self.stage}/train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss
