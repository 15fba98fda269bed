"""Self-distilled pruning (SDP; O'Neill, Dutta, Assem, arXiv 2109.15014; METHOD.md §3).

Idea (paper): while a network is pruned, keep the representation of its pruned version close to
that of its unpruned version, with no separate teacher. Definition (ours, the paper's formula is
not available to us):

* ``dense`` stage: the student trained from its seeded initialization with CE
  (``sdp.dense_epochs`` epochs at ``sdp.dense_lr``).
* ``retrain`` stage: fine-tuning for ``sdp.epochs`` epochs at ``sdp.lr`` with
  ``L = CE + λ · L_CC(z_pruned, z_dense)`` (λ = ``sdp.cc_weight``), where ``z`` are penultimate
  features (``net.forward_features``) of the masked network and of a frozen copy of the dense
  weights (eval mode, no gradients), and ``L_CC`` is
  :func:`tgp.distill.cross_correlation.cross_correlation_loss` (``λ_off = sdp.off_diagonal_weight``).
  Meanwhile the network is pruned gradually by global magnitude on the cubic schedule of Zhu &
  Gupta (2017): at the start of epoch ``e`` (0-based) the mask is recomputed for sparsity
  ``s_e = s · (1 − (1 − min(e + 1, P) / P)³)``, ``P = sdp.prune_epochs`` (null = ⌈epochs/2⌉),
  so the target ``s`` = ``pruning.sparsity`` holds from epoch ``P − 1`` on, then stays fixed.
  Masks are nested (a pruned weight stays pruned) and the final one removes exactly
  ``round(s·N)`` prunable weights (global threshold with pruned weights at −∞).
* ``prune`` stage: the final mask (``mask.pt``, ``sparsity_report.json``) copied from the
  ``retrain`` stage, the run-directory contract's ``<run_dir>/prune/mask.pt``.

Between mask updates pruned weights are held at zero by the :class:`~tgp.pruning.MaskEnforcer`
that every fit carries (gradients masked before each optimizer step, weights after it), which
this module's callback refreshes whenever it changes the mask.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from tgp.distill.cross_correlation import cross_correlation_loss
from tgp.errors import ConfigError
from tgp.io import atomic_save_json, atomic_torch_save
from tgp.methods.common import build_net, ce_loss, channels_last, load_stage_net, make_module
from tgp.methods.iterative import budget, magnitude_mask, mask_counts
from tgp.module import ClassifierModule
from tgp.pruning.enforcer import MaskEnforcer
from tgp.pruning.mask import apply_mask, load_mask, prunable_parameters, save_mask, sparsity_report
from tgp.pruning.threshold import check_sparsity
from tgp.stages import StageRunner

log = logging.getLogger("tgp")


def cubic_sparsity(step: int, ramp: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: ``s_f + (s_i − s_f)(1 − min(step, ramp)/ramp)³``."""
    frac = min(max(step, 0), ramp) / max(ramp, 1)
    return final + (initial - final) * (1.0 - frac) ** 3


class SelfDistilledPruningModule(ClassifierModule):
    """``CE(fc(z_p), y) + λ · L_CC(z_p, z_d)``; ``z_d`` from the frozen dense copy held as ``teacher``."""

    def __init__(self, net, dense, *, cc_weight: float, off_diagonal_weight: float, **kw):
        super().__init__(net, ce_loss(), teacher=dense, **kw)
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


class GradualMagnitudePruning(L.Callback):
    """Recompute the module's mask at the start of every epoch on the cubic schedule; keep pruned weights at 0.

    The module must carry a mask (all-True at the start); it is updated in place, so it is in
    every checkpoint and a resumed fit continues from it.
    """

    def __init__(self, final_sparsity: float, prune_epochs: int, exclude=(), min_layer_density: float = 0.0):
        self.final, self.ramp = float(final_sparsity), int(prune_epochs)
        self.exclude, self.min_layer_density = list(exclude), float(min_layer_density)
        self.history: list[tuple[int, float]] = []

    def sparsity_at(self, epoch: int) -> float:
        return cubic_sparsity(epoch + 1, self.ramp, self.final)

    @torch.no_grad()
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        target = self.sparsity_at(epoch)
        current = pl_module.mask
        weights = prunable_parameters(pl_module.net, self.exclude)
        new = magnitude_mask(weights, target, current, self.min_layer_density)
        for n, buf in current.items():
            buf.copy_(new[n].to(buf.device))
        for callback in trainer.callbacks:  # the fit's MaskEnforcer holds pruned weights at 0 from here on
            if isinstance(callback, MaskEnforcer):
                callback.refresh(pl_module)
        apply_mask(pl_module.net, pl_module.mask)
        total, kept = mask_counts(new)
        self.history.append((epoch, 1 - kept / total))
        pl_module.log(f"{pl_module.stage}/sparsity", 1 - kept / total, on_step=False, on_epoch=True)


