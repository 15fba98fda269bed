"""Derived data files built once and trusted only through a manifest: the rules every data cache
of tgp follows (decoded images in :mod:`tgp.data.image_cache`, token ids in
:mod:`tgp.data.text.token_cache`).

* A cache is a payload file plus a small JSON manifest ``<name>.json`` naming it and carrying a
  ``key``: a hash of everything the payload was computed from (the source files' paths, sizes and
  mtimes — :func:`stat_lines` — and whatever else the caller puts in). A reader trusts a payload
  only when its manifest carries the key it computes now, so a changed input rebuilds the cache.
* Payloads are written to a temp file and renamed (``os.replace``) once complete and flushed; the
  manifest is written (atomically) after that. An interrupted build leaves at most a temp file,
  which no reader opens and the next builder deletes (:func:`remove_stale`).
* Builders hold ``fcntl.flock`` on ``<name>.lock`` (:func:`locked`); a second builder waits, then
  finds the cache valid. Readers take no lock: a file named in a manifest is complete and never
  rewritten (a new key gets a new file name).
* :func:`ensure` tries the folders in order: an existing valid cache anywhere is used; otherwise
  the first writable folder gets the build, and an unwritable one is reported in one log line
  before the next is tried. When none can be written, a :class:`~tgp.errors.ConfigError` names the
  setting that chooses the place.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO
from dataclasses import dataclass

from tgp.errors import ConfigError, DataNotFoundError

log = logging.getLogger("tgp")


@dataclass
class CacheResult:
    """Where a valid cache is, and whether this call built it (and how long that took)."""

    path: str
    manifest: str
    built: bool
    seconds: float
    count: int
    waited: bool = False  # another process held the build lock first


def stat_lines(paths: Iterable[str], base: str, extra: Callable[[int], str] | None = None) -> Iterator[bytes]:
    """One line per file for a cache key: its path relative to ``base``, its size in bytes and its mtime
    in ns (plus ``extra(i)``, e.g. the file's label). A stat, no read: 110k files take about a second."""
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataNotFoundError(f"cannot stat {path} ({exc}); the dataset folder changed while it was read "
                                    "or is damaged: restore it and run again.") from None
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        tail = f"\t{extra(i)}" if extra is not None else ""
        yield f"{rel}\t{st.st_size}\t{st.st_mtime_ns}{tail}\n".encode()


def manifest_path(folder: str, name: str) -> str:
    return os.path.join(folder, f"{name}.json")


def read_manifest(folder: str, name: str, fmt: int, key: str) -> dict | None:
    """The manifest of ``folder/name`` when it has format ``fmt`` and carries ``key``; else None (absent,
    half-written by hand, another key)."""
    try:
        with open(manifest_path(folder, name)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt or manifest.get("key") != key:
        return None
    return manifest


def payload_path(folder: str, manifest: dict) -> str | None:
    """The payload file a manifest names (its base name, inside ``folder``), None if the entry is bad."""
    name = manifest.get("file")
    return os.path.join(folder, os.path.basename(name)) if isinstance(name, str) and name else None


@contextlib.contextmanager
def _replacing(final: str, tmp: str, mode: str = "wb") -> Iterator:
    """Write ``final`` through ``tmp``: on a clean exit the file is synced and renamed, on any exception
    (or Ctrl-C) the temp file is deleted, so a file under its final name is always complete."""
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_manifest(folder: str, name: str, manifest: dict) -> None:
    """Write ``folder/name.json`` atomically; from then on the payload it names is trusted."""
    path = manifest_path(folder, name)
    with _replacing(path, f"{path}.{os.getpid()}.tmp", "w") as f:
        json.dump(manifest, f, indent=1)


def temp_payload(folder: str, name: str, key: str, suffix: str) -> tuple[str, str]:
    """``(final, tmp)`` paths of a payload for ``key``: ``name-<key16><suffix>`` and a hidden temp file."""
    final = os.path.join(folder, f"{name}-{key[:16]}{suffix}")
    tmp = os.path.join(folder, f".{name}-{key[:16]}.{os.getpid()}.tmp")
    return final, tmp


@contextlib.contextmanager
def writing_payload(folder: str, name: str, key: str, suffix: str) -> Iterator[tuple[BinaryIO, str]]:
    """Write a payload for ``key`` through a hidden temp file (:func:`_replacing`): yields ``(file, final
    path)``; the manifest written after it trusts it."""
    final, tmp = temp_payload(folder, name, key, suffix)
    with _replacing(final, tmp) as f:
        yield f, final


def remove_stale(folder: str, name: str) -> None:
    """Delete temp files of ``folder/name`` left by interrupted builds (call under the lock: no one writes them)."""
    for pattern in (f".{name}-*.tmp", f"{name}.json.*.tmp"):
        for stale in glob.glob(os.path.join(glob.escape(folder), pattern)):
            with contextlib.suppress(OSError):
                os.unlink(stale)


def remove_other_payloads(folder: str, name: str, keep: str, suffix: str) -> None:
    """Delete earlier payloads of ``folder/name`` (another key); a process still reading one keeps its open inode."""
    for old in glob.glob(os.path.join(glob.escape(folder), f"{name}-*{suffix}")):
        if old != keep:
            with contextlib.suppress(OSError):
                os.unlink(old)


@contextlib.contextmanager
def locked(folder: str, name: str, dataset: str, what: str = "") -> Iterator[bool]:
    """Exclusive ``flock`` on ``folder/name.lock``; yields whether another process held it first
    (and says so in the log, since the wait may be a minute on the real data)."""
    fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building the %s%s cache in %s; waiting for it", dataset,
                     f"{what} " if what else "", name, folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)  # releases the lock


def ensure(folders: Sequence[str], name: str, *, valid: Callable[[str], str | None],
           build: Callable[[str], str], count: int, dataset: str, what: str, setting: str,
           setting_value: object, fix: str) -> CacheResult:
    """A valid cache ``name`` in one of ``folders`` (tried in order), built if needed.

    ``valid(folder)``: the payload path of a trusted cache there, or None. ``build(folder)``: build
    it there (called under the lock, after stale temp files are removed) and return the payload
    path. ``fix``: what the user can do when no folder can be written (the ConfigError's fix).
    """
    for folder in folders:
        path = valid(folder)
        if path is not None:
            return CacheResult(path, manifest_path(folder, name), False, 0.0, count)
    failures = []
    for i, folder in enumerate(folders):
        try:
            os.makedirs(folder, exist_ok=True)
            with locked(folder, name, dataset, what) as waited:
                path = valid(folder)  # built while we waited?
                if path is not None:
                    return CacheResult(path, manifest_path(folder, name), False, 0.0, count, waited)
                remove_stale(folder, name)
                t0 = time.perf_counter()
                path = build(folder)
                return CacheResult(path, manifest_path(folder, name), True, time.perf_counter() - t0, count, waited)
        except OSError as exc:  # reading errors are DataNotFoundError: this is the folder failing a write
            reason = exc.strerror or str(exc)
            failures.append(f"{folder} ({reason})")
            if i + 1 < len(folders):
                log.warning("%s: cannot write the %s %s cache in %s (%s); trying %s instead "
                            "(choose the place with %s)", dataset, what, name, folder, reason, folders[i + 1], setting)
    raise ConfigError(setting, setting_value,
                      f"{dataset}: the {what} cache could not be written in any of: {'; '.join(failures)}.", fix)


def default_folders(data_path: str, tag: str, cache_dir: str | None) -> list[str]:
    """Where a dataset's cache may live, in order: ``cache_dir`` when set (only there: the user chose
    it); else beside the data (``<data_path>/.tgp_cache``), then the user's cache folder (a read-only
    copy of the data). ``tag`` names the dataset's subfolder in the shared places."""
    if cache_dir is not None:
        return [os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), tag)]
    user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(data_path, ".tgp_cache"), os.path.join(user, "tgp", tag)]
