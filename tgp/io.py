"""Atomic file writes: an artifact is either complete on disk or absent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_json(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False).encode()))


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def read_json(path: Path):
    return json.loads(Path(path).read_text())