class BestAtFinalSparsity(L.Callback):
    """Keep the weights of the best-validation epoch among those trained at the final mask.

    The fit's own best checkpoint may come from an epoch of the pruning ramp (a denser network),
    so the reported best-val accuracy is taken from this one instead. Its state is in every
    checkpoint, so a resumed fit keeps the best so far.
    """

    def __init__(self, stage: str, first_epoch: int, path: Path):
        self.stage, self.first_epoch, self.path = stage, int(first_epoch), Path(path)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.first_epoch:
            return
        acc = trainer.callback_metrics.get(f"{self.stage}/val/acc")
        if acc is None or (self.best is not None and float(acc) <= self.best):
            return
        self.best, self.best_epoch = float(acc), int(trainer.current_epoch)
        if trainer.is_global_zero:
            atomic_torch_save({k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()}, self.path)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


def run_sdp(runner: StageRunner) -> str:
    """Dense CE training, then gradual magnitude pruning with the cross-correlation self-distillation; ``"retrain"``."""
    cfg = runner.cfg
    c = cfg.sdp
    target = check_sparsity(cfg.pruning.sparsity)
    epochs = int(c.epochs)
    if epochs < 1:
        raise ConfigError("sdp.epochs", epochs, "the pruning fine-tuning must last at least one epoch.", "use e.g. 6.")
    ramp = math.ceil(epochs / 2) if c.prune_epochs is None else int(c.prune_epochs)
    if not 1 <= ramp <= epochs:
        raise ConfigError("sdp.prune_epochs", c.prune_epochs,
                          f"the pruning ramp must last between 1 and sdp.epochs={epochs} epochs.",
                          "use null (half of sdp.epochs) or a smaller value.")
    for key in ("cc_weight", "off_diagonal_weight"):
        if float(c[key]) < 0:
            raise ConfigError(f"sdp.{key}", c[key], "a loss weight cannot be negative.", "use 0 to switch the term off.")

    def dense(folder: Path) -> dict:
        net = build_net(runner, cfg.model)
        module = make_module(runner, net, ce_loss(), "dense", budget(int(c.dense_epochs), float(c.dense_lr)))
        return runner.fit("dense", folder, module, int(c.dense_epochs))

    runner.run("dense", ("model", "sdp.dense_epochs", "sdp.dense_lr"), dense)

    def retrain(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, "dense")
        frozen = copy.deepcopy(net)
        exclude = list(cfg.pruning.exclude)
        start = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net, exclude).items()}
        module = SelfDistilledPruningModule(
            net, frozen, cc_weight=float(c.cc_weight), off_diagonal_weight=float(c.off_diagonal_weight),
            mask=start, stage="retrain", optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            lr=float(c.lr), epochs=epochs, schedule=OmegaConf.to_container(cfg.schedule, resolve=True),
            channels_last=channels_last(cfg), num_classes=runner.dm.num_classes,
        )
        pruning = GradualMagnitudePruning(target, ramp, exclude, float(cfg.pruning.min_layer_density))
        best = BestAtFinalSparsity("retrain", ramp - 1, folder / "best_final_mask.pt")
        result = runner.fit("retrain", folder, module, epochs, callbacks=[pruning, best])
        # Best validation epoch among those at the final mask (not a denser epoch of the ramp).
        if best.best is not None and best.path.exists():
            best_net = copy.deepcopy(module.net)
            best_net.load_state_dict(torch.load(best.path, map_location="cpu", weights_only=True))
            result.update(top1_best_val=runner.evaluate(best_net), val_acc_best=best.best, best_epoch=best.best_epoch)
        else:
            result.update(top1_best_val=result["top1_last"], val_acc_best=None)
        mask = {n: m.detach().cpu() for n, m in module.mask.items()}
        total, kept = mask_counts(mask)
        if total - kept != round(target * total):  # a broken invariant, not a user error
            raise RuntimeError(f"SDP ended at {total - kept}/{total} pruned weights, not round({target}·{total})")
        save_mask(mask, folder / "mask.pt")
        report = sparsity_report(mask, module.net, target=target)
        report.update(score="magnitude", schedule="cubic", prune_epochs=ramp, history=pruning.history)
        atomic_save_json(report, folder / "sparsity_report.json")
        return {**result, "prune_epochs": ramp, "sparsity": report["prunable"]["sparsity"]}

    runner.run("retrain", ("model", "sdp", "pruning.sparsity", "pruning.exclude", "pruning.min_layer_density"),
               retrain, parent="dense")

    def prune(folder: Path) -> dict:
        source = runner.run_dir / "retrain"
        for name in ("mask.pt", "sparsity_report.json"):
            shutil.copyfile(source / name, folder / name)
        load_mask(folder / "mask.pt")  # a readable mask, or fail here
        return {"epochs": 0, "copied_from": "retrain"}

    runner.run("prune", ("pruning.sparsity",), prune, parent="retrain")
    return "retrain"
