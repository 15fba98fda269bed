"""Training one stage: the Trainer with its loggers and callbacks, ``fit`` and ``evaluate``.

Nothing here knows about stage addressing (that is :mod:`tgp.stages`); a stage function calls
``Training.fit`` with the folder :class:`~tgp.stages.StageRunner` gave it.

**Exact resume** (:mod:`tgp.training.resume`): ``last.ckpt`` after every epoch, the randomness of
every epoch a function of ``(seed, stage, epoch, rank)``; a stage killed at any point and re-run ends
with the weights of one never interrupted.

**Hardware-independent meaning.** ``data.batch_size`` is the global batch (split over the DDP
ranks by the datamodule) and BatchNorm statistics are synchronized over the ranks whenever
there is more than one (:mod:`tgp.training.distributed`), so a stage means the same experiment on
1 or 8 processes.

**Cost** (:mod:`tgp.training.cost`): every fit counts the examples through its training step and
their FLOPs (per example, as the module's :meth:`~tgp.lit.ClassifierModule.training_flops` says),
all ranks together and checkpointed with each epoch, and records them in the stage's result with
the device it ran on.
"""

from __future__ import annotations

import copy
import logging
import signal
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tgp.data.base import mix_seed, per_rank_batch
from tgp.io import atomic_torch_save
from tgp.metrics.scoring import Evaluation, evaluate
from tgp.training.callbacks import config_callbacks, monitored
from tgp.training.cost import TrainingCost, device_name, stage_training_flops
from tgp.training.distributed import AllReduceBatchNormSync, ProcessGroupAtExit
from tgp.training.loggers import make_loggers
from tgp.training.resume import (AttemptLog, EpochEndCheckpoint, EpochSeed, PreemptionSignals, completed_epochs,
                                 merge_attempt_metrics)
from tgp.training.weights import strip_prefix

log = logging.getLogger("tgp")


