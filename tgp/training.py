"""Training one stage: the Trainer, its loggers and callbacks, ``fit`` and ``evaluate``.

Nothing here knows about stage addressing (that is :mod:`tgp.stages`); a stage function calls
``Training.fit`` with the folder :class:`~tgp.stages.StageRunner` gave it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tgp.errors import CheckpointMismatchError
from tgp.io import atomic_torch_save

log = logging.getLogger("tgp")


class Training:
    """Trainers, fits and evaluations of one job's stages (``cfg``: the job's full config, read for
    infrastructure only — trainer, loggers, progress bar; ``dm``: the job's datamodule)."""

    def __init__(self, cfg: DictConfig, dm, clock=None):
        self.cfg, self.dm = cfg, dm
        # () -> the running stage's tgp.stages.Attempts (or None): ticked at every epoch end.
        self.clock = clock or (lambda: None)

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

    def fit(self, stage: str, folder: Path, module, epochs: int, callbacks=(), datamodule=None) -> dict:
        """Fit ``module`` for ``epochs`` (resuming from ``last.ckpt``); test the last and the best-val weights."""
        from tgp.pruning.enforcer import MaskEnforcer

        dm = datamodule if datamodule is not None else self.dm
        ckpt = ModelCheckpoint(
            dirpath=folder, filename="best", monitor=f"{stage}/val/acc", mode="max",
            save_last=True, save_top_k=1, enable_version_counter=False,
        )
        trainer = self.trainer(stage, folder, max_epochs=epochs, callbacks=[ckpt, MaskEnforcer(), *callbacks])
        last = folder / "last.ckpt"
        if last.exists():
            log.info("stage %s: resuming from %s", stage, last)
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
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
