"""Decode a list of image files once into one ``uint8 [N, H, W, 3]`` array file, and read it back.

Why: Tiny ImageNet is 110k small JPEGs. Decoding them with PIL in every epoch of every stage of
every run costs more CPU than the rest of the data path together (on 2 cores the decode alone
caps a DataLoader at a few thousand images/s), and the device loader needs the whole split as one
``uint8`` tensor anyway. So the files are decoded once, exactly as the PIL path decodes them
(``Image.open(path).convert("RGB")``: grayscale, palette and RGBA files become the same RGB
pixels), into ``<name>-<key>.npy`` beside a small JSON manifest ``<name>.json``.

The cache follows the rules of :mod:`tgp.data.cache_files` (a key over everything it was computed
from, atomic writes, a build lock, trusted only through its manifest). Here the key is SHA-256 over
the format version, the Pillow version (another libjpeg may round differently), the image size
and, for every file in list order (row ``i`` of the array is file ``i``), its path relative to the
data folder, its size in bytes, its mtime in ns and its label: a file added, removed, resized,
touched or relabelled changes the key and the cache is rebuilt.

Building needs about one chunk of decoded images in memory (plus one per decode worker); the
finished array is read with ``np.load(mmap_mode="r")``, so pages are shared between processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import PIL
from PIL import Image

from tgp.data import cache_files
from tgp.data.cache_files import CacheResult
from tgp.errors import DataNotFoundError

log = logging.getLogger("tgp")

__all__ = ["CHUNK", "CacheResult", "CachedImages", "decode_rgb", "ensure_cache", "list_key"]

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
    """The key a cache of ``samples`` (``(path, label)``, paths under ``base``) must carry to be trusted."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "pillow": PIL.__version__, "size": list(size)}).encode())
    for line in cache_files.stat_lines([p for p, _ in samples], base, lambda i: str(int(samples[i][1]))):
        h.update(line)
    return h.hexdigest()


def _valid(folder: str, name: str, key: str, count: int, size: tuple[int, int]) -> str | None:
    """The array file of ``folder/name`` if its manifest carries ``key`` and the file has the right shape."""
    manifest = cache_files.read_manifest(folder, name, FORMAT, key)
    path = cache_files.payload_path(folder, manifest) if manifest is not None else None
    if path is None:
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):  # absent, truncated header
        return None
    if arr.dtype != np.uint8 or arr.shape != (count, size[0], size[1], 3):
        return None
    return path


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
    shape = (len(samples), size[0], size[1], 3)
    paths = [p for p, _ in samples]
    log.info("%s: decoding %d %s images once into %s (later runs read the decoded array)", dataset, len(samples),
             name, folder)
    t0 = time.perf_counter()
    with cache_files.writing_payload(folder, name, key, ".npy") as (f, final):
        # The .npy header, then the rows in order: sequential writes keep only a chunk in memory
        # (a writable memmap would keep every written page in this process's resident set).
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        done = 0
        for chunk in _decoded_chunks(paths, size, dataset, workers):
            f.write(chunk.tobytes())
            done += len(chunk)
            if progress is not None:
                progress(done)
        if list_key(samples, base, size) != key:
            raise DataNotFoundError(f"{dataset}: files under {base} changed while the decoded cache was built; "
                                    "nothing was cached. Run again once the tree is complete.")
    cache_files.write_manifest(folder, name, {
        "format": FORMAT, "key": key, "file": os.path.basename(final), "shape": list(shape), "dtype": "uint8",
        "pillow": PIL.__version__, "source": base, "created": time.time()})
    cache_files.remove_other_payloads(folder, name, final, ".npy")
    log.info("%s: %s cache built in %.1f s (%d images, %.0f MB)", dataset, name, time.perf_counter() - t0,
             len(samples), os.path.getsize(final) / 2**20)
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
    return cache_files.ensure(
        folders, name, count=len(samples), dataset=dataset, what="decoded image", setting=setting,
        setting_value=setting_value,
        valid=lambda folder: _valid(folder, name, key, len(samples), size),
        build=lambda folder: _build(folder, name, key, samples, base, size, dataset, workers, progress),
        fix=f"set {setting} to a writable folder with room for {len(samples) * size[0] * size[1] * 3 / 2**20:.0f} MB, "
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
