"""Iterative magnitude pruning baselines: IMP / lottery tickets, and COLT (docs/methods.md, baselines).

**IMP** (Frankle & Carbin, ICLR 2019; paper = theirs). Stages in ``<run_dir>``::

    init            the seeded initialization θ₀ (net.pt), no training
    dense           θ₀ trained with CE for method.epochs_per_round epochs (rewind.pt: the weights
                    after method.rewind_epoch epochs, when method.rewind_epoch > 0)
    imp_round_01    prune method.rate of the remaining prunable weights of the previous round's
    imp_round_02    trained net (global |θ|), rewind to θ₀ (or to rewind.pt), train with the mask
    ...
    prune           the LAST round's pruning: exactly round(s·N) weights removed (s = pruning.sparsity)
    retrain         the last round's training (rewind, train with the final mask): the final model

Round r < R keeps a fraction (1 − rate)^r of the prunable weights; R is the smallest round
count with (1 − rate)^R ≤ 1 − s, so the last round removes at most ``rate`` of what is left,
chosen to land exactly on the target. Masks are nested: a pruned weight stays pruned (its score
is −∞ in every later round). The intermediate rounds do not depend on the target sparsity, so
runs at several sparsities share them through the stage store.

**COLT** (Hossain et al., arXiv 2212.12770). The classes are split (seeded, ``method.split_seed``)
into halves A and B. Round r: two copies of θ₀ ⊙ m_{r−1} are trained, one on the training
samples of A only, one on B only (stages ``colt_round_XX_a``/``_b``); each is magnitude-pruned
by ``method.rate`` of the remaining weights (``mask_a``, ``mask_b``); the round's mask is their
intersection (stage ``colt_round_XX``: ``mask.pt``, ``mask_a.pt``, ``mask_b.pt``). The next round
rewinds both copies to θ₀. The final model is θ₀ ⊙ m trained on all data (stage ``retrain``).

Choices that are ours (not the papers'), each a setting or written here:

* Prunable weights are those of :func:`tgp.pruning.mask.prunable_parameters` (Conv2d and Linear
  weights, minus ``pruning.exclude``), for IMP and for COLT. docs/methods.md describes COLT on conv
  weights; ``pruning.exclude=[fc]`` restricts it to those. Using the same set as every other
  method keeps "measured sparsity" comparable.
* Exact final count, IMP: the last round's global threshold targets round(s·N) over all
  prunable weights with the already pruned ones at −∞.
* Exact final count, COLT: the intersection removes at least ``rate`` of the remaining weights
  and usually more, so it can overshoot the target. The round whose intersection would reach or
  pass the target is the last one and is computed by the ``prune`` stage instead: it ranks the
  weights alive in m_{r−1} by ``min(|θ_A|, |θ_B|)`` and keeps exactly N − round(s·N). With t the
  smallest kept score, ``mask_a = |θ_A| ≥ t`` and ``mask_b = |θ_B| ≥ t`` (within m_{r−1}) are
  the two networks pruned at one common magnitude threshold, and the final mask ⊆ mask_a ∩ mask_b
  (equal up to ties at t). Both are saved in ``prune/``.
* COLT's halves: with an odd class count B gets the extra class. Each half-network keeps the
  full classifier (all logits, CE over all classes), trained, validated and tested on its
  half's samples only.
* Training budget: every round before the last (and IMP's dense training) runs
  ``method.epochs_per_round`` epochs at ``method.lr`` (by default the dense budget
  ``kd_pretrain.*``), the final ticket the sparse budget every method's final network gets,
  ``retrain.epochs`` at ``retrain.lr``; each with a fresh optimizer and LR schedule, CE loss, no teacher; with
  ``method.rewind_epoch = k > 0`` a round still trains the full ``epochs_per_round`` epochs from the
  rewound weights (Frankle et al. 2020 continue the schedule from k instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from tgp.blocks import init_stage, load_stage_net, make_module, task_loss, train_masked
from tgp.data.views import ClassSubsetDataModule
from tgp.errors import ConfigError
from tgp.methods.registry import MethodOutputs, MethodSpec, register
from tgp.pruning.callbacks import SaveAtEpoch
from tgp.pruning.mask import (
    Mask, apply_mask, load_mask, prunable_parameters, sparsity_report, warn_layer_collapse, write_mask,
)
from tgp.pruning.nested import exact_common_threshold, intersection, magnitude_mask, mask_counts
from tgp.pruning.schedules import check_round_schedule, round_sparsity, rounds_needed
from tgp.stages import StageKind

log = logging.getLogger("tgp")


# Schemas of method.* (types only; the values and their provenance: conf/method/imp.yaml, colt.yaml).
@dataclass
class ImpSettings:
    rate: float  # fraction of the remaining weights pruned per round
    max_rounds: int  # a target that needs more rounds is a config error
    rewind_epoch: int  # 0 = rewind to the initialization; k > 0 = to the weights after k dense epochs
    epochs_per_round: int  # dense training and every round before the last
    lr: float  # learning rate of those rounds


@dataclass
class ColtSettings:
    rate: float  # fraction of the remaining weights each half-network prunes per round
    max_rounds: int
    split_seed: int  # seeded random split of the classes into halves A and B
    epochs_per_round: int  # each half-network's training per round
    lr: float


_IMP_TRAIN = ("model", "method.epochs_per_round", "method.lr", "method.rewind_epoch")
_IMP_ROUND = (*_IMP_TRAIN, "method.rate", "pruning.exclude", "pruning.min_layer_density")
IMP_DENSE = StageKind("imp_dense", folder="dense", reads=_IMP_TRAIN)
IMP_ROUND = StageKind("imp_round", reads=_IMP_ROUND)
IMP_PRUNE = StageKind("imp_prune", folder="prune", reads=(*_IMP_ROUND, "pruning.sparsity"))
IMP_RETRAIN = StageKind("imp_retrain", folder="retrain", reads=(*_IMP_ROUND, "retrain.epochs", "retrain.lr"), version=2)

_COLT = ("model", "method.split_seed", "method.epochs_per_round", "method.lr", "method.rate",
         "pruning.exclude", "pruning.min_layer_density")
COLT_HALF = StageKind("colt_half", reads=_COLT)
COLT_ROUND = StageKind("colt_round", reads=_COLT)
COLT_PRUNE = StageKind("colt_prune", folder="prune", reads=(*_COLT, "pruning.sparsity"))
COLT_RETRAIN = StageKind("colt_retrain", folder="retrain", reads=(*_COLT, "retrain.epochs", "retrain.lr"), version=2)


def split_classes(num_classes: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of the classes into halves A (⌊C/2⌋ classes) and B (the rest); C ≥ 2 (:func:`check_colt`)."""
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(int(seed))).tolist()
    half = num_classes // 2
    return sorted(perm[:half]), sorted(perm[half:])


