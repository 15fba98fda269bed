"""Pruning at (near) initialization: SNIP (Lee et al., 2019) and EPSD (Chen et al., AAAI 2024).

Stages (each content-addressed, see :mod:`tgp.stages`)::

    snip:  init → prune (|θ ⊙ ∇θ L_CE| at θ_init) → retrain (CE, mask, from θ_init)
    epsd:  init → [warmup: i SD steps] → prune (|θ ⊙ ∇θ L_SD| at θ_i) → retrain (SD, mask, from θ_init)

* ``init`` saves ``build_net(cfg.model)``: the same seeded initialization every method starts from.
* Budget (ours, for a fair comparison): the sparse network trains for
  ``kd_pretrain.epochs + retrain.epochs`` epochs — what TGP's student gets in all — at the
  from-scratch learning rate ``kd_pretrain.lr``, in a stage named ``retrain``. No teacher.
* Scoring (ours): at initialization BatchNorm running statistics are still (0, 1); the score
  forward uses batch statistics (``score_bn: batch``, running statistics restored afterwards).
  ``score_bn: running`` scores in eval mode like the framework's other scores.
* EPSD (paper: "prunes a random initialized network with weights θ_init … measuring the impact
  of SD loss on individual weights after i steps of training"): the mask is computed at θ_i
  and applied to θ_init, which then trains with the SD regime (rewinding to θ_init: ours, our
  reading of the paper). The ``warmup`` stage uses a constant learning rate ``kd_pretrain.lr``
  (ours: the first steps of a cosine schedule). ``epsd.score_loss=ce`` is the paper's "Simple"
  baseline: CE-scored SNIP, then the same SD training.
* The SD regimes use per-sample state and custom batch samplers: one process only.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from tgp.distill.self_distill import (
    REGIMES,
    SCORE_BN,
    ClassPairBatchSampler,
    DLBBatchSampler,
    IndexedDataset,
    ce_score_loss,
    check_regime,
    cskd_loss,
    dataset_labels,
    dlb_loss,
    pskd_alpha,
    pskd_targets,
    score_loss,
    soft_cross_entropy,
)
from tgp.errors import ConfigError
from tgp.io import atomic_torch_save
from tgp.methods.common import build_net, ce_loss, channels_last, load_stage_net, make_module, use_given_mask
from tgp.module import ClassifierModule
from tgp.pruning.callbacks import OneShotPruning, all_reduce_sum
from tgp.pruning.mask import apply_mask, load_mask, prunable_parameters
from tgp.pruning.scores import gradient_scores
from tgp.pruning.threshold import global_threshold
from tgp.stages import StageRunner

log = logging.getLogger("tgp")


# -- the SD training module and its data -------------------------------------------------------
class SelfDistillModule(ClassifierModule):
    """:class:`ClassifierModule` trained with a self-distillation regime (no teacher).

    Batches are ``(x, y, i)`` (``i`` = position in the train set) from :class:`SelfDistillData`.
    ``pskd``: soft targets from a per-sample buffer of last epoch's predictions (read before
    this epoch overwrites it; a persistent buffer, so it survives a resume). ``dlb``: the
    second half of each batch's detached ``softmax(z/T)`` is kept for the next batch, whose
    first half holds the same samples. ``cskd``: batches are ``anchors + same-class partners``.
    """

    def __init__(self, net, *, regime: str, num_train: int, pskd_alpha: float = 0.8, temperature: float = 3.0,
                 dlb_weight: float = 1.0, cskd_weight: float = 1.0, **kw):
        super().__init__(net, ce_loss(), **kw)
        self.regime = check_regime(regime)
        self.alpha_T, self.temperature = float(pskd_alpha), float(temperature)
        self.dlb_weight, self.cskd_weight = float(dlb_weight), float(cskd_weight)
        self.n_classes = int(kw.get("num_classes") or net.fc.out_features)
        if self.regime == "pskd":
            self.register_buffer("pskd_prev", torch.zeros(int(num_train), self.n_classes))
            self.register_buffer("pskd_seen", torch.zeros(int(num_train), dtype=torch.bool))
        self._dlb_prev: torch.Tensor | None = None  # last batch's detached softmax(z/T) on its second half

    def on_train_epoch_start(self) -> None:
        self._dlb_prev = None  # the first batch of an epoch shares nothing

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        x = self._inputs(x)
        if self.regime == "pskd":
            logits = self.net(x)
            a_t = pskd_alpha(self.current_epoch, self.epochs, self.alpha_T)
            q = pskd_targets(y, self.pskd_prev[idx], a_t, self.n_classes, self.pskd_seen[idx])
            loss = soft_cross_entropy(logits, q)
            parts = {"a_t": torch.tensor(a_t)}
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
        self.train_acc(logits.detach(), y)
        self.log(f"{self.stage}/train/loss", loss.detach(), on_step=False, on_epoch=True)
        for k, v in parts.items():
            self.log(f"{self.stage}/train/{k}", v, on_step=False, on_epoch=True)
        self.log(f"{self.stage}/train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss


class SelfDistillData(L.LightningDataModule):
    """The run's datamodule with a train loader for an SD regime: items ``(x, y, index)``;
    PS-KD shuffles like the base loader, DLB and CS-KD use their batch samplers. The other
    loaders are the base datamodule's."""

    def __init__(self, base, regime: str):
        super().__init__()
        self.base, self.regime = base, check_regime(regime)
        for attr in ("name", "num_classes", "in_channels", "image_size"):
            setattr(self, attr, getattr(base, attr))

    def setup(self, stage: str | None = None) -> None:
        self.base.setup(stage)

    @property
    def num_train(self) -> int:
        return self.base.num_train

    def train_dataloader(self) -> DataLoader:
        b = self.base
        b.setup("fit")
        ds = IndexedDataset(b.data_train)
        kw = dict(num_workers=b.num_workers, pin_memory=b.pin_memory, persistent_workers=b.persistent_workers)
        if self.regime == "pskd":
            return DataLoader(ds, batch_size=b.batch_size, shuffle=True, drop_last=len(ds) > b.batch_size, **kw)
        if self.regime == "dlb":
            return DataLoader(ds, batch_sampler=DLBBatchSampler(len(ds), b.batch_size), **kw)
        return DataLoader(ds, batch_sampler=ClassPairBatchSampler(dataset_labels(b.data_train), b.batch_size), **kw)

    def val_dataloader(self):
        return self.base.val_dataloader()

    def test_dataloader(self):
        return self.base.test_dataloader()

    def score_dataloader(self, batch_size: int | None = None):
        return self.base.score_dataloader(batch_size)


