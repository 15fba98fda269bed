"""Decode a list of image files once into one ``uint8 [N, H, W, 3]`` array file, and read it back.

Why: Tiny ImageNet is 110k small JPEGs. Decoding them with PIL in every epoch of every stage of
every run costs more CPU than the rest of the data path together (on 2 cores the decode alone
caps a DataLoader at a few thousand images/s), and the device loader needs the whole split as one
``uint8`` tensor anyway. So the files are decoded once, exactly as the PIL path decodes them
(``Image.open(path).convert("RGB")``: grayscale, palette and RGBA files become the same RGB
pixels), into ``<name>-<key>.npy`` beside a small JSON manifest ``<name>.json``.

Trust rules (a cache is only ever used when it provably matches the files):

* ``key`` = SHA-256 over the format version, the Pillow version (another libjpeg may round
  differently), the image size and, for every file in list order (row ``i`` of the array is file
  ``i``), its path relative to the data folder, its size in bytes, its mtime in ns and its label.
  A file added, removed, resized, touched or relabelled changes the key and the cache is rebuilt.
* The array is written to a temp file and renamed (``os.replace``) only once complete and flushed;
  the manifest naming it is written (atomically) after that. An interrupted build leaves at most
  a temp file, which no reader ever opens and the next build deletes.
* Builders hold ``fcntl.flock`` on ``<name>.lock``: a second process waits, then finds the cache
  valid and reads it. Readers take no lock: a file named in a manifest is complete and never
  rewritten (a new key gets a new file name).
* Building needs about one chunk of decoded images in memory (plus one per decode worker); the
  finished array is read with ``np.load(mmap_mode="r")``, so pages are shared between processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import PIL
from PIL import Image

from tgp.errors import ConfigError, DataNotFoundError

log = logging.getLogger("tgp")

FORMAT = 1
CHUNK = 512  # images decoded per task: 6 MB at 64x64, big enough to amortize a worker round trip


def decode_rgb(path: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels of ``path`` exactly as the PIL path sees them (``.convert("RGB")``)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _decode_chunk(paths: Sequence[str], size: tuple[int, int], dataset: str) -> np.ndarray:
    """Decode ``paths`` into one ``[k, H, W, 3]`` array (runs in a pool worker or in-process)."""
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            pixels = decode_rgb(path)
        except OSError as exc:
            raise DataNotFoundError(
                f"{dataset}: cannot decode image {path} ({type(exc).__name__}: {exc}) while building the decoded "
                "cache. The file is damaged or not an image: restore it from the official archive, or remove it "
                "(and its annotation line) from the tree."
            ) from None
        if pixels.shape != out.shape[1:]:
            raise DataNotFoundError(
                f"{dataset}: image {path} is {pixels.shape[1]}x{pixels.shape[0]}, not {size[1]}x{size[0]} like the "
                "rest of the dataset, so it cannot go into the decoded cache (one array of equal-sized images). "
                "Replace it with the official file, or set data.cache=false to read the image files directly."
            )
        out[k] = pixels
    return out


def list_key(samples: Sequence[tuple[str, int]], base: str, size: tuple[int, int]) -> str:
    """The key a cache of ``samples`` (``(path, label)``, paths under ``base``) must carry to be trusted.

    Stats every file (no reads): 110k files take about a second on a local disk.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "pillow": PIL.__version__, "size": list(size)}).encode())
    for path, label in samples:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataNotFoundError(f"cannot stat image {path} ({exc}); the dataset tree changed while it was read "
                                    "or is damaged: restore it and run again.") from None
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{int(label)}\n".encode())
    return h.hexdigest()


@dataclass
class CacheResult:
    """Where a valid cache is, and whether this call built it (and how long that took)."""

    path: str
    manifest: str
    built: bool
    seconds: float
    count: int
    waited: bool = False  # another process held the build lock first


def _manifest_path(folder: str, name: str) -> str:
    return os.path.join(folder, f"{name}.json")


def _valid(folder: str, name: str, key: str, count: int, size: tuple[int, int]) -> str | None:
    """The array file of ``folder/name`` if its manifest carries ``key`` and the file has the right shape."""
    try:
        with open(_manifest_path(folder, name)) as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT or manifest.get("key") != key:
            return None
        path = os.path.join(folder, os.path.basename(str(manifest["file"])))
        arr = np.load(path, mmap_mode="r")
        if arr.dtype != np.uint8 or arr.shape != (count, size[0], size[1], 3):
            return None
        return path
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-written by hand, not a dict, wrong header
        return None


@contextlib.contextmanager
def _locked(folder: str, name: str, dataset: str) -> Iterator[bool]:
    """Exclusive ``flock`` on ``folder/name.lock``; yields whether another process held it first
    (and says so in the log, since the wait may be a minute on the real data)."""
    fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building the decoded %s cache in %s; waiting for it", dataset, name, folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)  # releases the lock