def _prunable(net, cfg: DictConfig) -> dict:
    return prunable_parameters(net, list(cfg.pruning.exclude))


def _save_mask(mask: Mask, folder: Path, target: float | None, net, extra: dict | None = None, name: str = "mask") -> dict:
    report = write_mask(mask, folder, sparsity_report(mask, net, target=target) | (extra or {}), name)
    if name == "mask":  # the masks a round goes on with (not COLT's per-half ones)
        warn_layer_collapse(report, f"{folder.name}/{name}.pt", one_shot=False)
    return report


def check_imp(cfg: DictConfig, dm=None) -> None:
    check_round_schedule("method", cfg.method, cfg.pruning.sparsity)
    rewind, epochs = int(cfg.method.rewind_epoch), int(cfg.method.epochs_per_round)
    if not 0 <= rewind < epochs:
        raise ConfigError("method.rewind_epoch", rewind,
                          f"the rewind point must lie in [0, method.epochs_per_round={epochs}).",
                          "use 0 (rewind to initialization) or a small epoch such as 1.")


COLT_MIN_CLASSES = 4  # ours: two per half, so each half-network learns to tell classes apart


def colt_data(dm) -> str | None:
    """COLT trains one network per half of the classes (a class-wise split of the targets): it needs class
    targets, and each half-network a classification problem of its own — at least two classes per half
    (ours: a half of one class teaches its network nothing but to predict that class)."""
    if getattr(dm, "regression", False):
        return (f"COLT splits the classes into two halves, and {getattr(dm, 'name', 'this dataset')} has a "
                "regression target (a score, no classes).")
    n = int(getattr(dm, "num_classes", 0))
    if n < COLT_MIN_CLASSES:
        return (f"COLT trains one network per half of the classes and needs at least {COLT_MIN_CLASSES} classes "
                f"(two per half); {getattr(dm, 'name', 'this dataset')} has {n}.")
    return None


def check_colt(cfg: DictConfig, dm=None) -> None:
    # The intersection removes at least `rate` of the remaining weights per round, so the
    # target is reached within the IMP round count at the same rate: check that bound up front.
    # (The data it needs is checked with every method's, MethodSpec.data_check: colt_data.)
    check_round_schedule("method", cfg.method, cfg.pruning.sparsity)