# -- stages ------------------------------------------------------------------------------------
class LossFnPruning(OneShotPruning):
    """:class:`OneShotPruning` whose gradient score uses a given ``loss_fn(model, x, y)``."""

    def __init__(self, *args, loss_fn, **kw):
        super().__init__(*args, score="gradient", **kw)
        self.loss_fn = loss_fn

    def compute_mask(self, trainer, pl_module):
        net = pl_module.net
        params = prunable_parameters(net, self.exclude)
        scores = gradient_scores(net, params, self._score_batches(trainer), self.loss_fn,
                                 accumulate=self.accumulate, all_reduce=all_reduce_sum)
        return global_threshold(scores, self.sparsity, min_layer_density=self.min_layer_density)


def student_budget(cfg: DictConfig) -> DictConfig:
    """The at-init student's budget: ``kd_pretrain.epochs + retrain.epochs`` epochs at ``kd_pretrain.lr`` (ours)."""
    return OmegaConf.create({"epochs": int(cfg.kd_pretrain.epochs) + int(cfg.retrain.epochs),
                             "lr": float(cfg.kd_pretrain.lr)})


def init_stage(runner: StageRunner) -> None:
    """Save the seeded initialization ``build_net(cfg.model)`` as ``init/net.pt``."""

    def run(folder: Path) -> dict:
        atomic_torch_save(build_net(runner, runner.cfg.model).state_dict(), folder / "net.pt")
        return {"epochs": 0}

    runner.run("init", ("model",), run)


def prune_at_init_stage(runner: StageRunner, *, source: str, loss_fn, nodes) -> dict:
    """One-shot global pruning of stage ``source``'s network with the gradient score of ``loss_fn``."""
    cfg, p = runner.cfg, runner.cfg.pruning

    def run(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, source)
        if p.get("mask"):
            return use_given_mask(runner, net, folder)
        module = make_module(runner, net, ce_loss(), "prune", cfg.retrain)
        callback = LossFnPruning(
            sparsity=float(p.sparsity), out_dir=folder, score_batches=int(p.score_batches), accumulate=str(p.accumulate),
            exclude=list(p.exclude), min_layer_density=float(p.min_layer_density), seed=int(cfg.seed), loss_fn=loss_fn,
        )
        metrics = runner.trainer("prune", folder, callbacks=[callback]).validate(module, datamodule=runner.dm, verbose=False)
        apply_mask(net, load_mask(folder / "mask.pt", net))
        val = metrics[0].get("prune/val/acc") if metrics else None
        return {"epochs": 0, "val_acc_pruned": None if val is None else float(val), "top1_pruned": runner.evaluate(net)}

    return runner.run("prune", nodes, run, parent=source)


def _score_bn(value, setting: str) -> bool:
    if value not in SCORE_BN:
        raise ConfigError(setting, value, "unknown BatchNorm mode for scoring.", f"use one of: {', '.join(SCORE_BN)}.")
    return value == "batch"


def run_snip(runner: StageRunner) -> str:
    """SNIP: ``|θ ⊙ ∇θ L_CE|`` at θ_init, global threshold, then CE training of the sparse θ_init."""
    cfg = runner.cfg
    batch_stats = _score_bn(cfg.method.get("score_bn", "batch"), "method.score_bn")
    init_stage(runner)
    prune_at_init_stage(runner, source="init", loss_fn=ce_score_loss(batch_stats), nodes=("model", "pruning", "method"))
    budget = student_budget(cfg)

    def run(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, "init")
        mask = load_mask(runner.run_dir / "prune" / "mask.pt", net)
        module = make_module(runner, net, ce_loss(), "retrain", budget, mask=mask)
        return runner.fit("retrain", folder, module, int(budget.epochs))

    runner.run("retrain", ("model", "kd_pretrain", "retrain", "method"), run, parent="prune")
    return "retrain"


