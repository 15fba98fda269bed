"""Pruning at (near) initialization: SNIP (Lee et al., 2019) and EPSD (Chen et al., AAAI 2024).

Stages (each content-addressed, see :mod:`tgp.stages`)::

    snip:  init → prune (|θ ⊙ ∇θ L_CE| at θ_init) → retrain (CE, mask, from θ_init)
    epsd:  init → [warmup: i SD steps] → prune (|θ ⊙ ∇θ L_SD| at θ_i) → retrain (SD, mask, from θ_init)

* ``init`` saves ``build_net(model)``: the same seeded initialization every method starts from.
* Budget (ours, the budget policy): the sparse network trains for the sparse budget every
  method's final sparse network gets, ``retrain.epochs`` at ``retrain.lr``, in a stage named
  ``retrain``. No teacher.
* Scoring (ours): at initialization BatchNorm running statistics are still (0, 1); the score
  forward uses batch statistics (``method.score_bn=batch``, running statistics restored
  afterwards). ``method.score_bn=running`` scores in eval mode like the framework's other scores.
* EPSD (paper: "prunes a random initialized network with weights θ_init … measuring the impact
  of SD loss on individual weights after i steps of training"): the mask is computed at θ_i
  and applied to θ_init, which then trains with the SD regime (rewinding to θ_init: ours, our
  reading of the paper). The ``warmup`` stage (dense, before the mask) uses a constant learning rate ``kd_pretrain.lr``
  (ours: the first steps of a cosine schedule). ``method.score_loss=ce`` is the paper's "Simple"
  baseline: CE-scored SNIP, then the same SD training.
* The SD regimes use per-sample state and custom batch samplers: one process only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tgp.blocks import init_stage, load_stage_net, make_module, prune_stage, sparse_start_net, task_loss
from tgp.data.views import SelfDistillData
from tgp.distill.self_distill import SCORE_BN, SCORE_LOSSES, ce_score_loss, check_regime, score_loss
from tgp.errors import ConfigError
from tgp.io import atomic_torch_save
from tgp.lit import SelfDistillModule
from tgp.methods.registry import MethodOutputs, MethodSpec, register
from tgp.pruning.mask import load_mask
from tgp.stages import StageKind
from tgp.training.cost import TrainingCost, stage_training_flops

# The sparse network's budget (the budget policy): retrain.epochs at retrain.lr.
BUDGET_NODES = ("model", "retrain.epochs", "retrain.lr", "method")
AT_INIT_PRUNE = StageKind("at_init_prune", folder="prune", reads=("model", "pruning", "method"))
SNIP_RETRAIN = StageKind("snip_retrain", folder="retrain", reads=(*BUDGET_NODES, "pruning.sanity"), version=3)
# The SD regimes keep per-sample state and draw their batches per process: were they ever run under DDP
# (refused today, see check_epsd), the world size would be part of their stages' keys.
EPSD_WARMUP = StageKind("epsd_warmup", folder="warmup", reads=("model", "kd_pretrain.lr", "method"), version=2,
                        per_process=lambda cfg: True)
EPSD_RETRAIN = StageKind("epsd_retrain", folder="retrain", reads=(*BUDGET_NODES, "pruning.sanity"), version=3,
                         per_process=lambda cfg: True)


# Schemas of method.* (types only; the values and their provenance: conf/method/snip.yaml, epsd.yaml).
@dataclass
class SnipSettings:
    score_bn: str  # batch | running: BatchNorm statistics while scoring


@dataclass
class EpsdSettings:
    regime: str  # pskd | dlb | cskd
    score_loss: str  # sd = EPSD | ce = the paper's "Simple"
    warmup_steps: int  # i: SD optimizer steps before scoring
    pskd_alpha: float
    dlb_weight: float
    cskd_weight: float
    temperature: float
    score_bn: str  # batch | running


def _check_score_bn(value) -> None:
    if value not in SCORE_BN:
        raise ConfigError("method.score_bn", value, "unknown BatchNorm mode for scoring.", f"use one of: {', '.join(SCORE_BN)}.")


def batch_stats(score_bn: str) -> bool:
    """Whether the score's forward uses BatchNorm batch statistics (``method.score_bn=batch``)."""
    return score_bn == "batch"


def check_snip(cfg: DictConfig, dm=None) -> None:
    _check_score_bn(cfg.method.score_bn)


def epsd_data(dm) -> str | None:
    """EPSD's regimes are defined for image classification: PS-KD's and DLB's soft targets are class
    distributions (none for a regression target), CS-KD pairs samples of a class, and the regimes'
    samplers and per-sample buffers are built over image datasets (:class:`~tgp.data.views.SelfDistillData`)."""
    if getattr(dm, "modality", "image") != "image" or getattr(dm, "regression", False):
        return ("EPSD's self-distillation regimes (PS-KD, DLB, CS-KD) are defined for image classification; this "
                f"job's data is {getattr(dm, 'modality', '?')} data (task {getattr(dm, 'name', '?')}), on which they "
                "are not defined here.")
    return None


