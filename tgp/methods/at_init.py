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

from tgp.blocks import ce_loss, init_stage, load_stage_net, make_module, prune_stage, sparse_start_net
from tgp.data.views import SelfDistillData
from tgp.distill.self_distill import REGIMES, SCORE_BN, ce_score_loss, score_loss
from tgp.errors import ConfigError
from tgp.io import atomic_torch_save
from tgp.lit import SelfDistillModule
from tgp.methods.registry import MethodSpec, register
from tgp.pruning.mask import load_mask
from tgp.stages import StageKind
from tgp.training import TrainingCost, module_training_flops

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


@dataclass
class SnipSettings:
    score_bn: str = "batch"  # batch | running: BatchNorm statistics while scoring (ours)


@dataclass
class EpsdSettings:
    regime: str = "pskd"  # pskd (Kim et al. 2021) | dlb (Shen et al. 2022) | cskd (Yun et al. 2020)
    score_loss: str = "sd"  # sd = EPSD | ce = the paper's "Simple"
    warmup_steps: int = 0  # i: SD optimizer steps before scoring (0 = at initialization)
    pskd_alpha: float = 0.8
    dlb_weight: float = 1.0
    cskd_weight: float = 1.0
    temperature: float = 3.0
    score_bn: str = "batch"




def _check_score_bn(value) -> bool:
    if value not in SCORE_BN:
        raise ConfigError("method.score_bn", value, "unknown BatchNorm mode for scoring.", f"use one of: {', '.join(SCORE_BN)}.")
    return value == "batch"


def check_snip(cfg: DictConfig, dm=None) -> None:
    _check_score_bn(cfg.method.score_bn)


def check_epsd(cfg: DictConfig, dm=None) -> None:
    e = cfg.method
    if e.regime not in REGIMES:
        raise ConfigError("method.regime", e.regime, "no such self-distillation regime.",
                          f"use method.regime=<regime> with one of: {', '.join(REGIMES)}.")
    if str(e.score_loss) not in ("sd", "ce"):
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


def run_snip(job) -> str:
    """SNIP: ``|θ ⊙ ∇θ L_CE|`` at θ_init, global threshold, then CE training of the sparse θ_init."""
    init_stage(job)
    prune_stage(job, source="init", score="gradient", kind=AT_INIT_PRUNE,
                make_loss=lambda cfg: ce_score_loss(_check_score_bn(cfg.method.score_bn)))

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = sparse_start_net(job, cfg, "init")  # θ_init, or a fresh init with pruning.sanity=reinit
        mask = load_mask(job.stage_path("prune", "mask.pt"), net)
        epochs = int(cfg.retrain.epochs)
        module = make_module(job, net, ce_loss(), "retrain", epochs, cfg.retrain.lr, mask=mask)
        return job.training.fit("retrain", folder, module, epochs)

    job.run(SNIP_RETRAIN, run, parent="prune")
    return "retrain"


def _sd_module(job, cfg: DictConfig, net, stage: str, epochs: int, lr: float, **kw) -> SelfDistillModule:
    e = cfg.method
    return make_module(
        job, net, None, stage, epochs, lr, module_cls=SelfDistillModule,
        regime=str(e.regime), num_train=job.dm.num_train, pskd_alpha=float(e.pskd_alpha),
        temperature=float(e.temperature), dlb_weight=float(e.dlb_weight), cskd_weight=float(e.cskd_weight), **kw,
    )


def run_epsd(job) -> str:
    """EPSD: i SD warm-up steps, SNIP saliency of the SD loss, global threshold, SD training of the sparse θ_init."""
    sd_data = SelfDistillData(job.dm, str(job.cfg.method.regime))
    init_stage(job)
    source = "init"
    if int(job.cfg.method.warmup_steps) > 0:
        def warmup(folder: Path, cfg: DictConfig) -> dict:
            steps = int(cfg.method.warmup_steps)
            module = _sd_module(job, cfg, load_stage_net(job, cfg.model, "init"), "warmup", 1, cfg.kd_pretrain.lr,
                                schedule={"kind": "constant", "warmup_epochs": 0})
            cost = TrainingCost(module_training_flops(module, sd_data))  # one process: EPSD refuses DDP
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
                          cskd_weight=float(e.cskd_weight), batch_stats=_check_score_bn(e.score_bn))

    prune_stage(job, source=source, score="gradient", kind=AT_INIT_PRUNE, make_loss=make_loss)

    def run(folder: Path, cfg: DictConfig) -> dict:
        net = sparse_start_net(job, cfg, "init")  # θ_init, or a fresh init with pruning.sanity=reinit
        mask = load_mask(job.stage_path("prune", "mask.pt"), net)
        module = _sd_module(job, cfg, net, "retrain", int(cfg.retrain.epochs), cfg.retrain.lr, mask=mask)
        return job.training.fit("retrain", folder, module, int(cfg.retrain.epochs), datamodule=sd_data)

    job.run(EPSD_RETRAIN, run, parent="prune")
    return "retrain"


SNIP = register(MethodSpec(
    name="snip", run=run_snip, summary="|θ ⊙ ∇θ L_CE| at initialization, then train the sparse net",
    settings=SnipSettings, accepts_mask=True, stages=("init", "prune", "retrain"),
    epochs=("retrain.epochs",), check=check_snip,
))
EPSD = register(MethodSpec(
    name="epsd", run=run_epsd, settings=EpsdSettings, accepts_mask=True,
    summary="SNIP-form score of a self-distillation loss near initialization, then train with that regime",
    stages=("init", "warmup", "prune", "retrain"), epochs=("retrain.epochs",), check=check_epsd,
))