# -- IMP ----------------------------------------------------------------------------------------
def run_imp(job) -> MethodOutputs:
    """Iterative magnitude pruning with rewinding (lottery tickets)."""
    n_rounds = rounds_needed(float(job.cfg.method.rate), float(job.cfg.pruning.sparsity))  # ≤ max_rounds: check_imp
    init_stage(job)

    def rewind_point(cfg: DictConfig) -> Path:
        return job.stage_path("dense", "rewind.pt") if int(cfg.method.rewind_epoch) else job.net_path("init")

    def dense(folder: Path, cfg: DictConfig) -> dict:
        m = cfg.method
        rewind = int(m.rewind_epoch)
        callbacks = [SaveAtEpoch(rewind, folder / "rewind.pt")] if rewind else []
        net = load_stage_net(job, cfg.model, "init")
        module = make_module(job, net, task_loss(job.dm), "dense", m.epochs_per_round, m.lr)
        return job.training.fit("dense", folder, module, int(m.epochs_per_round), callbacks=callbacks)

    job.run(IMP_DENSE, dense, parent="init")

    def prune_from(cfg: DictConfig, prev_stage: str, prev_mask_stage: str | None, sparsity: float, folder: Path, r: int):
        trained = load_stage_net(job, cfg.model, prev_stage)
        previous = load_mask(job.mask_path(prev_mask_stage), trained) if prev_mask_stage else None
        mask = magnitude_mask(_prunable(trained, cfg), sparsity, previous, float(cfg.pruning.min_layer_density))
        report = _save_mask(mask, folder, sparsity, trained, {"round": r, "rate": float(cfg.method.rate),
                                                              "score": "magnitude"})
        return trained, mask, report

    prev_stage, prev_mask_stage = "dense", None
    for r in range(1, n_rounds):
        name = f"imp_round_{r:02d}"

        def round_fn(folder: Path, cfg: DictConfig, r=r, name=name, prev_stage=prev_stage,
                     prev_mask_stage=prev_mask_stage) -> dict:
            m = cfg.method
            _, mask, report = prune_from(cfg, prev_stage, prev_mask_stage, round_sparsity(float(m.rate), r), folder, r)
            result = train_masked(job, name, folder, rewind_point(cfg), mask, m.epochs_per_round, m.lr)
            return {**result, "round": r, "sparsity": report["prunable"]["sparsity"]}

        job.run(IMP_ROUND, round_fn, parent=prev_stage, name=name)
        prev_stage = prev_mask_stage = name

    def prune(folder: Path, cfg: DictConfig, prev_stage=prev_stage, prev_mask_stage=prev_mask_stage) -> dict:
        target = float(cfg.pruning.sparsity)
        trained, mask, report = prune_from(cfg, prev_stage, prev_mask_stage, target, folder, n_rounds)
        apply_mask(trained, mask)
        return {"epochs": 0, "round": n_rounds, "rounds": n_rounds, "sparsity": report["prunable"]["sparsity"],
                **job.training.scores(trained, "pruned")}

    job.run(IMP_PRUNE, prune, parent=prev_stage)
    pruned = IMP_PRUNE.folder_name

    def retrain(folder: Path, cfg: DictConfig) -> dict:  # the final ticket: the sparse budget
        mask = load_mask(job.mask_path(pruned))
        r = cfg.retrain
        return {**train_masked(job, "retrain", folder, rewind_point(cfg), mask, r.epochs, r.lr), "round": n_rounds}

    job.run(IMP_RETRAIN, retrain, parent=pruned)
    return MethodOutputs(net_stage=IMP_RETRAIN.folder_name, mask_stage=pruned)


