"""The stage kinds several methods share, and the builders their stage functions use.

Kinds (see :class:`tgp.stages.StageKind`): ``init`` (the seeded initialization), ``teacher``
(CE training or a loaded checkpoint), ``kd_pretrain`` (α·CA-KLD + (1−α)·CE under the frozen
teacher), ``prune`` (one-shot global pruning with a score), ``retrain`` (fixed mask, ±KD), ``dense``
(the student's dense training or fine-tuning, SDP's first stage and the dense method's).
"CE" is the data's task loss throughout: MSE for a regression target (``dm.regression``, STS-B), with
the KD term ``MSE(z_S, z_T)`` there (:class:`~tgp.distill.losses.DistillationLoss`).
Each stage function reads its settings from the view it is given (``fn(folder, cfg)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.distill.losses import DistillationLoss, estimate_dataset_confidence
from tgp.io import atomic_save_json, atomic_torch_save, read_json
from tgp.lit import ClassifierModule
from tgp.lit.compiled import compile_setting
from tgp.pruning.callbacks import OneShotPruning
from tgp.pruning.mask import (
    MASK_FILE, SPARSITY_REPORT_FILE, Mask, apply_mask, load_mask, prunable_parameters, sparsity_report, write_mask,
)
from tgp.pruning.sanity import RANDOM_VARIANTS, REINIT_SEED_OFFSET, SEED_OFFSET, layer_shuffle, random_variant_mask
from tgp.stages import StageKind
from tgp.training.weights import load_net_weights

log = logging.getLogger("tgp")

def batch_confidence(cfg: DictConfig) -> bool:
    """Whether the KD loss's β is each batch's mean teacher confidence (``distill.confidence=batch``): a
    per-rank batch under DDP, so the fit's result depends on the number of processes."""
    d = cfg.distill
    return str(d.kind) == "ca_kld" and str(d.confidence) == "batch" and float(d.kd_weight) > 0


INIT = StageKind("init", reads=("model",))
TEACHER = StageKind("teacher", reads=("teacher",))
KD_PRETRAIN = StageKind("kd_pretrain", reads=("model", "distill", "kd_pretrain"), per_process=batch_confidence)
# version 2: pruning.sanity variants; the teacher scores in eval mode also when kd_pretrain was skipped
ONE_SHOT_PRUNE = StageKind("prune", reads=("model", "pruning", "method", "distill"), version=2)
# version 2: reads pruning.sanity (reinit starts from a fresh initialization)
RETRAIN = StageKind("retrain", reads=("model", "retrain", "distill", "pruning.sanity"), version=2,
                    per_process=lambda cfg: bool(cfg.retrain.kd) and batch_confidence(cfg))
# The student's dense training from its seeded initialization (or fine-tuning from pretrained weights):
# method.dense_epochs at method.dense_lr. Declared by SDP first (hence its name, kept so stored stages
# stay valid); the dense method reads the same settings and shares the stage with SDP in the stage store.
DENSE = StageKind("sdp_dense", folder="dense", reads=("model", "method.dense_epochs", "method.dense_lr"))

LossFn = Callable  # (model, x, y) -> scalar loss


# -- builders ----------------------------------------------------------------------------------
def channels_last(cfg: DictConfig) -> bool:
    value = cfg.channels_last
    if value == "auto":  # NHWC convolutions are faster on GPUs with tensor cores, slower on CPUs
        return str(cfg.trainer.accelerator) in ("gpu", "cuda")
    return bool(value)


def build_net(job, node: DictConfig, seed_offset: int = 0) -> torch.nn.Module:
    """Instantiate a network for the data (``dm.model_kwargs()``: its outputs, its input channels for
    images), seeded (same init in every run; a pretrained Transformer's new head likewise)."""
    L.seed_everything(int(job.cfg.seed) + seed_offset, workers=True, verbose=False)
    return instantiate(node, **job.dm.model_kwargs())


def load_weights(job, node: DictConfig, path: Path) -> torch.nn.Module:
    net = build_net(job, node)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