def check_epsd(cfg: DictConfig, dm=None) -> None:
    e = cfg.method
    check_regime(e.regime)
    if str(e.score_loss) not in SCORE_LOSSES:
        raise ConfigError("method.score_loss", e.score_loss, "unknown score loss.", "use sd (EPSD) or ce ('Simple').")
    if int(e.warmup_steps) < 0:
        raise ConfigError("method.warmup_steps", e.warmup_steps, "must be an integer >= 0.", "use e.g. 0 or 100.")
    if not 0.0 <= float(e.pskd_alpha) <= 1.0:
        raise ConfigError("method.pskd_alpha", e.pskd_alpha, "must lie in [0, 1].", "use e.g. 0.8.")
    if float(e.temperature) <= 0:
        raise ConfigError("method.temperature", e.temperature, "must be positive.", "use e.g. 3.")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if str(devices) not in ("1", "auto") or "ddp" in str(OmegaConf.select(cfg, "trainer.strategy", default="")):
        raise ConfigError("trainer.devices", devices, "EPSD's self-distillation regimes keep per-sample state and run "
                          "in one process.", "use one device (e.g. trainer=gpu trainer.devices=1, or trainer=cpu).")
    _check_score_bn(e.score_bn)


def run_snip(job) -> MethodOutputs:
    """SNIP: ``|θ ⊙ ∇θ L_CE|`` at θ_init, global threshold, then CE training of the sparse θ_init."""
    init_stage(job)
    pruned = prune_stage(job, source="init", score="gradient", kind=AT_INIT_PRUNE,
                         make_loss=lambda cfg: ce_score_loss(batch_stats(cfg.method.score_bn), job.dm.regression))

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = sparse_start_net(job, cfg, "init")  # θ_init, or a fresh init with pruning.sanity=reinit
        mask = load_mask(job.mask_path(pruned), net)
        epochs = int(cfg.retrain.epochs)
        module = make_module(job, net, task_loss(job.dm), "retrain", epochs, cfg.retrain.lr, mask=mask)
        return job.training.fit("retrain", folder, module, epochs)

    job.run(SNIP_RETRAIN, run, parent=pruned)
    return MethodOutputs(net_stage=SNIP_RETRAIN.folder_name, mask_stage=pruned)


def _sd_module(job, cfg: DictConfig, net, stage: str, epochs: int, lr: float, **kw) -> SelfDistillModule:
    e = cfg.method
    return make_module(
        job, net, None, stage, epochs, lr, module_cls=SelfDistillModule,
        regime=str(e.regime), num_train=job.dm.num_train, pskd_alpha=float(e.pskd_alpha),
        temperature=float(e.temperature), dlb_weight=float(e.dlb_weight), cskd_weight=float(e.cskd_weight), **kw,
    )


def run_epsd(job) -> MethodOutputs:
    """EPSD: i SD warm-up steps, SNIP saliency of the SD loss, global threshold, SD training of the sparse θ_init."""
    sd_data = SelfDistillData(job.dm, str(job.cfg.method.regime))
    init_stage(job)
    source = "init"
    if int(job.cfg.method.warmup_steps) > 0:
        def warmup(folder: Path, cfg: DictConfig) -> dict:
            steps = int(cfg.method.warmup_steps)
            module = _sd_module(job, cfg, load_stage_net(job, cfg.model, "init"), "warmup", 1, cfg.kd_pretrain.lr,
                                schedule={"kind": "constant", "warmup_epochs": 0})
            cost = TrainingCost(stage_training_flops(module, sd_data))  # one process: EPSD refuses DDP
            trainer = job.training.trainer("warmup", folder, max_epochs=-1, max_steps=steps, enable_checkpointing=False,
                                           callbacks=[cost])
            trainer.fit(module, datamodule=sd_data)
            atomic_torch_save(module.net.state_dict(), folder / "net.pt")
            per_epoch = max(int(trainer.num_training_batches), 1)
            return {"epochs": steps / per_epoch, "steps": steps, **cost.result(epochs=math.ceil(steps / per_epoch))}

        job.run(EPSD_WARMUP, warmup, parent="init")
        source = "warmup"

    def make_loss(cfg: DictConfig):
        e = cfg.method
        return score_loss(str(e.regime), score_loss=str(e.score_loss), num_classes=job.dm.num_classes,
                          alpha=float(e.pskd_alpha), temperature=float(e.temperature), dlb_weight=float(e.dlb_weight),
                          cskd_weight=float(e.cskd_weight), batch_stats=batch_stats(e.score_bn))

    pruned = prune_stage(job, source=source, score="gradient", kind=AT_INIT_PRUNE, make_loss=make_loss)

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = sparse_start_net(job, cfg, "init")  # θ_init, or a fresh init with pruning.sanity=reinit
        mask = load_mask(job.mask_path(pruned), net)
        module = _sd_module(job, cfg, net, "retrain", int(cfg.retrain.epochs), cfg.retrain.lr, mask=mask)
        return job.training.fit("retrain", folder, module, int(cfg.retrain.epochs), datamodule=sd_data)

    job.run(EPSD_RETRAIN, run, parent=pruned)
    return MethodOutputs(net_stage=EPSD_RETRAIN.folder_name, mask_stage=pruned)


SNIP = register(MethodSpec(
    name="snip", run=run_snip, summary="|θ ⊙ ∇θ L_CE| at initialization, then train the sparse net",
    settings=SnipSettings, one_shot=True, accepts_mask=True, in_table2=True, stages=("init", "prune", "retrain"),
    epochs=("retrain.epochs",), check=check_snip, color="#d62728",
))
EPSD = register(MethodSpec(
    name="epsd", run=run_epsd, settings=EpsdSettings, one_shot=True, accepts_mask=True, in_table2=True,
    summary="SNIP-form score of a self-distillation loss near initialization, then train with that regime",
    stages=("init", "warmup", "prune", "retrain"), epochs=("retrain.epochs",), check=check_epsd, color="#9467bd",
    data_check=epsd_data,
))
