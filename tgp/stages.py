"""Stages: restartable, content-addressed units of work — addressing, locking, skipping, ``stop_after``.

A stage writes its artifacts to one folder and finishes by writing ``result.json`` there
(atomically), with the size and SHA-256 of every file it wrote. A stage whose ``result.json``
exists is reused once those files verify; a damaged one is set aside and computed again, and one
that was interrupted resumes (see :mod:`tgp.integrity`, :mod:`tgp.training`). Nothing here builds
a Trainer.

**Identity by construction.** Every stage is an instance of a :class:`StageKind`, declared once
as a module constant: its name, the config nodes it ``reads`` and a ``version``. The stage's
key is a hash of exactly those nodes (plus :data:`BASE_NODES`, which every stage reads),
the kind and its version, and the key of the stage before it. The stage function receives a
*view* of the config that holds only those nodes — reading anything else raises — and may not
close over the full config, so a stage cannot depend on a setting its key omits. Bump a kind's
``version`` whenever its computation changes: old artifacts are then never reused.

With ``paths.stage_store`` set (the default), the folder lives in that store and
``<run_dir>/<stage>`` links to it, so runs that share a prefix — one KD-pretrained student pruned
at five sparsities — compute it once. Two jobs that need the same stage serialize on a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from tgp.integrity import check_stage, record_files, resumable, salvage, set_aside
from tgp.io import atomic_save_json, disk_full_error, read_json, remove_partial_files
from tgp.logs import DETAIL
from tgp.naming import INFRA_KEYS

log = logging.getLogger("tgp")

# Nodes every stage reads: its data, how it trains (with its best-checkpoint and early-stopping
# callbacks), the seed.
BASE_NODES = ("data", "trainer", "callbacks", "optimizer", "schedule", "seed")
# Settings a stage may read that never change what it computes (memory layout, torch.compile: float
# rounding only, see tgp.lit.compiled); in every view, in no key.
INFRA_NODES = ("channels_last", "compile", "compile_mode")


KINDS: dict[str, "StageKind"] = {}  # every kind declared anywhere (the key-coverage test walks them)


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: a unique ``name``, the config nodes it ``reads`` (dotted paths; a node
    covers everything below it), a ``version`` bumped whenever its computation changes, and the
    ``folder`` its stages write to (default: the name; a round number may be appended at run)."""

    name: str
    reads: tuple[str, ...] = ()
    version: int = 1
    folder: str | None = None
    # (config) -> whether the stage's result depends on the number of DDP processes (per-rank state or
    # randomness the global batches cannot make equal): then a world size above 1 joins its key, so a
    # store never hands one variant to a job that asked for the other. It may read only ``reads``.
    per_process: Callable[[DictConfig], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        known = KINDS.setdefault(self.name, self)
        if known != self:
            raise RuntimeError(f"stage kind {self.name!r} declared twice with different settings")

    @property
    def nodes(self) -> tuple[str, ...]:
        return (*BASE_NODES, *self.reads)

    @property
    def folder_name(self) -> str:
        return self.folder or self.name


def _picked(cfg: DictConfig, nodes) -> dict:
    picked = {}
    for node in nodes:
        value = OmegaConf.select(cfg, node, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, dict):
            for k in INFRA_KEYS.get(node, ()):
                value.pop(k, None)
        picked[node] = value
    return picked


def _draws_per_rank(cfg: DictConfig, kind: StageKind) -> bool:
    """Whether a network the stage reads draws random numbers in its training forward that DDP draws per
    rank: a Transformer's dropout (its config names a ``tokenizer``; the image networks have no dropout).
    :class:`~tgp.training.EpochSeed` seeds each rank apart, so such a stage cannot equal its one-process
    run and its key takes the world size (the same rule as a kind's own ``per_process``)."""
    for node in ("model", "teacher"):
        if node in kind.reads:
            value = OmegaConf.select(cfg, node, default=None)
            net = value.get("net", value) if isinstance(value, DictConfig) and node == "teacher" else value
            if isinstance(net, DictConfig) and "tokenizer" in net:
                return True
    return False


def stage_key(cfg: DictConfig, kind: StageKind, parent: str | None = None, name: str | None = None) -> str:
    """Hash of the resolved nodes ``kind`` reads (minus infrastructure keys), its name and version,
    the stage's folder ``name`` (a round, a half) and the ``parent`` stage's key; and the world size
    when the kind is ``per_process`` for this config and runs on more than one process."""
    identity = {"kind": kind.name, "version": kind.version, "name": name or kind.folder_name, "parent": parent,
                "nodes": _picked(cfg, kind.nodes)}
    if (kind.per_process is not None and kind.per_process(cfg)) or _draws_per_rank(cfg, kind):
        from tgp.checks.job import world_size

        world = world_size(cfg)
        if world > 1:  # one-process keys stay what they were
            identity["world_size"] = world
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def stage_view(cfg: DictConfig, kind: StageKind) -> DictConfig:
    """A read-only, resolved copy of ``cfg`` holding only the nodes ``kind`` declares (struct:
    reading any other key raises ``ConfigAttributeError``)."""
    view = OmegaConf.create({})
    for node in (*kind.nodes, *INFRA_NODES):
        value = OmegaConf.select(cfg, node, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(view, node, value, force_add=True)
    OmegaConf.set_struct(view, True)
    OmegaConf.set_readonly(view, True)
    return view


def check_no_config_capture(fn: Callable, stage: str) -> None:
    """Refuse a stage function that closes over a config: it must read settings from its view."""
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            raise RuntimeError(
                f"stage {stage}: its function closes over a config object; read settings from the view it is "
                "given (fn(folder, cfg)) so that the stage key covers them"
            )


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None, holder: str = ""):
    """An exclusive ``flock`` on ``path``; ``on_wait()`` is called once, before blocking, when another
    process holds it. ``holder`` (who takes it) and the time it took it are the file's content while
    held, for a waiter to name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        if holder:
            f.truncate(0)
            f.write(f"{holder} since {datetime.now().strftime('%H:%M:%S')}")
            f.flush()
        try:
            yield
        finally:
            if holder:
                f.truncate(0)  # released: a stale name must not be shown to the next waiter
            fcntl.flock(f, fcntl.LOCK_UN)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _note_reused(name: str, folder: Path) -> None:
    """Tell the job's W&B run (if any) that ``name`` was reused: it replays the stage's curves."""
    from tgp.logging_wandb import stage_reused

    stage_reused(name, folder)


class StopPipeline(Exception):
    """Raised after the stage named by ``stop_after`` finished: the run ends early, resumable."""


class Attempts:
    """``attempts.json`` of a stage folder: one entry per time the stage was started.

    An entry's ``seconds`` is rewritten at every :meth:`tick` (each training epoch), so an
    attempt killed with ``kill -9`` still counts up to its last finished epoch; an entry still
    ``running`` when the next attempt starts is marked ``killed``.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / "attempts.json"
        self.entries: list[dict] = self._read() or []
        for e in self.entries:
            if e.get("status") == "running":
                e["status"] = "killed"
        self._start = time.perf_counter()
        self.entries.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "seconds": 0.0, "status": "running"})
        self._write()

    def _read(self) -> list[dict] | None:
        """The entries on disk; None when there are none or they are unreadable (a damaged attempt log
        is started anew: it records time, never results)."""
        try:
            entries = read_json(self.path)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return entries if isinstance(entries, list) and all(isinstance(e, dict) for e in entries) else None

    def _write(self) -> None:
        atomic_save_json(self.entries, self.path)

    def tick(self, **info) -> None:
        # What another process recorded for this attempt meanwhile (a ddp_spawn rank's epochs and
        # checkpoint records) is kept; this process's own fields are newer.
        disk = self._read()
        if disk is not None and len(disk) == len(self.entries):
            self.entries[-1] = {**self.entries[-1], **disk[-1]}
        self.entries[-1].update(seconds=time.perf_counter() - self._start, **info)
        self._write()

    def finish(self, status: str) -> None:
        self.tick(status=status)

    @property
    def seconds(self) -> float:
        return sum(float(e.get("seconds") or 0.0) for e in self.entries)