def load_stage_net(job, node: DictConfig, stage: str) -> torch.nn.Module:
    return load_weights(job, node, job.net_path(stage))


def sparse_start_net(job, cfg: DictConfig, stage: str) -> torch.nn.Module:
    """The weights sparse training starts from: stage ``stage``'s, or with ``pruning.sanity=reinit``
    a fresh initialization drawn from another seed (``seed + REINIT_SEED_OFFSET``) — the same
    mask, not the method's weights. The stage's kind must read ``pruning.sanity``."""
    if cfg.pruning.sanity == "reinit":
        return build_net(job, cfg.model, seed_offset=REINIT_SEED_OFFSET)
    return load_stage_net(job, cfg.model, stage)


def make_module(job, net, criterion, stage: str, epochs: int, lr: float, module_cls=ClassifierModule,
                **kw) -> ClassifierModule:
    """A LightningModule of the running stage: its optimizer and schedule come from the stage's view
    (``compile``/``compile_mode`` too: its fits compile the student's and teacher's forward, :mod:`tgp.lit.compiled`)."""
    cfg = job.cfg
    return module_cls(
        net, criterion, stage=stage, optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        lr=float(lr), epochs=int(epochs), schedule=kw.pop("schedule", None) or OmegaConf.to_container(cfg.schedule),
        channels_last=channels_last(cfg), scoring=job.dm.scoring, compile_mode=compile_setting(cfg), **kw,
    )


def task_loss(dm=None) -> DistillationLoss:
    """The data's task loss alone: CE, or MSE for a regression target (``dm.regression``)."""
    return DistillationLoss(kd_weight=0.0, regression=bool(getattr(dm, "regression", False)))


def kd_loss(d: DictConfig, confidence: float | None = None, regression: bool = False) -> DistillationLoss:
    """``α·KD + (1−α)·CE`` from the ``distill`` node (with the dataset confidence β when known); for a
    regression target ``α·MSE(z_S, z_T) + (1−α)·MSE(z_S, y)`` (ours)."""
    loss = DistillationLoss(
        kd_weight=float(d.kd_weight), temperature=float(d.temperature), kind=str(d.kind),
        standardize=bool(d.standardize), confidence=str(d.confidence), confidence_logits=str(d.confidence_logits),
        regression=regression,
    )
    if loss.needs_dataset_confidence and confidence is not None:
        loss.set_dataset_confidence(confidence)
    return loss


class TeacherGuidedLoss:
    """``loss_fn(model, x, y) = criterion(model(x), y, teacher(x))``: the TGP objective as a score
    loss. A class, not a closure: a ddp_spawn Trainer pickles the pruning callback that holds it."""

    def __init__(self, criterion: DistillationLoss, teacher: torch.nn.Module):
        self.criterion, self.teacher = criterion, teacher

    def __call__(self, model, x, y):
        teacher_logits = self.teacher(x) if self.criterion.kd_weight > 0 else None
        return self.criterion(model(x), y, teacher_logits)[0]


# -- stages ------------------------------------------------------------------------------------
def init_stage(job) -> None:
    """Save the seeded initialization ``build_net(model)`` as ``init/net.pt``: what at-init methods
    prune and what iterative methods rewind to."""

    def run(folder: Path, cfg: DictConfig) -> dict:
        atomic_torch_save(build_net(job, cfg.model).state_dict(), folder / "net.pt")
        return {"epochs": 0}

    job.run(INIT, run)


def teacher_stage(job) -> torch.nn.Module:
    """Train the dense teacher with CE, or load ``teacher.checkpoint``; returns the teacher network."""

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = build_net(job, cfg.teacher.net, seed_offset=1000)
        if cfg.teacher.checkpoint:
            load_net_weights(net, cfg.teacher.checkpoint, "teacher.checkpoint")
            atomic_torch_save(net.state_dict(), folder / "net.pt")
            return {"epochs": 0, "loaded_from": str(cfg.teacher.checkpoint), **job.training.scores(net, "last")}
        t = cfg.teacher
        module = make_module(job, net, task_loss(job.dm), "teacher", t.epochs, t.lr)
        return job.training.fit("teacher", folder, module, int(t.epochs))

    job.run(TEACHER, run)
    # Frozen and in eval mode for every later use, whether or not a stage that wraps it in a module
    # (which does the same) ran in this process: the prune stage's teacher-guided score must not
    # depend on whether kd_pretrain was computed or skipped (BatchNorm batch statistics otherwise).
    return load_stage_net(job, job.cfg.teacher.net, "teacher").eval().requires_grad_(False)