def check_epsd(cfg: DictConfig) -> DictConfig:
    e = cfg.get("epsd")
    if e is None:
        raise ConfigError("epsd", None, "the EPSD settings are missing.", "select the method with method=epsd.")
    check_regime(str(e.regime))
    if str(e.score_loss) not in ("sd", "ce"):
        raise ConfigError("epsd.score_loss", e.score_loss, "unknown score loss.", "use sd (EPSD) or ce ('Simple').")
    if not isinstance(e.warmup_steps, int) or isinstance(e.warmup_steps, bool) or e.warmup_steps < 0:
        raise ConfigError("epsd.warmup_steps", e.warmup_steps, "must be an integer >= 0.", "use e.g. 0 or 100.")
    if not 0.0 <= float(e.pskd_alpha) <= 1.0:
        raise ConfigError("epsd.pskd_alpha", e.pskd_alpha, "must lie in [0, 1].", "use e.g. 0.8.")
    if float(e.temperature) <= 0:
        raise ConfigError("epsd.temperature", e.temperature, "must be positive.", "use e.g. 3.")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if str(devices) not in ("1", "auto") or "ddp" in str(OmegaConf.select(cfg, "trainer.strategy", default="")):
        raise ConfigError("trainer.devices", devices, "EPSD's self-distillation regimes keep per-sample state and run "
                          "in one process.", "use one device (e.g. trainer=gpu trainer.devices=1, or trainer=cpu).")
    _score_bn(str(e.get("score_bn", "batch")), "epsd.score_bn")
    return e


def _sd_module(runner: StageRunner, net, stage: str, budget: DictConfig, e: DictConfig, **kw) -> SelfDistillModule:
    cfg = runner.cfg
    return SelfDistillModule(
        net, regime=str(e.regime), num_train=runner.dm.num_train, pskd_alpha=float(e.pskd_alpha),
        temperature=float(e.temperature), dlb_weight=float(e.dlb_weight), cskd_weight=float(e.cskd_weight),
        stage=stage, optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), lr=float(budget.lr),
        epochs=int(budget.epochs), schedule=kw.pop("schedule", None) or OmegaConf.to_container(cfg.schedule, resolve=True),
        channels_last=channels_last(cfg), num_classes=runner.dm.num_classes, **kw,
    )


def _with_data(runner: StageRunner, dm) -> StageRunner:
    """A view of ``runner`` whose fits and trainers use ``dm`` (same config, folders, results)."""
    view = copy.copy(runner)
    view.dm = dm
    return view


def run_epsd(runner: StageRunner) -> str:
    """EPSD: i SD warm-up steps, SNIP saliency of the SD loss, global threshold, SD training of the sparse θ_init."""
    cfg = runner.cfg
    e = check_epsd(cfg)
    regime, steps = str(e.regime), int(e.warmup_steps)
    sd_data = SelfDistillData(runner.dm, regime)
    sd_runner = _with_data(runner, sd_data)
    budget = student_budget(cfg)
    init_stage(runner)
    source = "init"
    if steps > 0:
        def warmup(folder: Path) -> dict:
            net = load_stage_net(runner, cfg.model, "init")
            module = _sd_module(runner, net, "warmup", budget, e, schedule={"kind": "constant", "warmup_epochs": 0})
            trainer = sd_runner.trainer("warmup", folder, max_epochs=-1, max_steps=steps, enable_checkpointing=False)
            trainer.fit(module, datamodule=sd_data)
            atomic_torch_save(module.net.state_dict(), folder / "net.pt")
            per_epoch = max(int(trainer.num_training_batches), 1)
            return {"epochs": steps / per_epoch, "steps": steps}

        runner.run("warmup", ("model", "kd_pretrain", "retrain", "epsd"), warmup, parent="init")
        source = "warmup"
    loss_fn = score_loss(regime, score_loss=str(e.score_loss), num_classes=runner.dm.num_classes,
                         alpha=float(e.pskd_alpha), temperature=float(e.temperature), dlb_weight=float(e.dlb_weight),
                         cskd_weight=float(e.cskd_weight), batch_stats=str(e.get("score_bn", "batch")) == "batch")
    prune_at_init_stage(runner, source=source, loss_fn=loss_fn, nodes=("model", "pruning", "method", "epsd"))

    def run(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, "init")
        mask = load_mask(runner.run_dir / "prune" / "mask.pt", net)
        module = _sd_module(runner, net, "retrain", budget, e, mask=mask)
        return sd_runner.fit("retrain", folder, module, int(budget.epochs))

    runner.run("retrain", ("model", "kd_pretrain", "retrain", "method", "epsd"), run, parent="prune")
    return "retrain"


__all__ = ["REGIMES", "SelfDistillData", "SelfDistillModule", "init_stage", "run_epsd", "run_snip", "student_budget"]