def _decoded_chunks(paths: Sequence[str], size: tuple[int, int], dataset: str, workers: int) -> Iterator[np.ndarray]:
    """Decoded chunks in order; with ``workers > 1`` a fork pool decodes ahead, at most
    ``2 * workers`` chunks in flight so memory stays bounded."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _decode_chunk(chunk, size, dataset)
        return
    # fork: the workers need only PIL and numpy, and start in milliseconds (spawn would re-import
    # the entry module, i.e. torch and Lightning, in each worker).
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending: list[cf.Future] = []
        todo = iter(chunks)
        for chunk in todo:
            pending.append(pool.submit(_decode_chunk, chunk, size, dataset))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_decode_chunk, nxt, size, dataset))
            yield result


def _build(folder: str, name: str, key: str, samples: Sequence[tuple[str, int]], base: str, size: tuple[int, int],
           dataset: str, workers: int, progress: Callable[[int], None] | None) -> str:
    """Decode ``samples`` into ``folder/name-<key>.npy`` (under the lock), then write the manifest."""
    for pattern in (f".{name}-*.tmp", f"{name}.json.*.tmp"):
        for stale in glob.glob(os.path.join(glob.escape(folder), pattern)):
            os.unlink(stale)  # left by an interrupted build: we hold the lock, so no one is writing it
    final = os.path.join(folder, f"{name}-{key[:16]}.npy")
    tmp = os.path.join(folder, f".{name}-{key[:16]}.{os.getpid()}.tmp")
    shape = (len(samples), size[0], size[1], 3)
    paths = [p for p, _ in samples]
    try:
        with open(tmp, "wb") as f:
            # The .npy header, then the rows in order: sequential writes keep only a chunk in memory
            # (a writable memmap would keep every written page in this process's resident set).
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            done = 0
            for chunk in _decoded_chunks(paths, size, dataset, workers):
                f.write(chunk.tobytes())
                done += len(chunk)
                if progress is not None:
                    progress(done)
            f.flush()
            os.fsync(f.fileno())
        if list_key(samples, base, size) != key:
            raise DataNotFoundError(f"{dataset}: files under {base} changed while the decoded cache was built; "
                                    "nothing was cached. Run again once the tree is complete.")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    manifest = {"format": FORMAT, "key": key, "file": os.path.basename(final), "shape": list(shape),
                "dtype": "uint8", "pillow": PIL.__version__, "source": base, "created": time.time()}
    manifest_path = _manifest_path(folder, name)
    tmp_manifest = f"{manifest_path}.{os.getpid()}.tmp"
    try:
        with open(tmp_manifest, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_manifest, manifest_path)  # from here on the array is trusted
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_manifest)
        raise
    for old in glob.glob(os.path.join(glob.escape(folder), f"{name}-*.npy")):
        if old != final:  # an earlier tree's cache; a process still reading it keeps its open inode
            with contextlib.suppress(OSError):
                os.unlink(old)
    return final


def ensure_cache(samples: Sequence[tuple[str, int]], base: str, name: str, folders: Sequence[str], *,
                 size: tuple[int, int] = (64, 64), dataset: str = "dataset", workers: int = 0,
                 setting: str = "data.cache_dir", setting_value: object = None,
                 progress: Callable[[int], None] | None = None) -> CacheResult:
    """A valid decoded cache of ``samples`` in one of ``folders`` (tried in order), built if needed.

    An existing valid cache in any folder is used as it is (a read-only folder can still serve one).
    Otherwise the cache is built in the first folder that can be written; a folder that cannot
    (read-only, no permission, disk full) is reported in one log line and the next one is tried.
    When none can, a :class:`ConfigError` names ``setting`` (the user's way out) — never a traceback.
    """
    if not samples:
        raise ValueError("no samples to cache")
    key = list_key(samples, base, size)
    for folder in folders:
        path = _valid(folder, name, key, len(samples), size)
        if path is not None:
            return CacheResult(path, _manifest_path(folder, name), False, 0.0, len(samples))
    failures = []
    for i, folder in enumerate(folders):
        try:
            os.makedirs(folder, exist_ok=True)
            with _locked(folder, name, dataset) as waited:
                path = _valid(folder, name, key, len(samples), size)  # built while we waited?
                if path is not None:
                    return CacheResult(path, _manifest_path(folder, name), False, 0.0, len(samples), waited)
                log.info("%s: decoding %d %s images once into %s (later runs read the decoded array)",
                         dataset, len(samples), name, folder)
                t0 = time.perf_counter()
                path = _build(folder, name, key, samples, base, size, dataset, workers, progress)
                seconds = time.perf_counter() - t0
                log.info("%s: %s cache built in %.1f s (%d images, %.0f MB)", dataset, name, seconds, len(samples),
                         os.path.getsize(path) / 2**20)
                return CacheResult(path, _manifest_path(folder, name), True, seconds, len(samples), waited)
        except OSError as exc:  # reading errors became DataNotFoundError: this is the folder failing a write
            reason = exc.strerror or str(exc)
            failures.append(f"{folder} ({reason})")
            if i + 1 < len(folders):
                log.warning("%s: cannot write the decoded %s cache in %s (%s); trying %s instead "
                            "(choose the place with %s)", dataset, name, folder, reason, folders[i + 1], setting)
    raise ConfigError(
        setting, setting_value,
        f"{dataset}: the decoded image cache could not be written in any of: {'; '.join(failures)}.",
        f"set {setting} to a writable folder with room for {len(samples) * size[0] * size[1] * 3 / 2**20:.0f} MB, "
        "or set data.cache=false to read the image files directly (slower).",
    )


class CachedImages:
    """A dataset over a decoded cache: items ``(PIL RGB image, label)`` as the file-reading
    dataset gives them, so the same PIL transforms (and random draws) apply; :attr:`array` is the
    whole ``uint8 [N, H, W, 3]`` array (memory-mapped) for the device loader.

    The memory map opens lazily in each process (a pickled copy — a spawned DDP rank, a loader
    worker — reopens the file instead of carrying gigabytes of pixels through a pipe).
    """

    def __init__(self, path: str, samples: Sequence[tuple[str, int]]):
        self.path = path
        self.samples = list(samples)
        self.targets = [int(label) for _, label in self.samples]
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return Image.fromarray(np.array(self.array[i]), "RGB"), self.targets[i]
