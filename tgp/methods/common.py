"""Stage builders shared by the method pipelines: teacher, (KD) training, one-shot prune, retrain."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.distill.losses import DistillationLoss, estimate_dataset_confidence
from tgp.module import ClassifierModule
from tgp.pruning.callbacks import OneShotPruning
from tgp.io import atomic_save_json, atomic_torch_save
from tgp.pruning.mask import apply_mask, load_mask, save_mask, sparsity_report
from tgp.stages import StageRunner, load_net_weights

log = logging.getLogger("tgp")


def channels_last(cfg: DictConfig) -> bool:
    value = cfg.get("channels_last", "auto")
    if value == "auto":  # NHWC convolutions are faster on GPUs with tensor cores, slower on CPUs
        return str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda")
    return bool(value)


def build_net(runner: StageRunner, node: DictConfig, seed_offset: int = 0) -> torch.nn.Module:
    """Instantiate a network for the data's class count and channels, seeded (same init in every run)."""
    L.seed_everything(int(runner.cfg.seed) + seed_offset, workers=True, verbose=False)
    return instantiate(node, num_classes=runner.dm.num_classes, in_channels=runner.dm.in_channels)


def load_stage_net(runner: StageRunner, node: DictConfig, stage: str) -> torch.nn.Module:
    net = build_net(runner, node)
    net.load_state_dict(torch.load(Path(runner.run_dir / stage / "net.pt"), map_location="cpu", weights_only=True))
    return net


def make_module(runner: StageRunner, net, criterion, stage: str, budget: DictConfig, **kw) -> ClassifierModule:
    cfg = runner.cfg
    return ClassifierModule(
        net, criterion, stage=stage, optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        lr=float(budget.lr), epochs=int(budget.epochs), schedule=OmegaConf.to_container(cfg.schedule, resolve=True),
        channels_last=channels_last(cfg), num_classes=runner.dm.num_classes, **kw,
    )


def ce_loss() -> DistillationLoss:
    return DistillationLoss(kd_weight=0.0)


def kd_loss(cfg: DictConfig, runner: StageRunner | None = None, confidence: float | None = None) -> DistillationLoss:
    d = cfg.distill
    loss = DistillationLoss(
        kd_weight=float(d.kd_weight), temperature=float(d.temperature), kind=str(d.kind),
        standardize=bool(d.standardize), confidence=str(d.confidence),
    )
    if loss.needs_dataset_confidence and confidence is not None:
        loss.set_dataset_confidence(confidence)
    return loss


# -- stages -------------------------------------------------------------------------------------
def teacher_stage(runner: StageRunner) -> torch.nn.Module:
    """Train the dense teacher with CE, or load ``teacher.checkpoint``; returns the teacher network."""
    cfg = runner.cfg

    def run(folder: Path) -> dict:
        net = build_net(runner, cfg.teacher.net, seed_offset=1000)
        if cfg.teacher.checkpoint:
            load_net_weights(net, cfg.teacher.checkpoint, "teacher.checkpoint")
            atomic_torch_save(net.state_dict(), folder / "net.pt")
            return {"epochs": 0, "loaded_from": str(cfg.teacher.checkpoint), "top1_last": runner.evaluate(net)}
        module = make_module(runner, net, ce_loss(), "teacher", cfg.teacher)
        return runner.fit("teacher", folder, module, int(cfg.teacher.epochs))

    runner.run("teacher", ("teacher",), run)
    return load_stage_net(runner, cfg.teacher.net, "teacher")


def kd_pretrain_stage(runner: StageRunner, teacher) -> None:
    """Train the dense student under the frozen teacher with ``α·CA-KLD + (1−α)·CE``."""
    cfg = runner.cfg

    def run(folder: Path) -> dict:
        loss = kd_loss(cfg)
        extra = {}
        if loss.needs_dataset_confidence:
            beta = estimate_dataset_confidence(
                teacher.to(runner.device()).eval(), runner.dm.score_dataloader(), temperature=loss.temperature,
                standardize=loss.standardize, device=runner.device(),
            )
            loss.set_dataset_confidence(beta)
            extra["teacher_confidence"] = beta
        net = build_net(runner, cfg.model)
        module = make_module(runner, net, loss, "kd_pretrain", cfg.kd_pretrain, teacher=teacher)
        return {**runner.fit("kd_pretrain", folder, module, int(cfg.kd_pretrain.epochs)), **extra}

    runner.run("kd_pretrain", ("teacher", "model", "distill", "kd_pretrain"), run, parent="teacher")


def use_given_mask(runner: StageRunner, net, folder: Path) -> dict:
    """``pruning.mask``: a given mask replaces the score; checked against the model, saved as the stage's mask."""
    p = runner.cfg.pruning
    mask = load_mask(p.mask, net)
    save_mask(mask, folder / "mask.pt")
    atomic_save_json(sparsity_report(mask, net, target=float(p.sparsity)) | {"source": str(p.mask)},
                     folder / "sparsity_report.json")
    apply_mask(net, mask)
    return {"epochs": 0, "mask_from": str(p.mask), "top1_pruned": runner.evaluate(net)}


def prune_stage(runner: StageRunner, *, source: str, score: str, criterion=None, teacher=None,
                nodes=("pruning", "method"), seed: int | None = None) -> dict:
    """One-shot global pruning of the network trained by stage ``source`` (``OneShotPruning`` callback).

    Runs ``trainer.validate`` with the callback, so the pruned network's validation accuracy is
    measured by the same Trainer (and the same DDP processes) that pruned it.
    """
    cfg = runner.cfg
    p = cfg.pruning

    def run(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, source)
        if p.get("mask"):
            return use_given_mask(runner, net, folder)
        module = make_module(runner, net, criterion or ce_loss(), "prune", cfg.retrain, teacher=teacher)
        callback = OneShotPruning(
            sparsity=float(p.sparsity), out_dir=folder, score=score, score_batches=int(p.score_batches),
            accumulate=str(p.accumulate), exclude=list(p.exclude), min_layer_density=float(p.min_layer_density),
            seed=int(cfg.seed if seed is None else seed),
        )
        trainer = runner.trainer("prune", folder, callbacks=[callback])
        metrics = trainer.validate(module, datamodule=runner.dm, verbose=False)
        mask = load_mask(folder / "mask.pt", net)
        apply_mask(net, mask)
        val = metrics[0].get("prune/val/acc") if metrics else None
        return {"epochs": 0, "val_acc_pruned": None if val is None else float(val), "top1_pruned": runner.evaluate(net)}

    return runner.run("prune", nodes, run, parent=source)


def retrain_stage(runner: StageRunner, *, source: str, teacher=None, confidence: float | None = None) -> dict:
    """Sparse retraining with the fixed mask of the ``prune`` stage; KD or CE per ``retrain.kd``."""
    cfg = runner.cfg
    use_kd = bool(cfg.retrain.kd) and teacher is not None

    def run(folder: Path) -> dict:
        net = load_stage_net(runner, cfg.model, source)
        mask = load_mask(runner.run_dir / "prune" / "mask.pt", net)
        criterion = kd_loss(cfg, confidence=confidence) if use_kd else ce_loss()
        module = make_module(runner, net, criterion, "retrain", cfg.retrain, teacher=teacher if use_kd else None, mask=mask)
        return runner.fit("retrain", folder, module, int(cfg.retrain.epochs))

    nodes = ("retrain", "distill") if use_kd else ("retrain",)
    return runner.run("retrain", nodes, run, parent="prune")
