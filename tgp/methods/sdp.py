"""Self-distilled pruning (SDP; O'Neill, Dutta, Assem, arXiv 2109.15014; docs/methods.md, SDP).

Idea (paper): while a network is pruned, keep the representation of its pruned version close to
that of its unpruned version, with no separate teacher. Definition (ours, the paper's formula is
not available to us):

* ``dense`` stage (:func:`tgp.blocks.dense_stage`): the student trained from its seeded
  initialization with CE (``method.dense_epochs`` epochs at ``method.dense_lr``); a pretrained
  Transformer (``model=bert_base``) is fine-tuned from its pretrained weights (paper: SDP prunes
  fine-tuned Transformers), a random-init one (``bert_tiny``) trains from its seeded initialization.
* ``retrain`` stage: fine-tuning for the sparse budget ``retrain.epochs`` at ``retrain.lr`` with
  ``L = CE + λ · L_CC(z_pruned, z_dense)`` (λ = ``method.cc_weight``; MSE instead of CE for a
  regression target such as STS-B's), where ``z`` are the features the classifier reads
  (``net.forward_features``: penultimate features of a CNN, the pooled [CLS] state of BERT) of the
  masked network and of a frozen copy of the dense weights (eval mode, no gradients), and ``L_CC`` is
  :func:`tgp.distill.cross_correlation.cross_correlation_loss` (``λ_off = method.off_diagonal_weight``).
  Meanwhile the network is pruned gradually by global magnitude on the cubic schedule of Zhu &
  Gupta (2017): at the start of epoch ``e`` (0-based) the mask is recomputed for sparsity
  ``s_e = s · (1 − (1 − min(e + 1, P) / P)³)``, ``P = method.prune_epochs`` (null = ⌈epochs/2⌉),
  so the target ``s`` = ``pruning.sparsity`` holds from epoch ``P − 1`` on, then stays fixed.
  Masks are nested (a pruned weight stays pruned) and the final one removes exactly
  ``round(s·N)`` prunable weights (global threshold with pruned weights at −∞). The ``retrain``
  stage holds the final network and the final mask (``mask.pt``, ``sparsity_report.json``): both
  outputs of the method (:class:`~tgp.methods.registry.MethodOutputs`).

Between mask updates pruned weights are held at zero by the :class:`~tgp.pruning.MaskEnforcer`
that every fit carries (gradients masked before each optimizer step, weights after it), which
follows every mask change the callback makes through the module.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from tgp.blocks import dense_stage, load_stage_net, make_module, task_loss
from tgp.errors import ConfigError
from tgp.lit import SelfDistilledPruningModule
from tgp.methods.registry import MethodOutputs, MethodSpec, register
from tgp.pruning.callbacks import BestAtFinalSparsity, GradualMagnitudePruning
from tgp.pruning.mask import prunable_parameters, sparsity_report, write_mask
from tgp.pruning.nested import mask_counts
from tgp.stages import StageKind

log = logging.getLogger("tgp")

SDP_RETRAIN = StageKind("sdp_retrain", folder="retrain", version=2, reads=(
    "model", "method", "retrain.epochs", "retrain.lr", "pruning.sparsity", "pruning.exclude",
    "pruning.min_layer_density"))


@dataclass
class SdpSettings:  # types only; the values and their provenance: conf/method/sdp.yaml
    dense_epochs: int  # dense CE training of the student from its seeded init
    dense_lr: float
    prune_epochs: int | None  # epochs of the cubic ramp; null = ceil(retrain.epochs / 2)
    cc_weight: float  # λ of the cross-correlation term
    off_diagonal_weight: float  # λ_off


def ramp_epochs(cfg: DictConfig) -> int:
    """Epochs of the cubic ramp within the fine-tuning (the sparse budget retrain.epochs)."""
    m = cfg.method
    return math.ceil(int(cfg.retrain.epochs) / 2) if m.prune_epochs is None else int(m.prune_epochs)


def check_sdp(cfg: DictConfig, dm=None) -> None:
    """The ramp fits into the fine-tuning, the loss weights are ≥ 0 (the sparsity and the epoch counts are
    checked with every method's, before: :func:`tgp.checks.validate_job`)."""
    c = cfg.method
    epochs = int(cfg.retrain.epochs)
    if not 1 <= ramp_epochs(cfg) <= epochs:
        raise ConfigError("method.prune_epochs", c.prune_epochs,
                          f"the pruning ramp must last between 1 and retrain.epochs={epochs} epochs.",
                          "use null (half of retrain.epochs) or a smaller value.")
    for key in ("cc_weight", "off_diagonal_weight"):
        if float(c[key]) < 0:
            raise ConfigError(f"method.{key}", c[key], "a loss weight cannot be negative.", "use 0 to switch the term off.")


def sdp_variant(cfg: DictConfig) -> str | None:
    """``λ=0`` for the ablation the paper names (gradual magnitude pruning without L_CC), else None."""
    return "λ=0" if float(cfg.method.cc_weight) == 0 else None


def run_sdp(job) -> MethodOutputs:
    """Dense CE training, then gradual magnitude pruning with the cross-correlation self-distillation."""
    dense = dense_stage(job)

    def retrain(folder: Path, cfg: DictConfig) -> dict:
        c, r, target, ramp = cfg.method, cfg.retrain, float(cfg.pruning.sparsity), ramp_epochs(cfg)
        net = load_stage_net(job, cfg.model, dense)
        exclude = list(cfg.pruning.exclude)
        start = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net, exclude).items()}
        module = make_module(job, net, task_loss(job.dm), "retrain", r.epochs, r.lr, module_cls=SelfDistilledPruningModule,
                             dense=copy.deepcopy(net), cc_weight=float(c.cc_weight),
                             off_diagonal_weight=float(c.off_diagonal_weight), mask=start)
        pruning = GradualMagnitudePruning(target, ramp, exclude, float(cfg.pruning.min_layer_density))
        best = BestAtFinalSparsity("retrain", ramp - 1, folder / "best_final_mask.pt", job.training.monitor)
        result = job.training.fit("retrain", folder, module, int(r.epochs), callbacks=[pruning, best])
        # Best validation epoch among those at the final mask (not a denser epoch of the ramp).
        if best.best is not None and best.path.exists():
            best_net = copy.deepcopy(module.net)
            best_net.load_state_dict(torch.load(best.path, map_location="cpu", weights_only=True))
            result.update(job.training.scores(best_net, "best_val"), val_acc_best=best.best, best_epoch=best.best_epoch)
        else:
            result.update({k.replace("_last", "_best_val"): result[k] for k in
                           ("top1_last", "score_last", "metrics_last", "groups_last")}, val_acc_best=None)
        mask = {n: m.detach().cpu() for n, m in module.mask.items()}
        total, kept = mask_counts(mask)
        if total - kept != round(target * total):  # a broken invariant, not a user error
            raise RuntimeError(f"SDP ended at {total - kept}/{total} pruned weights, not round({target}·{total})")
        report = write_mask(mask, folder, sparsity_report(mask, module.net, target=target) | {
            "score": "magnitude", "schedule": "cubic", "prune_epochs": ramp, "history": pruning.history})
        return {**result, "prune_epochs": ramp, "sparsity": report["prunable"]["sparsity"]}

    job.run(SDP_RETRAIN, retrain, parent=dense)
    return MethodOutputs(net_stage=SDP_RETRAIN.folder_name, mask_stage=SDP_RETRAIN.folder_name)


SDP = register(MethodSpec(
    name="sdp", run=run_sdp, settings=SdpSettings, check=check_sdp,
    summary="gradual magnitude pruning during fine-tuning with a cross-correlation term to the frozen dense copy",
    stages=("dense", "retrain"), epochs=("method.dense_epochs", "retrain.epochs"), dense_stage="dense",
    color="#bcbd22", variant=sdp_variant,
))