class StageRunner:
    """Runs the stages of one job in ``run_dir``; remembers their results and keys."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        store = OmegaConf.select(cfg, "paths.stage_store")
        self.store = Path(store) if store else None
        self.results: dict[str, dict] = {}
        self.keys: dict[str, str] = {}
        self.skipped: list[str] = []
        self.view: DictConfig | None = None  # the running stage's config view
        self.attempt: Attempts | None = None  # the running stage's attempt record

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

    def key(self, kind: StageKind, parent: str | None = None, name: str | None = None) -> str:
        return stage_key(self.cfg, kind, self.keys[parent] if parent else None, name)

    def _verified(self, name: str, folder: Path) -> dict | None:
        """The result of the finished stage in ``folder`` once every file it recorded verifies, else
        None (the stage runs). A damaged folder is set aside (one line says which file and why) and
        the stage starts again in a fresh one — from its checkpoint when that verifies
        (:mod:`tgp.integrity`); so does an unfinished stage whose ``last.ckpt`` is damaged."""
        if not folder.is_dir():
            return None
        check = check_stage(folder)
        if check.status == "ok":
            log.debug("stage %s: verified %d files (%.1f MB)", name, len(check.result["files"]), check.hashed / 1e6)
            return check.result
        if not check.damaged:
            return None  # unfinished: the stage resumes from its (verified) last.ckpt, or starts
        resume, finished = resumable(check), (folder / "result.json").exists()
        aside = set_aside(folder)
        if resume:
            salvage(aside, folder)
            then = "resuming from its verified last.ckpt"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            then = "computing it again" if finished else "starting it afresh"
        log.warning("stage %s: damaged: %s; set aside as %s, %s", name, check.describe(), _shown(aside), then)
        return None

    def run(self, kind: StageKind, fn: Callable[[Path, DictConfig], dict], parent: str | None = None,
            name: str | None = None) -> dict:
        """Run ``fn(stage_dir, view) -> result`` unless ``result.json`` says it already ran.

        ``name`` (default ``kind.folder_name``) is the folder name, e.g. ``imp_round_03`` of kind ``imp_round``.
        """
        name = name or kind.folder_name
        check_no_config_capture(fn, name)
        key = self.key(kind, parent, name)
        self.keys[name] = key
        folder = self.stage_dir(name, key)
        done = folder / "result.json"
        lock = folder.parent / f".{folder.name}.lock"
        waited: list[float] = []

        def on_wait() -> None:
            waited.append(time.perf_counter())
            try:  # the job holding the lock, when it said who it is (see file_lock)
                held_by = lock.read_text().strip()
            except OSError:
                held_by = ""
            log.info("stage %s: waiting for another job that is computing it (lock %s%s)", name, _shown(lock),
                     f"; held by {held_by}" if held_by else "")

        with file_lock(lock, on_wait, holder=f"job {self.run_dir.name} (pid {os.getpid()})"):
            wait_note = f" after waiting {time.perf_counter() - waited[0]:.1f} s for another job" if waited else ""
            reused = self._verified(name, folder)
            if reused is not None:
                computed = reused.get("seconds")
                took = f"computed earlier in {_duration(computed)}; " if computed is not None else ""
                log.info("stage %s: reused%s (%s%s)", name, wait_note, took, _shown(folder))
                self.skipped.append(name)
                _note_reused(name, folder)
            else:
                log.info("stage %s: running in %s", name, folder, extra=DETAIL)
                started = time.perf_counter()
                self.view, self.attempt = stage_view(self.cfg, kind), Attempts(folder)
                try:
                    result = fn(folder, self.view)
                except BaseException as e:
                    full = disk_full_error(e, folder) if isinstance(e, Exception) else None
                    if full is not None:  # make room to record the failure: what was half-written is useless
                        remove_partial_files(folder)
                    try:
                        self.attempt.finish("preempted" if isinstance(e, SystemExit) else "failed")
                    except OSError as record_error:
                        log.warning("stage %s: could not mark the attempt failed in %s (%s)", name,
                                    _shown(self.attempt.path), record_error)
                    if full is not None and full is not e:
                        raise full from None  # one paragraph instead of the chain of tracebacks
                    raise
                finally:
                    self.view = None
                self.attempt.finish("done")
                earlier = len(self.attempt.entries) - 1
                resumed = f" (resumed: attempt {earlier + 1}, {_duration(self.attempt.seconds)} in all)" if earlier else ""
                log.info("stage %s: done in %s%s%s (%s)", name, _duration(time.perf_counter() - started), resumed,
                         wait_note, _shown(folder))
                result.update(kind=kind.name, version=kind.version, key=key, parent=self.keys.get(parent),
                              seconds=self.attempt.seconds, attempts=self.attempt.entries)
                self.attempt = None
                result["files"] = record_files(folder)  # last: the size and hash of every file it wrote
                atomic_save_json(result, done)
                reused = read_json(done)
        self.results[name] = reused
        if OmegaConf.select(self.cfg, "stop_after") == name:
            raise StopPipeline(name)
        return self.results[name]
