"""Exact resume of a fit: per-epoch seeds, the per-epoch ``last.ckpt``, attempt logs and their merge,
and SLURM's preemption signal.

``fit`` writes ``last.ckpt`` at the end of every epoch (after its validation) and resumes from it,
and the randomness of every training epoch is a function of ``(seed, stage, epoch, rank)`` only
(:class:`EpochSeed`), so a stage killed at any point and re-run ends with the same weights as one
that was never interrupted. SIGTERM and SIGUSR1 (SLURM's preemption warnings) stop the stage at the
next batch; at most one epoch is redone. Each attempt logs to ``logs/attempt_<k>/metrics.csv``;
``metrics.csv`` is their merge, every epoch exactly once (:func:`merge_attempt_metrics`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import random
import signal
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from tgp.data.base import mix_seed
from tgp.integrity import file_record
from tgp.io import NO_ROOM, atomic_write_bytes, no_room, tensor_bytes

log = logging.getLogger("tgp")


def completed_epochs(ckpt: Path) -> int | None:
    """Epochs finished by the fit whose per-epoch ``last.ckpt`` this is (None without one)."""
    if not Path(ckpt).exists():
        return None
    return int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1



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