def kd_pretrain_stage(job, teacher) -> float | None:
    """Train the dense student under the frozen teacher with ``α·CA-KLD + (1−α)·CE``; returns β."""

    def run(folder: Path, cfg: DictConfig) -> dict:
        loss = kd_loss(cfg.distill, regression=job.dm.regression)
        extra = {}
        if loss.needs_dataset_confidence:
            device = job.training.device()
            beta = estimate_dataset_confidence(teacher.to(device).eval(), job.dm.score_dataloader(), device=device,
                                               **loss.confidence_kwargs)
            loss.set_dataset_confidence(beta)
            extra["teacher_confidence"] = beta
        k = cfg.kd_pretrain
        module = make_module(job, build_net(job, cfg.model), loss, "kd_pretrain", k.epochs, k.lr, teacher=teacher)
        return {**job.training.fit("kd_pretrain", folder, module, int(k.epochs)), **extra}

    return job.run(KD_PRETRAIN, run, parent="teacher").get("teacher_confidence")


def use_given_mask(job, cfg: DictConfig, net, folder: Path) -> dict:
    """``pruning.mask``: a given mask replaces the score; checked against the model, saved as the stage's mask
    (with ``pruning.sanity=layer_shuffle``: shuffled within each layer)."""
    p = cfg.pruning
    mask = load_mask(p.mask, net)
    if p.sanity == "layer_shuffle":
        mask = layer_shuffle(mask, int(cfg.seed) + SEED_OFFSET)
    write_mask(mask, folder, sparsity_report(mask, net, target=float(p.sparsity)) | {"source": str(p.mask),
                                                                                      "sanity": p.sanity})
    apply_mask(net, mask)
    return {"epochs": 0, "mask_from": str(p.mask), "sanity": p.sanity, **job.training.scores(net, "pruned")}


class SanityPruning(OneShotPruning):
    """:class:`OneShotPruning` with a sanity-check variant (``pruning.sanity``, :mod:`tgp.pruning.sanity`):
    ``invert`` thresholds the negated score, ``layer_shuffle`` shuffles the method's mask within
    each layer, ``random_uniform``/``random_erk`` replace it by a random mask with those per-layer
    counts (no score computed); ``reinit`` and None leave the mask as it is. Seeded by
    ``sanity_seed`` (drawn on the CPU), so every rank builds the identical mask."""

    def __init__(self, *, sanity: str | None, sanity_seed: int, **kw):
        super().__init__(invert=sanity == "invert", **kw)
        self.sanity, self.sanity_seed = sanity, int(sanity_seed)

    def compute_mask(self, trainer, pl_module) -> Mask:
        if self.sanity in RANDOM_VARIANTS:
            params = prunable_parameters(pl_module.net, self.exclude)
            return random_variant_mask(self.sanity, params, self.sparsity, self.sanity_seed)
        mask = super().compute_mask(trainer, pl_module)
        return layer_shuffle(mask, self.sanity_seed) if self.sanity == "layer_shuffle" else mask


