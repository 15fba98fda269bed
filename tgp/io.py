"""Atomic file writes: an artifact is either complete on disk or absent, never half-written.

A write that runs out of room (a full disk, a quota, a file-size limit) removes its temporary file
and raises :class:`~tgp.errors.DiskFullError`, one paragraph naming the file, its folder and the
bytes at stake; :func:`disk_full_error` recognizes the same condition in an error raised by other
code (Lightning's checkpoint writer, a DDP rank).
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

import torch

from tgp.errors import DiskFullError

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_write_bytes(path: Path, write, size: int | None = None) -> None:
    """Write through a temp file in the same folder and rename, so a crash never leaves half a file.
    ``size``: the bytes ``write`` writes when known in advance (named in a full-disk error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        written = _size(tmp)
        Path(tmp).unlink(missing_ok=True)
        if e.errno in NO_ROOM:
            raise no_room(e.errno, path, written=written, needed=size() if callable(size) else size) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_json(obj, path: Path) -> None:
    data = json.dumps(obj, indent=2, sort_keys=False).encode()
    atomic_write_bytes(path, lambda f: f.write(data), size=len(data))


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f), size=lambda: tensor_bytes(obj))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


# -- no room to write ----------------------------------------------------------------------------
def tensor_bytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists, tuples): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _size(path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _free(folder: Path) -> int | None:
    """Bytes free to this user on the file system holding ``folder`` (its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def no_room(code: int, path: Path | None, *, written: int | None = None, needed: int | None = None,
            folder: Path | None = None) -> DiskFullError:
    """The one-paragraph error for a write of ``path`` that failed with ``code`` (ENOSPC, EDQUOT, EFBIG);
    ``path`` None: a file in ``folder`` (the error did not say which)."""
    folder = Path(folder if folder is not None else Path(path).parent if path is not None else ".")
    name = Path(path).name if path is not None else f"a file in {folder}"
    shown = str(path) if path is not None else name
    at_stake = []
    if needed:
        at_stake.append(f"at least {needed:,} bytes to write")
    if written:
        at_stake.append(f"{written:,} bytes written when it stopped")
    stake = f" ({', '.join(at_stake)})" if at_stake else ""
    again = "then re-run the same command: finished stages are reused and the interrupted one starts again."
    if code == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit_shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit:,} bytes"
        return DiskFullError(path, f"a file is larger than this process may write (ulimit -f: {limit_shown}): writing "
                             f"{shown} failed{stake}.", f"raise the limit (ulimit -f unlimited), {again}")
    free = _free(folder)
    room = f"; {free:,} bytes are free there" if free is not None else ""
    what = "the disk quota is used up" if code == errno.EDQUOT else "no space left on the device"
    return DiskFullError(path, f"{what} holding {folder}: writing {name} failed{stake}{room}.",
                         f"free space there (or point paths.stage_store and paths.log_dir at a disk with room), {again}")


_NO_ROOM_TEXT = re.compile(r"\[Errno (28|122|27)\][^\n']*(?:'([^']+)'(?: -> '([^']+)')?)?")


def disk_full_error(exc: BaseException, folder: Path | None = None) -> DiskFullError | None:
    """The :class:`DiskFullError` behind ``exc`` — itself, the first ``OSError`` with no room in its
    chain of causes (``shutil.move`` names its source and the destination; a failed ``write`` names
    nothing: then a file in ``folder``), or such an error in the text of a DDP rank's exception — else None."""
    seen, e, found = set(), exc, None
    while e is not None and id(e) not in seen:  # the first write that failed: later ones only followed it
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            found = e
            wrapped = e.__cause__ or e.__context__
            if isinstance(wrapped, OSError) and wrapped.errno in NO_ROOM:  # the error it was made from
                seen.add(id(wrapped))
                e = wrapped
        elif isinstance(e, OSError) and e.errno in NO_ROOM:
            target = e.filename2 or e.filename
            source = _size(e.filename) if e.filename2 else None  # a move: its source has the full size
            found = no_room(e.errno, Path(target) if target else None, needed=source,
                            written=_size(target) if target else None, folder=folder)
        e = e.__cause__ or e.__context__
    if found is not None:
        return found
    match = _NO_ROOM_TEXT.search(str(exc))
    if match:
        code = {"28": errno.ENOSPC, "122": errno.EDQUOT, "27": errno.EFBIG}[match.group(1)]
        target = match.group(3) or match.group(2)
        return no_room(code, Path(target) if target else None, folder=folder)
    return None


def remove_partial_files(folder: Path) -> int:
    """Delete what an interrupted write may have left in a stage folder and return the bytes freed:
    after a full disk, room for recording the failure. That is a ``.name.tmp`` of an atomic write, a
    ``last.ckpt.pending`` not yet promoted (no resume reads it) and a checkpoint a copy left incomplete
    (Lightning moves its best-val checkpoint into place by copying; an incomplete archive is useless)."""
    from tgp.integrity import zip_problem

    folder, freed = Path(folder), 0
    partial = [*folder.glob(".*.tmp"), *folder.glob("*.pending")]
    partial += [p for p in folder.glob("*.ckpt") if zip_problem(p) is not None]
    for p in partial:
        freed += _size(p) or 0
        p.unlink(missing_ok=True)
    return freed
