"""Training one stage: the Trainer, its loggers and callbacks, ``fit`` and ``evaluate``.

Nothing here knows about stage addressing (that is :mod:`tgp.stages`); a stage function calls
``Training.fit`` with the folder :class:`~tgp.stages.StageRunner` gave it.

**Exact resume.** ``fit`` writes ``last.ckpt`` at the end of every epoch (after its validation)
and resumes from it, and the randomness of every training epoch is a function of
``(seed, stage, epoch, rank)`` only (:class:`EpochSeed`), so a stage killed at any point and
re-run ends with the same weights as one that was never interrupted. SIGTERM and SIGUSR1
(SLURM's preemption warnings) stop the stage at the next batch; at most one epoch is redone.
Each attempt logs to ``logs/attempt_<k>/metrics.csv``; ``metrics.csv`` is their merge, every
epoch exactly once.

**Hardware-independent meaning.** ``data.batch_size`` is the global batch: under DDP each rank
trains on its contiguous share of each one-process batch (:mod:`tgp.data.global_batches`), and
BatchNorm statistics are synchronized over the ranks whenever there is more than one, so a stage
computes the same weights on 1 or 8 processes, up to the order of floating-point reductions.

**Cost.** Every fit counts the examples through its training step and their FLOPs
(:class:`TrainingCost`, per-example counts from :mod:`tgp.report.flops`), all ranks together and
checkpointed with each epoch, and records them in the stage's result with the device it ran on.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import csv
import io
import json
import logging
import random
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.layer_sync import LayerSync
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tgp.data.base import mix_seed, per_rank_batch
from tgp.errors import CheckpointMismatchError
from tgp.integrity import file_record
from tgp.io import NO_ROOM, atomic_torch_save, atomic_write_bytes, no_room, tensor_bytes

log = logging.getLogger("tgp")


class Training:
    """Trainers, fits and evaluations of one job's stages (``cfg``: the job's full config, read for
    infrastructure only — trainer, loggers, progress bar, seed; ``dm``: the job's datamodule)."""

    def __init__(self, cfg: DictConfig, dm, clock=None):
        self.cfg, self.dm = cfg, dm
        # () -> the running stage's tgp.stages.Attempts (or None): ticked at every epoch end.
        self.clock = clock or (lambda: None)

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
        cbs = [*callbacks, *config_callbacks(self.cfg, stage, early_stopping=early_stopping, has_logger=bool(loggers))]
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
        ``stopped_early``), ``top1_last``, ``top1_best_val``, ``val_acc_best``, and what it trained with:
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
            dirpath=folder, filename="best", monitor=f"{stage}/{chosen.get('monitor', 'val/acc')}",
            mode=str(chosen.get("mode", "max")), save_top_k=1, enable_version_counter=False,
        )
        last = EpochEndCheckpoint(folder / "last.ckpt", attempts=self.clock())
        signals = PreemptionSignals()
        cost = TrainingCost(module_training_flops(module, dm))
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
                  **cost.result(ckpt, trained), "top1_last": self.evaluate(net)}
        best_path = Path(best.best_model_path) if best.best_model_path else None
        if best_path and best_path.exists():
            state = torch.load(best_path, map_location="cpu", weights_only=False)
            best_net = copy.deepcopy(net)
            best_net.load_state_dict(strip_prefix(state["state_dict"], "net."))
            result["top1_best_val"] = self.evaluate(best_net)
            score = next((v.get("best_model_score") for k, v in state.get("callbacks", {}).items()
                          if k.startswith("ModelCheckpoint") and v.get("monitor")), None)
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


# -- the config's callbacks group ----------------------------------------------------------------
def completed_epochs(ckpt: Path) -> int | None:
    """Epochs finished by the fit whose per-epoch ``last.ckpt`` this is (None without one)."""
    if not Path(ckpt).exists():
        return None
    return int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1