class Training:
    """Trainers, fits and evaluations of one job's stages (``cfg``: the job's full config, read for
    infrastructure only — trainer, loggers, progress bar, seed; ``dm``: the job's datamodule)."""

    def __init__(self, cfg: DictConfig, dm, clock=None):
        self.cfg, self.dm = cfg, dm
        # () -> the running stage's tgp.stages.Attempts (or None): ticked at every epoch end.
        self.clock = clock or (lambda: None)

    @property
    def score_key(self) -> str:
        """The key the data's single score is logged under (``acc`` for images, ``score`` for text)."""
        return self.dm.scoring.logged if self.dm is not None else "acc"

    @property
    def monitor(self) -> str:
        """The validation metric model selection reads, without the stage prefix: ``callbacks.model_checkpoint.monitor``
        (its default ``val/acc`` is the data's single score, :func:`tgp.training.callbacks.monitored`)."""
        chosen = OmegaConf.select(self.cfg, "callbacks.model_checkpoint", default=None) or {}
        return monitored(str(chosen.get("monitor", "val/acc")), self.score_key)

    def device(self) -> torch.device:
        accel = str(OmegaConf.select(self.cfg, "trainer.accelerator", default="cpu"))
        return torch.device("cuda" if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")

    def trainer(self, stage: str, folder: Path, *, max_epochs: int | None = None, callbacks=(),
                log_version: str | None = None, early_stopping: bool = False, **kw) -> L.Trainer:
        """A Trainer for ``stage`` writing under ``folder``; under DDP BatchNorm is always synchronized.

        ``log_version``: the CSV logger's sub-folder of ``folder`` (``None``: ``folder`` itself).
        ``callbacks`` come first, then the config's ``callbacks`` group (:func:`config_callbacks`);
        ``early_stopping``: whether this Trainer may get the group's early stopping (:meth:`fit`'s do).
        """
        loggers = make_loggers(self.cfg, stage, folder, version=log_version)
        cbs = [*callbacks, *config_callbacks(self.cfg, stage, early_stopping=early_stopping, has_logger=bool(loggers),
                                             score=self.score_key)]
        from tgp.logs import ConsoleSettings, is_verbose

        cbs.append(ConsoleSettings(is_verbose(self.cfg)))  # verbose or quiet, also in DDP-spawned ranks
        cbs.append(ProcessGroupAtExit())  # a DDP rank exits with its process group destroyed
        args = dict(max_epochs=max_epochs, callbacks=cbs, logger=loggers or False, default_root_dir=str(folder), **kw)
        trainer = instantiate(self.cfg.trainer, **args)
        if trainer.world_size > 1:
            # The global batch is split over the ranks, so per-rank BatchNorm statistics would come
            # from batch/world samples: synchronize them whatever the config says, so one stage
            # means the same experiment on 1 or 8 processes. torch's SyncBatchNorm is GPU-only;
            # on CPUs (ddp_sim) an all-reduce BatchNorm does the same.
            # Each rank trains on its share of the one-process global batches, dealt by the datamodule
            # (tgp.data.global_batches), not on Lightning's DistributedSampler's other order.
            from lightning.pytorch.accelerators import CPUAccelerator

            args["use_distributed_sampler"] = False
            if isinstance(trainer.accelerator, CPUAccelerator):
                plugins = [*(args.pop("plugins", None) or []), AllReduceBatchNormSync()]
                trainer = instantiate(self.cfg.trainer, **args, sync_batchnorm=False, plugins=plugins)
            else:
                trainer = instantiate(self.cfg.trainer, **args, sync_batchnorm=True)
        return trainer

    def fit(self, stage: str, folder: Path, module, epochs: int, callbacks=(), datamodule=None) -> dict:
        """Fit ``module`` for ``epochs``, resuming from ``last.ckpt``; test the last and the best-val weights.

        Returns ``epochs`` (those trained: fewer than ``epochs_budget`` when early stopping ended it,
        ``stopped_early``), the test evaluation of the last and of the best-validation weights
        (:meth:`Evaluation.fields`: ``score_last``, ``metrics_last``, ``groups_last``, ``top1_last`` and the
        same ``_best_val``), ``val_acc_best`` (the best monitored validation value: the data's score by
        default), and what it trained with:
        ``world_size``, ``per_rank_batch`` and ``device``; and its cost (:class:`TrainingCost`):
        ``train_examples`` (examples through the training step, all ranks and epochs),
        ``train_flops_dense`` and ``train_flops`` (with the mask at each epoch's start); ``compile``: the
        ``torch.compile`` mode the fit ran with (``False``: eager; :mod:`tgp.lit.compiled`). A
        SIGTERM/SIGUSR1 raises ``SystemExit`` after the current batch (``last.ckpt`` keeps the last
        finished epoch).
        """
        from tgp.pruning.enforcer import MaskEnforcer

        folder = Path(folder)
        dm = datamodule if datamodule is not None else self.dm
        seed = int(OmegaConf.select(self.cfg, "seed", default=0) or 0)
        if hasattr(dm, "shuffle_seed"):  # a different training order per stage, fixed per (seed, stage)
            dm.shuffle_seed = mix_seed("shuffle", seed, stage) % 2**31
        logs = folder / "logs"
        attempt = 1 + max((int(p.name.split("_")[-1]) for p in logs.glob("attempt_*") if p.name.split("_")[-1].isdigit()),
                          default=0)
        chosen = OmegaConf.select(self.cfg, "callbacks.model_checkpoint", default=None) or {}
        best = ModelCheckpoint(  # the settings of callbacks.model_checkpoint; one best.ckpt per stage
            dirpath=folder, filename="best", monitor=f"{stage}/{self.monitor}",
            mode=str(chosen.get("mode", "max")), save_top_k=1, enable_version_counter=False,
        )
        last = EpochEndCheckpoint(folder / "last.ckpt", attempts=self.clock())
        signals = PreemptionSignals()
        cost = TrainingCost(stage_training_flops(module, dm))
        trainer = self.trainer(
            stage, folder, max_epochs=epochs, log_version=f"attempt_{attempt}",
            # cost last: it reads the mask after any callback that changes it at an epoch's start.
            callbacks=[EpochSeed(seed, stage), AttemptLog(logs / f"attempt_{attempt}"), best, last,
                       MaskEnforcer(), signals, *callbacks, cost], early_stopping=True,
        )
        # Before any process starts (a ConfigError here, not inside a spawned rank).
        batch = per_rank_batch(int(dm.batch_size), trainer.world_size) if hasattr(dm, "batch_size") else None
        ckpt = folder / "last.ckpt"
        if ckpt.exists():
            done = completed_epochs(ckpt)
            log.info("stage %s: resuming from last.ckpt at epoch %d (%d of %d epochs done)", stage, done, done, epochs)
        fitted = False
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt.exists() else None)
            fitted = True
        except SystemExit as e:  # Lightning's SIGTERMException: a SIGTERM or SIGUSR1 arrived
            signum = signals.received or signal.SIGTERM
            log.warning("stage %s preempted at epoch %d (%s): last.ckpt keeps its %d finished epochs; re-run the "
                        "same command to resume", stage, trainer.current_epoch, signal.Signals(signum).name,
                        trainer.current_epoch)
            # The shell's convention for "ended by a signal" (Lightning's exception exits 0); a
            # SystemExit still, so StageRunner records the attempt as preempted.
            raise type(e)(128 + int(signum)) from None
        finally:
            try:
                merge_attempt_metrics(logs, folder / "metrics.csv")
            except OSError:
                if fitted:
                    raise
                # else the fit's own error is the one to report (a full disk fails this write too)
        net = module.net
        # The epochs it trained: fewer than the budget only when early stopping ended the fit (last.ckpt
        # is written after every epoch, in rank 0 also under ddp_spawn).
        trained = completed_epochs(ckpt)
        trained = epochs if trained is None else min(trained, epochs)
        result = {"epochs": trained, "epochs_budget": epochs, "stopped_early": trained < epochs,
                  "world_size": int(trainer.world_size), "per_rank_batch": batch,
                  "device": device_name(trainer), "compile": getattr(module, "compile_mode", None) or False,
                  **cost.result(ckpt, trained), **self.scores(net, "last")}
        best_path = Path(best.best_model_path) if best.best_model_path else None
        if best_path and best_path.exists():
            state = torch.load(best_path, map_location="cpu", weights_only=False)
            best_net = copy.deepcopy(net)
            best_net.load_state_dict(strip_prefix(state["state_dict"], "net."))
            result.update(self.scores(best_net, "best_val"))
            score = next((v.get("best_model_score") for k, v in state.get("callbacks", {}).items()
                          if k.startswith("ModelCheckpoint") and v.get("monitor")), None)
            result["val_acc_best"] = float(score) if score is not None else None
        else:  # no validation ran (e.g. limit_val_batches=0): the last weights are all we have
            result.update({k.replace("_last", "_best_val"): v for k, v in self.scores(net, "last").items()})
        atomic_torch_save(net.state_dict(), folder / "net.pt")
        return result

    def evaluate(self, net: nn.Module) -> Evaluation:
        """The data's metrics (``dm.scoring``) on the test split, per evaluation set
        (``dm.test_group_dataloaders()``), in this process."""
        return evaluate(net, self.dm.test_group_dataloaders(), self.dm.scoring, self.device())

    def scores(self, net: nn.Module, which: str) -> dict:
        """:meth:`evaluate` as the stage-result fields ``score_<which>``, ``metrics_<which>``, ``groups_<which>``
        and ``top1_<which>`` (the score when the data's score is a top-1, else None)."""
        return self.evaluate(net).fields(which, top1=self.dm.scoring.name == "top1")
