"""Stages: restartable, content-addressed units of work, and the helpers they share.

A stage (``teacher``, ``kd_pretrain``, ``prune``, ``retrain``, ...) writes its artifacts to
one folder and finishes by writing ``result.json`` there (atomically). A stage whose
``result.json`` exists is skipped; one that was interrupted resumes from its ``last.ckpt``.

The folder is addressed by a hash of exactly the settings the stage depends on, plus the key
of the stage before it. With ``paths.stage_store`` set (the default), the folder lives in that
store and ``<run_dir>/<stage>`` links to it, so runs that share a prefix — one KD-pretrained
student pruned at five sparsities — compute it once. Two jobs that need the same stage at the
same time serialize on a file lock.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tgp.errors import CheckpointMismatchError
from tgp.io import atomic_save_json, atomic_torch_save, read_json
from tgp.naming import INFRA_KEYS

log = logging.getLogger("tgp")

BASE_NODES = ("data", "trainer", "optimizer", "schedule", "seed")


def config_digest(cfg: DictConfig, nodes, parent: str | None = None) -> str:
    """Hash of the resolved ``nodes`` of ``cfg`` (minus infrastructure keys) and ``parent``."""
    picked = {}
    for node in nodes:
        value = OmegaConf.select(cfg, node)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
            for k in INFRA_KEYS.get(node, ()):
                value.pop(k, None)
        picked[node] = value
    blob = json.dumps({"parent": parent, "nodes": picked}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class StopPipeline(Exception):
    """Raised after the stage named by ``stop_after`` finished: the run ends early, resumable."""


class StageRunner:
    """Runs the stages of one job in ``run_dir``; remembers their results and keys."""

    def __init__(self, cfg: DictConfig, run_dir: Path, datamodule):
        self.cfg, self.run_dir, self.dm = cfg, Path(run_dir), datamodule
        store = OmegaConf.select(cfg, "paths.stage_store")
        self.store = Path(store) if store else None
        self.results: dict[str, dict] = {}
        self.keys: dict[str, str] = {}
        self.skipped: list[str] = []

    # -- addressing -------------------------------------------------------------------------
    def stage_dir(self, name: str, key: str) -> Path:
        link = self.run_dir / name
        if self.store is None:
            return link
        target = self.store / f"{name}-{key}"
        target.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()  # the config changed: point the run at the matching stage
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=True)
        return target

    def run(self, name: str, nodes, fn: Callable[[Path], dict], parent: str | None = None) -> dict:
        """Run ``fn(stage_dir) -> result`` unless ``result.json`` says it already ran."""
        key = config_digest(self.cfg, (*BASE_NODES, *nodes), self.keys.get(parent) if parent else None)
        self.keys[name] = key
        folder = self.stage_dir(name, key)
        done = folder / "result.json"
        with file_lock(folder.parent / f".{folder.name}.lock"):
            if done.exists():
                log.info("stage %s: done already (%s), skipped", name, folder)
                self.skipped.append(name)
            else:
                log.info("stage %s: running in %s", name, folder)
                start = time.perf_counter()
                result = fn(folder)
                result.setdefault("seconds", time.perf_counter() - start)
                result["key"] = key
                atomic_save_json(result, done)
        self.results[name] = read_json(done)
        if OmegaConf.select(self.cfg, "stop_after") == name:
            raise StopPipeline(name)
        return self.results[name]

    # -- training ---------------------------------------------------------------------------
    def device(self) -> torch.device:
        accel = str(OmegaConf.select(self.cfg, "trainer.accelerator", default="cpu"))
        return torch.device("cuda" if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")

    def trainer(self, stage: str, folder: Path, *, max_epochs: int | None = None, callbacks=(), **kw) -> L.Trainer:
        loggers = make_loggers(self.cfg, stage, folder)
        cbs = list(callbacks)
        if OmegaConf.select(self.cfg, "trainer.enable_progress_bar", default=True):
            from lightning.pytorch.callbacks import RichProgressBar

            cbs.append(RichProgressBar())
        return instantiate(
            self.cfg.trainer, max_epochs=max_epochs, callbacks=cbs, logger=loggers or False,
            default_root_dir=str(folder), **kw,
        )

    def fit(self, stage: str, folder: Path, module, epochs: int, callbacks=()) -> dict:
        """Fit ``module`` for ``epochs`` (resuming from ``last.ckpt``); test the last and the best-val weights."""
        from tgp.pruning.enforcer import MaskEnforcer

        ckpt = ModelCheckpoint(
            dirpath=folder, filename="best", monitor=f"{stage}/val/acc", mode="max",
            save_last=True, save_top_k=1, enable_version_counter=False,
        )
        trainer = self.trainer(stage, folder, max_epochs=epochs, callbacks=[ckpt, MaskEnforcer(), *callbacks])
        last = folder / "last.ckpt"
        if last.exists():
            log.info("stage %s: resuming from %s", stage, last)
        trainer.fit(module, datamodule=self.dm, ckpt_path=str(last) if last.exists() else None)
        net = module.net
        result = {"epochs": epochs, "top1_last": self.evaluate(net)}
        best_path = Path(ckpt.best_model_path) if ckpt.best_model_path else None
        if best_path and best_path.exists():
            state = torch.load(best_path, map_location="cpu", weights_only=False)
            best_net = copy.deepcopy(net)
            best_net.load_state_dict(strip_prefix(state["state_dict"], "net."))
            result["top1_best_val"] = self.evaluate(best_net)
            score = next((v.get("best_model_score") for k, v in state.get("callbacks", {}).items()
                          if k.startswith("ModelCheckpoint")), None)
            result["val_acc_best"] = float(score) if score is not None else None
        else:  # no validation ran (e.g. limit_val_batches=0): the last weights are all we have
            result["top1_best_val"] = result["top1_last"]
        atomic_torch_save(net.state_dict(), folder / "net.pt")
        return result

    @torch.inference_mode()
    def evaluate(self, net: nn.Module, loader=None) -> float:
        """Top-1 accuracy (torchmetrics) on the test split, in this process."""
        device = self.device()
        was_training = net.training
        net = net.to(device).eval()
        metric = MulticlassAccuracy(self.dm.num_classes, average="micro").to(device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            for x, y in loader if loader is not None else self.dm.test_dataloader():
                metric.update(net(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        net.train(was_training)
        return float(metric.compute())


def make_loggers(cfg: DictConfig, stage: str, folder: Path) -> list:
    """Instantiate ``cfg.logger`` (a dict of named loggers) for one stage."""
    out = []
    for name, lcfg in (OmegaConf.select(cfg, "logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        if lcfg._target_.endswith("CSVLogger"):
            out.append(instantiate(lcfg, save_dir=str(folder), name="", version=""))
        elif lcfg._target_.endswith("WandbLogger"):  # one W&B run per job, shared by its stages
            from tgp.logging_wandb import job_logger

            out.append(job_logger(cfg, lcfg))
        else:
            out.append(instantiate(lcfg))
    return out


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_net_weights(net: nn.Module, path: str | Path, setting: str) -> None:
    """Load a plain state_dict, a ``net.pt`` or a Lightning checkpoint into ``net``, or explain why not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"{setting}={str(path)!r}: no such file. Fix: point {setting} to an existing checkpoint.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the file is not a readable torch checkpoint ({type(e).__name__}). "
            "Fix: point it to a Lightning .ckpt or a state_dict saved with torch.save."
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{setting}={str(path)!r}: holds no state_dict. Fix: save net.state_dict().")
    if any(k.startswith("net.") for k in state):
        state = strip_prefix(state, "net.")
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != net.fc.out_features:
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the checkpoint classifies {fc.shape[0]} classes but the data has "
            f"{net.fc.out_features}. Fix: use a teacher trained on this dataset, or leave {setting} unset to train one."
        )
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the checkpoint does not fit the architecture {getattr(net, 'arch', type(net).__name__)} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mis-shaped tensors, e.g. "
            f"{(missing + unexpected + mismatched)[:3]}). Fix: select the teacher config that matches the checkpoint "
            "(teacher=<arch> teacher.net.width=<width>)."
        )
    net.load_state_dict(state)
