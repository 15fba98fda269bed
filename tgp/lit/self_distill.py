"""The LightningModule of EPSD's self-distillation regimes (PS-KD, DLB, CS-KD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tgp.distill.losses import DistillationLoss
from tgp.distill.self_distill import check_regime, cskd_loss, dlb_loss, pskd_alpha, pskd_targets, soft_cross_entropy
from tgp.lit.classifier import ClassifierModule
from tgp.measure.flops import TrainingFlops


class SelfDistillModule(ClassifierModule):
    """:class:`ClassifierModule` trained with a self-distillation regime (no teacher).

    Batches are ``(x, y, i)`` (``i`` = position in the train set) from :class:`SelfDistillData`.
    ``pskd``: soft targets from a per-sample buffer of last epoch's predictions (read before
    this epoch overwrites it; a persistent buffer, so it survives a resume). ``dlb``: the
    second half of each batch's detached ``softmax(z/T)`` is kept for the next batch, whose
    first half holds the same samples. ``cskd``: batches are ``anchors + same-class partners``.
    """

    def __init__(self, net, criterion: DistillationLoss | None = None, *, regime: str, num_train: int, pskd_alpha: float = 0.8, temperature: float = 3.0,
                 dlb_weight: float = 1.0, cskd_weight: float = 1.0, **kw):
        super().__init__(net, criterion or DistillationLoss(kd_weight=0.0), **kw)  # CE for the metrics
        self.regime = check_regime(regime)
        self.alpha_T, self.temperature = float(pskd_alpha), float(temperature)
        self.dlb_weight, self.cskd_weight = float(dlb_weight), float(cskd_weight)
        self.n_classes = int(kw.get("num_classes") or net.fc.out_features)
        if self.regime == "pskd":
            self.register_buffer("pskd_prev", torch.zeros(int(num_train), self.n_classes))
            self.register_buffer("pskd_seen", torch.zeros(int(num_train), dtype=torch.bool))
        self._dlb_prev: torch.Tensor | None = None  # last batch's detached softmax(z/T) on its second half

    def training_flops(self, example_input) -> TrainingFlops:
        """The student's forward + backward per example, no teacher; under CS-KD the partner half of
        every batch goes forward only, without gradients (:meth:`TrainingFlops.batch`)."""
        return TrainingFlops(self.net, example_input, partners=self.regime == "cskd")

    def on_train_epoch_start(self) -> None:
        self._dlb_prev = None  # the first batch of an epoch shares nothing

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.regime == "pskd":
            self.log(f"{self.stage}/train/a_t", pskd_alpha(self.current_epoch, self.epochs, self.alpha_T), on_epoch=True)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        x = self._inputs(x)
        if self.regime == "pskd":
            logits = self.net(x)
            a_t = pskd_alpha(self.current_epoch, self.epochs, self.alpha_T)
            q = pskd_targets(y, self.pskd_prev[idx], a_t, self.n_classes, self.pskd_seen[idx])
            loss = soft_cross_entropy(logits, q)
            parts = {}  # a_t is a Python float fixed per epoch: logged at the epoch's end, not copied to the device per step
            with torch.no_grad():
                self.pskd_prev[idx] = F.softmax(logits.detach().float(), dim=1)
                self.pskd_seen[idx] = True
        elif self.regime == "dlb":
            logits = self.net(x)
            h = len(x) // 2
            prev = self._dlb_prev if self._dlb_prev is not None and len(self._dlb_prev) == h else None
            loss, parts = dlb_loss(logits, y, prev, temperature=self.temperature, weight=self.dlb_weight)
            self._dlb_prev = F.softmax(logits[h:].detach().float() / self.temperature, dim=1)
        else:  # cskd: anchors, then their same-class partners
            h = len(x) // 2
            logits = self.net(x[:h])
            with torch.no_grad():
                pair_logits = self.net(x[h:])
            y = y[:h]
            loss, parts = cskd_loss(logits, y, pair_logits, temperature=self.temperature, weight=self.cskd_weight)
        self.train_metrics.update(logits.detach(), y)
        self.log(f"{self.stage}/train/loss", loss.detach(), on_step=False, on_epoch=True)
        for k, v in parts.items():
            self.log(f"{self.stage}/train/{k}", v, on_step=False, on_epoch=True)
        return loss