def config_callbacks(cfg: DictConfig, stage: str, *, early_stopping: bool = False,
                     has_logger: bool = True) -> list[Callback]:
    """The ``callbacks`` group's callbacks for one stage's Trainer: every entry with a ``_target_`` and
    ``enabled: true`` (``model_checkpoint`` is read by :meth:`Training.fit` instead). A ``monitor`` is
    prefixed with the stage (``val/acc`` -> ``<stage>/val/acc``); early stopping only where
    ``early_stopping`` (the fitted stages) and the rich progress bar only while the Trainer has a bar."""
    out = []
    for name, node in (OmegaConf.select(cfg, "callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        settings = OmegaConf.to_container(node, resolve=True)
        if not settings.pop("enabled", True):
            continue
        target = str(settings["_target_"])
        if target.endswith("EarlyStopping") and not early_stopping:
            continue
        if target.endswith("ProgressBar") and not OmegaConf.select(cfg, "trainer.enable_progress_bar", default=True):
            continue  # Lightning refuses a progress-bar callback on a Trainer without a bar
        if target.endswith("LearningRateMonitor") and not has_logger:
            continue  # Lightning refuses an LR monitor on a Trainer without a logger (logger=none)
        if "monitor" in settings:
            settings["monitor"] = f"{stage}/{settings['monitor']}"
        if target.endswith("StageLearningRateMonitor"):
            settings["stage"] = stage
        out.append(instantiate(settings))
    return out


class StageLearningRateMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor with the stage's prefix (``<stage>/train/lr-SGD``: the stages of
    a job share its W&B run, and every other metric is stage-prefixed too) and the ``epoch`` in each
    row, so :func:`merge_attempt_metrics` keeps a resumed stage's rows exactly once."""

    def __init__(self, stage: str = "", **kw):
        super().__init__(**kw)
        self.stage = stage

    def _extract_stats(self, trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        if self.stage:
            stats = {f"{self.stage}/train/{k}": v for k, v in stats.items()}
        return {**stats, "epoch": trainer.current_epoch} if stats else stats


# -- exact resume -------------------------------------------------------------------------------
class EpochSeed(Callback):
    """Reseeds Python's, NumPy's and torch's global RNGs at the start of every training epoch from
    ``(seed, stage, epoch, rank)``: whatever ran before (an earlier attempt, another stage, a
    resume), the epoch's draws — RandomSampler orders, augmentation in the main process, dropout —
    are the same. ``on_train_epoch_start`` runs before the epoch's first batch is drawn: Lightning
    creates the loader iterator earlier but samplers and transforms draw lazily, on the first batch
    (sized loaders are not prefetched)."""

    def __init__(self, seed: int, stage: str):
        self.seed, self.stage = int(seed), str(stage)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        s = mix_seed("epoch", self.seed, self.stage, trainer.current_epoch, trainer.global_rank)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)


class EpochEndCheckpoint(Checkpoint):
    """``last.ckpt`` rewritten after every training epoch (Lightning's ``save_last`` only rewrites it
    when a top-k checkpoint is saved, i.e. when validation improved), then the stage's attempt
    record ticked with the completed epochs (so a ``kill -9`` still counts the time up to there).

    The checkpoint is taken in ``on_train_epoch_end`` after the best-val checkpoint (a
    :class:`Checkpoint` runs after the others, in list order), the state Lightning resumes exactly,
    but written as ``last.ckpt.pending`` and renamed to ``last.ckpt`` only when the epoch is entirely
    over (next epoch's start, end of training, a preemption after the epoch): Lightning logs the
    epoch's training metrics after ``on_train_epoch_end``, and a kill in between must not leave a
    ``last.ckpt`` that skips an epoch whose row never reached metrics.csv. Its size and SHA-256 are
    recorded in the attempt (``attempts.json``), so a resume trusts only the checkpoint it wrote
    (:func:`tgp.integrity.checkpoint_problem`).
    """

    def __init__(self, path: Path, attempts=None):
        self.path = Path(path)
        self.pending = self.path.with_name(self.path.name + ".pending")
        self.attempts = attempts  # tgp.stages.Attempts (picklable: ddp_spawn sends it to the ranks)
        self._pending_done: int | None = None  # completed epochs in the pending checkpoint

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        try:
            trainer.save_checkpoint(self.pending)  # every rank calls it, rank 0 writes (atomically: fsspec transaction)
        except OSError as e:
            if e.errno not in NO_ROOM:
                raise
            # What it needed at least: the weights and the optimizer state.
            needed = tensor_bytes(pl_module.state_dict()) + tensor_bytes([o.state_dict() for o in trainer.optimizers])
            written = self.pending.stat().st_size if self.pending.exists() else None
            raise no_room(e.errno, self.pending, needed=needed, written=written) from e
        self._pending_done = trainer.current_epoch + 1

    def _promote(self, trainer) -> None:
        if self._pending_done is None:
            return
        if trainer.is_global_zero:
            if self.attempts is None:
                self.pending.replace(self.path)
            else:  # its record first: a crash between the two leaves last.ckpt matching one of them
                record = file_record(self.pending)
                self.attempts.tick(last_ckpt_next=record)
                self.pending.replace(self.path)
                self.attempts.tick(epoch=self._pending_done, last_ckpt=record, last_ckpt_next=None)
        self._pending_done = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._promote(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._promote(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A SIGTERM noticed at the end of an epoch: its metrics are logged, keep the epoch.
        if isinstance(exception, SystemExit) and self._pending_done is not None \
                and trainer.fit_loop.epoch_progress.current.completed >= self._pending_done:
            self._promote(trainer)


class AttemptLog(Callback):
    """Writes ``start.json`` (the epoch this attempt starts from, i.e. resumed at) into the attempt's
    log folder; :func:`merge_attempt_metrics` drops an earlier attempt's rows from there on."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.folder / "start.json", lambda f: f.write(json.dumps({"epoch": trainer.current_epoch}).encode()))


def merge_attempt_metrics(logs: Path, out: Path) -> None:
    """Merge ``logs/attempt_<k>/metrics.csv`` into ``out``, every epoch exactly once.

    Rows of attempt ``k`` whose epoch is at or after the epoch the next attempt resumed from were
    redone by that attempt and are dropped. Written atomically; nothing when no attempt logged.
    """
    attempts = sorted((p for p in Path(logs).glob("attempt_*") if p.name.split("_")[-1].isdigit()),
                      key=lambda p: int(p.name.split("_")[-1]))
    starts = []
    for p in attempts:
        start = p / "start.json"
        starts.append(json.loads(start.read_text())["epoch"] if start.exists() else None)
    rows, columns = [], set()
    for i, p in enumerate(attempts):
        if starts[i] is None or not (p / "metrics.csv").exists():  # killed before it trained
            continue
        cutoff = next((s for s in starts[i + 1:] if s is not None), None)
        with open(p / "metrics.csv", newline="") as f:
            for row in csv.DictReader(f):
                epoch = row.get("epoch")
                if cutoff is not None and epoch not in (None, "") and int(float(epoch)) >= cutoff:
                    continue
                rows.append(row)
                columns.update(row)
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=sorted(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(out), lambda f: f.write(buf.getvalue().encode()))


class PreemptionSignals(Callback):
    """SIGUSR1 (SLURM's warning before preemption, ``--signal=USR1@<s>``) stops the fit like SIGTERM:
    Lightning raises ``SIGTERMException`` (a ``SystemExit``) at the next batch. Installed in every
    process that trains (before Lightning registers its own handlers, so its SLURM auto-requeue
    handler, which would write a mid-epoch checkpoint we cannot resume exactly, stays out) and
    restored when the fit ends."""

    def __init__(self):
        self._previous = None
        self.received: int | None = None  # SIGUSR1 once it arrived (SIGTERM is Lightning's)

    def setup(self, trainer, pl_module, stage: str) -> None:
        def stop(signum, frame):
            log.info("received signal %d: stopping after this batch", signum)
            self.received = signum
            trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets

        with contextlib.suppress(ValueError):  # not the main thread: signals cannot be handled here
            self._previous = signal.signal(signal.SIGUSR1, stop)

    def _restore(self) -> None:
        if self._previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def __getstate__(self) -> dict:  # a handler is not picklable (ddp_spawn)
        return {"_previous": None, "received": None}


class ProcessGroupAtExit(Callback):
    """Destroys a DDP rank's process group when the rank's interpreter exits, before it finalizes.

    Lightning does this for NCCL only. A ``ddp_spawn`` rank that exits with its gloo group
    alive lets gloo's worker threads drop their last work (and the tensors it holds) while the
    interpreter is being torn down; a thread that then needs the GIL is unwound by
    ``pthread_exit`` and the rank dies with "terminate called without an active exception"
    (SIGABRT) *after* its stage finished, failing the job — rarely (one smoke pipeline in ~60 on a
    loaded 2-core machine), which makes it the worst kind of failure for a long sweep.
    Destroying the group in an ``atexit`` handler joins those threads while Python is still whole.
    Registered once per process, in the rank (``setup`` runs after the group is initialized),
    and a no-op where there is no group (one process, or already destroyed).
    """

    _registered = False  # per process: a spawned rank imports this module afresh

    def setup(self, trainer, pl_module, stage: str) -> None:
        if dist.is_available() and dist.is_initialized() and not ProcessGroupAtExit._registered:
            atexit.register(destroy_process_group)
            ProcessGroupAtExit._registered = True


def destroy_process_group() -> None:
    """``torch.distributed.destroy_process_group()`` if there is one (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- cost ----------------------------------------------------------------------------------------
def module_training_flops(module, dm):
    """The :class:`~tgp.report.flops.TrainingFlops` of ``module``'s training step on ``dm``'s
    examples: the student's forward + backward, plus what else runs per example — the frozen
    teacher's forward when the loss uses it (KD weight > 0), SDP's frozen dense copy's
    ``forward_features`` when its cross-correlation term is on, CS-KD's partner half forward only.
    ``None`` when the datamodule does not say its input shape (the cost is then not recorded)."""
    from tgp.report.flops import TrainingFlops

    try:
        shape = (int(dm.in_channels), int(dm.image_size), int(dm.image_size))
    except (AttributeError, TypeError, ValueError):
        return None
    teacher, call = getattr(module, "teacher", None), None
    if hasattr(module, "cc_weight"):  # SelfDistilledPruningModule: the dense copy's features
        teacher, call = (teacher, "forward_features") if float(module.cc_weight) > 0 else (None, None)
    elif teacher is not None and not float(getattr(module.criterion, "kd_weight", 0.0) or 0.0) > 0:
        teacher = None  # ClassifierModule runs the teacher only for a KD term
    return TrainingFlops(module.net, shape, teacher, call, partners=getattr(module, "regime", None) == "cskd")


def device_name(trainer) -> str:
    """``"cpu"`` or the CUDA device's name, prefixed with the process count under DDP (``"2x cpu"``)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    name = "cpu"
    if isinstance(trainer.accelerator, CUDAAccelerator) and torch.cuda.is_available():
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    elif type(trainer.accelerator).__name__ != "CPUAccelerator":
        name = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
    return f"{trainer.world_size}x {name}" if trainer.world_size > 1 else name


class TrainingCost(Callback):
    """Examples through the training step and their FLOPs, summed over batches and all DDP ranks.

    Each batch's size goes into a per-epoch count; at the epoch's end the counts are all-reduced
    and added to the totals, which are checkpointed with the epoch (``state_dict``), so a resumed
    stage ends with the totals of an uninterrupted one (a redone partial epoch costs seconds but
    is not counted twice). FLOPs per batch: :meth:`TrainingFlops.batch` with the densities of the
    module's mask at the epoch's start (SDP changes it at every epoch start; a fixed mask gives
    the same number every epoch).
    """

    def __init__(self, flops=None):
        self.flops = flops  # tgp.report.flops.TrainingFlops or None
        self.examples = self.flops_dense = self.flops_nonzero = self.epochs = 0
        self._epoch = [0, 0, 0]
        self._densities: dict[str, float] = {}
        self._per_batch: dict[int, tuple[int, int]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        from tgp.report.flops import mask_densities

        self._epoch = [0, 0, 0]
        self._densities = mask_densities(getattr(pl_module, "mask", None))
        self._per_batch: dict[int, tuple[int, int]] = {}  # batch size -> FLOPs, fixed within an epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        n = int(len(x))  # a shape, no device sync
        if n not in self._per_batch:  # no per-step loop over layers: once per batch size and epoch
            self._per_batch[n] = self.flops.batch(n, self._densities) if self.flops is not None else (0, 0)
        dense, nonzero = self._per_batch[n]
        self._epoch[0] += n
        self._epoch[1] += dense
        self._epoch[2] += nonzero

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = torch.tensor(self._epoch, dtype=torch.int64, device=pl_module.device)
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        examples, dense, nonzero = (int(v) for v in counts.cpu().tolist())
        self.examples += examples
        self.flops_dense += dense
        self.flops_nonzero += nonzero
        self.epochs += 1
        self._epoch = [0, 0, 0]

    def state_dict(self) -> dict:
        return {"examples": self.examples, "flops_dense": self.flops_dense, "flops": self.flops_nonzero,
                "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.examples, self.flops_dense = int(state["examples"]), int(state["flops_dense"])
        self.flops_nonzero, self.epochs = int(state["flops"]), int(state["epochs"])

    def result(self, ckpt: Path | None = None, epochs: int = 0) -> dict:
        """The stage's cost fields. Read from ``ckpt`` (this callback's state in ``last.ckpt``) when it
        has them: the ranks of ``ddp_spawn`` counted in other processes; else this process's count
        (a fit without checkpoints, e.g. a ``max_steps`` warm-up, can attach this callback and merge
        ``result()``). ``None`` when fewer than ``epochs`` epochs were counted (a stage resumed from
        a checkpoint written before the count existed)."""
        state = self.state_dict()
        if ckpt is not None and Path(ckpt).exists():
            with contextlib.suppress(Exception):
                saved = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("callbacks", {})
                state = saved.get(self.state_key, state)
        counted = int(state.get("epochs", 0)) >= int(epochs)
        flops = self.flops is not None and counted
        return {
            "train_examples": int(state["examples"]) if counted else None,
            "train_flops_dense": int(state["flops_dense"]) if flops else None,
            "train_flops": int(state["flops"]) if flops else None,
            "train_flops_mask": "at each epoch start",
        }


# -- synchronized BatchNorm on any device -------------------------------------------------------
class _AllReduceBatchNorm:
    """Mixin: in training under DDP, normalize with the mean and variance of the global batch, computed
    as one process's BatchNorm computes them (:mod:`tgp.sync_bn`), as ``torch.nn.SyncBatchNorm`` does on GPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from tgp.sync_bn import global_batch_norm

        return global_batch_norm(self, x)


class AllReduceBatchNorm1d(_AllReduceBatchNorm, nn.BatchNorm1d):
    pass


class AllReduceBatchNorm2d(_AllReduceBatchNorm, nn.BatchNorm2d):
    pass


class AllReduceBatchNorm3d(_AllReduceBatchNorm, nn.BatchNorm3d):
    pass


_SYNCED = {nn.BatchNorm1d: AllReduceBatchNorm1d, nn.BatchNorm2d: AllReduceBatchNorm2d, nn.BatchNorm3d: AllReduceBatchNorm3d}


class AllReduceBatchNormSync(LayerSync):
    """Lightning layer-sync plugin: BatchNorm layers synchronized over the DDP ranks on any device
    (the class of each layer is swapped in place, so parameters, buffers and state_dict keys stay)."""

    def apply(self, model: nn.Module) -> nn.Module:
        for m in model.modules():
            if type(m) in _SYNCED:
                m.__class__ = _SYNCED[type(m)]
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        back = {v: k for k, v in _SYNCED.items()}
        for m in model.modules():
            if type(m) in back:
                m.__class__ = back[type(m)]
        return model


def make_loggers(cfg: DictConfig, stage: str, folder: Path, version: str | None = None) -> list:
    """Instantiate ``cfg.logger`` (a dict of named loggers) for one stage; the CSV logger writes to
    ``folder/logs/<version>/`` (Lightning's CSVLogger deletes an existing metrics.csv, so every
    attempt gets its own) or, with ``version=None``, to ``folder`` itself."""
    out = []
    for name, lcfg in (OmegaConf.select(cfg, "logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        if lcfg._target_.endswith("CSVLogger"):
            where = dict(name="", version="") if version is None else dict(name="logs", version=version)
            out.append(instantiate(lcfg, save_dir=str(folder), **where))
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