# -- COLT ---------------------------------------------------------------------------------------
def run_colt(job) -> MethodOutputs:
    """Cyclic overlapping lottery tickets: intersect the tickets of two class halves."""
    cfg = job.cfg  # between stages: decides the round structure; stage functions read their views
    target, rate = float(cfg.pruning.sparsity), float(cfg.method.rate)
    max_rounds = rounds_needed(rate, target)  # IMP's count at this rate, ≤ method.max_rounds (check_colt)
    classes_a, classes_b = split_classes(int(job.dm.num_classes), int(cfg.method.split_seed))
    classes = {"a": classes_a, "b": classes_b}
    halves = {"a": ClassSubsetDataModule(job.dm, classes_a), "b": ClassSubsetDataModule(job.dm, classes_b)}
    min_density = float(cfg.pruning.min_layer_density)
    init = job.net_path("init")

    init_stage(job)
    prev_stage, previous = "init", None
    for r in range(1, max_rounds + 1):
        prev_mask_path = None if previous is None else job.mask_path(previous)
        for half in ("a", "b"):
            stage = f"colt_round_{r:02d}_{half}"

            def train_half(folder: Path, cfg: DictConfig, stage=stage, half=half, prev_mask_path=prev_mask_path) -> dict:
                m = cfg.method
                mask = load_mask(prev_mask_path) if prev_mask_path else None
                result = train_masked(job, stage, folder, init, mask, m.epochs_per_round, m.lr, datamodule=halves[half])
                return {**result, "round": r, "classes": classes[half]}

            job.run(COLT_HALF, train_half, parent=prev_stage, name=stage)

        net_a = load_stage_net(job, cfg.model, f"colt_round_{r:02d}_a")
        net_b = load_stage_net(job, cfg.model, f"colt_round_{r:02d}_b")
        prev_mask = load_mask(prev_mask_path, net_a) if prev_mask_path else None
        w_a, w_b = _prunable(net_a, cfg), _prunable(net_b, cfg)
        n_total = sum(w.numel() for w in w_a.values())
        kept_prev = n_total if prev_mask is None else mask_counts(prev_mask)[1]
        s_round = 1.0 - kept_prev * (1.0 - rate) / n_total  # each network prunes `rate` of what is left
        mask_a = magnitude_mask(w_a, s_round, prev_mask, min_density)
        mask_b = magnitude_mask(w_b, s_round, prev_mask, min_density)
        inter = intersection(mask_a, mask_b)
        removed = n_total - mask_counts(inter)[1]
        info = {"round": r, "rate": rate, "classes_a": classes_a, "classes_b": classes_b, "score": "magnitude"}

        if removed < round(target * n_total):
            name = f"colt_round_{r:02d}"

            def combine(folder: Path, cfg: DictConfig, inter=inter, mask_a=mask_a, mask_b=mask_b, info=info,
                        s_round=s_round, r=r) -> dict:
                report = _save_mask(inter, folder, None, net_a, info)
                _save_mask(mask_a, folder, s_round, net_a, info, name="mask_a")
                _save_mask(mask_b, folder, s_round, net_a, info, name="mask_b")
                return {"epochs": 0, "round": r, "sparsity": report["prunable"]["sparsity"]}

            job.run(COLT_ROUND, combine, parent=f"colt_round_{r:02d}_b", name=name)
            prev_stage = previous = name
            continue

        def prune(folder: Path, cfg: DictConfig) -> dict:
            if removed == round(target * n_total):  # the intersection lands on the target exactly
                mask, fa, fb = inter, mask_a, mask_b
            else:
                mask, fa, fb = exact_common_threshold(w_a, w_b, target, prev_mask, min_density)
            extra = {**info, "intersection_at_rate_sparsity": removed / n_total,
                     "final": "exact count by min(|θ_A|, |θ_B|) within the previous mask"}
            report = _save_mask(mask, folder, target, net_a, extra)
            _save_mask(fa, folder, None, net_a, extra, name="mask_a")
            _save_mask(fb, folder, None, net_a, extra, name="mask_b")
            return {"epochs": 0, "round": r, "rounds": r, "sparsity": report["prunable"]["sparsity"]}

        job.run(COLT_PRUNE, prune, parent=f"colt_round_{r:02d}_b")
        break
    else:  # unreachable: the intersection prunes at least `rate` per round (see check_round_schedule)
        raise RuntimeError(f"COLT did not reach sparsity {target} within {max_rounds} rounds")

    pruned = COLT_PRUNE.folder_name

    def retrain(folder: Path, cfg: DictConfig) -> dict:
        mask = load_mask(job.mask_path(pruned))
        return train_masked(job, "retrain", folder, init, mask, cfg.retrain.epochs, cfg.retrain.lr)

    job.run(COLT_RETRAIN, retrain, parent=pruned)
    return MethodOutputs(net_stage=COLT_RETRAIN.folder_name, mask_stage=pruned)


IMP = register(MethodSpec(
    name="imp", run=run_imp, settings=ImpSettings, check=check_imp, in_table2=True,
    summary="iterative global magnitude pruning, method.rate of the remaining weights per round, rewinding",
    stages=("init", "dense", "imp_round_*", "prune", "retrain"), epochs=("method.epochs_per_round", "retrain.epochs"),
    dense_stage="dense", color="#8c564b",
))
COLT = register(MethodSpec(
    name="colt", run=run_colt, settings=ColtSettings, check=check_colt, in_table2=True,
    summary="intersection of the magnitude tickets of two class halves per round, rewinding",
    stages=("init", "colt_round_*_a", "colt_round_*_b", "colt_round_*", "prune", "retrain"),
    epochs=("method.epochs_per_round", "retrain.epochs"), color="#e377c2", data_check=colt_data,
))