def prune_stage(job, *, source: str, score: str, make_loss: Callable[[DictConfig], LossFn] | None = None,
                kind: StageKind = ONE_SHOT_PRUNE) -> str:
    """One-shot global pruning of the network trained by stage ``source`` (:class:`OneShotPruning`); returns
    the stage's name (its folder holds ``mask.pt`` and ``sparsity_report.json``).

    ``score`` is ``gradient`` (``|θ ⊙ ∇θ L|``, ``L = make_loss(view)``, CE when None),
    ``magnitude`` or ``random``. Runs ``trainer.validate`` with the callback, so the pruned
    network's validation accuracy is measured by the same Trainer (and DDP processes) that pruned it.
    ``pruning.sanity`` applies a sanity-check variant (:class:`SanityPruning`) and is recorded in
    ``sparsity_report.json`` and the stage result.
    """

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = load_stage_net(job, cfg.model, source)
        p = cfg.pruning
        if p.mask:
            return use_given_mask(job, cfg, net, folder)
        module = make_module(job, net, task_loss(job.dm), "prune", 1, 0.0)
        sanity = p.sanity
        callback = SanityPruning(
            keep_class_rows=bool(p.keep_class_rows),
            sparsity=float(p.sparsity), out_dir=folder, score=score, score_batches=int(p.score_batches),
            accumulate=str(p.accumulate), exclude=list(p.exclude), min_layer_density=float(p.min_layer_density),
            seed=int(cfg.seed), loss_fn=make_loss(cfg) if make_loss is not None else None,
            sanity=sanity, sanity_seed=int(cfg.seed) + SEED_OFFSET,
        )
        metrics = job.training.trainer("prune", folder, callbacks=[callback]).validate(
            module, datamodule=job.dm, verbose=False)
        report = read_json(folder / SPARSITY_REPORT_FILE)  # written by rank 0 (another process under ddp_spawn)
        atomic_save_json({**report, "sanity": sanity}, folder / SPARSITY_REPORT_FILE)
        apply_mask(net, load_mask(folder / MASK_FILE, net))
        val = metrics[0].get(f"prune/{job.training.monitor}") if metrics else None
        return {"epochs": 0, "sanity": sanity, "val_acc_pruned": None if val is None else float(val),
                **job.training.scores(net, "pruned")}

    job.run(kind, run, parent=source)
    return kind.folder_name


def retrain_stage(job, *, source: str, mask_stage: str, teacher=None, confidence: float | None = None) -> str:
    """Sparse retraining of stage ``source``'s weights (a fresh initialization with ``pruning.sanity=reinit``)
    with the fixed mask of stage ``mask_stage``; KD or CE per ``retrain.kd``. Returns the stage's name."""

    def run(folder: Path, cfg: DictConfig) -> dict:
        use_kd = bool(cfg.retrain.kd) and teacher is not None
        net = sparse_start_net(job, cfg, source)
        mask = load_mask(job.mask_path(mask_stage), net)
        criterion = kd_loss(cfg.distill, confidence, job.dm.regression) if use_kd else task_loss(job.dm)
        r = cfg.retrain
        module = make_module(job, net, criterion, "retrain", r.epochs, r.lr, teacher=teacher if use_kd else None,
                             mask=mask)
        return {**job.training.fit("retrain", folder, module, int(r.epochs)), "kd": use_kd}

    job.run(RETRAIN, run, parent=mask_stage)
    return RETRAIN.folder_name


def train_masked(job, stage: str, folder: Path, start: Path, mask: Mask | None, epochs: int, lr: float,
                 datamodule=None) -> dict:
    """Train the weights at ``start`` with ``mask`` (CE, no teacher) for ``epochs``; result of ``Training.fit``."""
    net = load_weights(job, job.cfg.model, start)
    L.seed_everything(int(job.cfg.seed), workers=True, verbose=False)
    module = make_module(job, net, task_loss(job.dm), stage, epochs, lr, mask=mask)
    return job.training.fit(stage, folder, module, int(epochs), datamodule=datamodule)


def dense_stage(job) -> str:
    """The student trained dense with the task loss from its seeded initialization (a pretrained
    Transformer: fine-tuned from its pretrained weights) for ``method.dense_epochs`` at ``method.dense_lr``
    (:data:`DENSE`); returns the stage's name."""

    def run(folder: Path, cfg: DictConfig) -> dict:
        m = cfg.method
        module = make_module(job, build_net(job, cfg.model), task_loss(job.dm), "dense", m.dense_epochs, m.dense_lr)
        return job.training.fit("dense", folder, module, int(m.dense_epochs))

    job.run(DENSE, run)
    return DENSE.folder_name
