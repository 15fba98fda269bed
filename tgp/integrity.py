"""Integrity of stage folders: nothing a stage wrote is trusted before it is verified.

A finished stage's ``result.json`` (written last, atomically) records the size and SHA-256 of
every file the stage wrote (:func:`record_files`): weights, masks, checkpoints, reports,
``metrics.csv`` and the per-attempt logs — not ``attempts.json``, which changes by design, nor
temporary files. An unfinished stage's ``last.ckpt`` is recorded in ``attempts.json`` each time it
is replaced (:func:`checkpoint_records`). Reuse, resume, ``tgp-eval``, ``tgp-report`` and
``tgp-verify`` check the files against those records (:func:`check_stage`), the way ``git fsck``
checks objects against their names: a missing file, a size or hash that differs, a file that
cannot be read or a ``result.json`` that is not a complete record makes the stage *damaged*.

A damaged stage folder is set aside within its parent (``<stage>-<key>.damaged-<time>``,
:func:`set_aside`) and computed again; when its checkpoints and logs still verify, the new folder
starts from them (:func:`salvage`) and the stage resumes from its ``last.ckpt`` instead of
training from the start. Where nothing records a checkpoint's hash (a ``result.json`` that is
itself damaged, a checkpoint written between two records), it is trusted only when every member
of the zip archive ``torch.save`` wrote passes its CRC-32 check (:func:`zip_problem`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

RESULT = "result.json"
ATTEMPTS = "attempts.json"
CHECKPOINT = "last.ckpt"
# Written by the stage but not recorded: the record itself, and the attempt log that every start rewrites.
UNRECORDED = (RESULT, ATTEMPTS)
# A stage that resumes needs these besides last.ckpt: the best-val checkpoint and the per-attempt logs
# that metrics.csv is merged from (tgp.training.merge_attempt_metrics).
RESUME_FILES = ("best.ckpt",)
RESUME_FOLDERS = ("logs",)
DAMAGED_TAG = ".damaged-"
LEGACY = "records no checksums"


def file_record(path: Path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of the file at ``path``."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        size = f.tell()
    return {"size": size, "sha256": digest}


def recorded(relative: str) -> bool:
    """Whether a file of a stage folder is recorded: not the record, not attempts.json, no temporary
    file (``.name.tmp`` of an atomic write, ``last.ckpt.pending`` of a checkpoint not yet promoted)."""
    name = relative.rsplit("/", 1)[-1]
    return relative not in UNRECORDED and not name.startswith(".") and not name.endswith((".tmp", ".pending"))


def record_files(folder: Path) -> dict[str, dict]:
    """Records of every file in ``folder`` (recursively, relative POSIX paths, sorted) that :func:`recorded`."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(folder).as_posix()
        if recorded(relative):
            out[relative] = file_record(path)
    return out


def _size(n: int) -> str:
    return f"{n:,} bytes"


def record_problem(path: Path, record: dict) -> str | None:
    """Why the file at ``path`` does not match ``record`` (None: it does)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size != record.get("size"):
        how = "truncated" if size < int(record.get("size") or 0) else "grown"
        return f"{_size(size)}, recorded {_size(int(record.get('size') or 0))} ({how})"
    try:
        actual = file_record(path)["sha256"]
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if actual != record.get("sha256"):
        return f"content differs from its record (sha256 {actual[:12]}…, recorded {str(record.get('sha256'))[:12]}…)"
    return None


def zip_problem(path: Path) -> str | None:
    """Why the zip archive ``torch.save`` wrote at ``path`` is not intact (None: every member passes
    its CRC-32 check). A truncated file lacks its central directory; a flipped byte fails a CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"not a complete checkpoint archive ({e})"
    return f"member {bad} fails its CRC-32 check" if bad is not None else None


@dataclass
class StageCheck:
    """What :func:`check_stage` found in one stage folder.

    ``status``: ``ok`` (finished, every record matches), ``damaged``, ``unfinished`` (no
    ``result.json``; its ``last.ckpt``, if any, verified) or ``empty``. ``problems``: ``(file, reason)``
    pairs; ``result``: the parsed ``result.json`` when it is a complete record; ``hashed``: bytes read.
    """

    folder: Path
    status: str
    problems: list[tuple[str, str]] = field(default_factory=list)
    result: dict | None = None
    hashed: int = 0
    legacy: bool = False  # a complete result.json from before checksums

    @property
    def damaged(self) -> bool:
        return self.status == "damaged"

    def describe(self) -> str:
        """``file: reason`` of the first problem, and how many more there are."""
        if not self.problems:
            return "no problem found"
        file, reason = self.problems[0]
        more = f" (and {len(self.problems) - 1} more: {', '.join(f for f, _ in self.problems[1:4])})" \
            if len(self.problems) > 1 else ""
        return f"{file}: {reason}{more}"


def read_result(folder: Path) -> tuple[dict | None, str | None]:
    """``(result, None)`` for a complete ``result.json`` of ``folder``, else ``(None, why not)``."""
    path = Path(folder) / RESULT
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    except (ValueError, UnicodeDecodeError):
        return None, f"not valid JSON ({path.stat().st_size:,} bytes: truncated or overwritten)"
    if not isinstance(result, dict):
        return None, "not a stage record (no JSON object)"
    if not isinstance(result.get("files"), dict):
        return None, f"{LEGACY} (written by a tgp from before stage checksums): cannot be verified"
    return result, None


def checkpoint_records(folder: Path) -> list[dict]:
    """The records of ``last.ckpt`` that ``attempts.json`` holds (the newest attempt that has one: the
    checkpoint last promoted and the one about to be, see ``tgp.training.EpochEndCheckpoint``)."""
    try:
        entries = json.loads((Path(folder) / ATTEMPTS).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    for entry in reversed(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        found = [entry[k] for k in ("last_ckpt", "last_ckpt_next") if isinstance(entry.get(k), dict)]
        if found:
            return found
    return []


def checkpoint_problem(folder: Path, result: dict | None = None) -> str | None:
    """Why ``folder/last.ckpt`` cannot be resumed from (None: it can). Against the record in ``result``
    when there is one; else against those in ``attempts.json``; else by the archive's own CRCs."""
    path = Path(folder) / CHECKPOINT
    if result is not None and CHECKPOINT in result.get("files", {}):
        return record_problem(path, result["files"][CHECKPOINT])
    records = checkpoint_records(folder)
    if records:
        if not path.exists():
            return "missing"
        actual = file_record(path)
        if any(actual == r for r in records):
            return None
        return f"matches none of its records in {ATTEMPTS} ({_size(actual['size'])}, sha256 {actual['sha256'][:12]}…)"
    return zip_problem(path)


def check_stage(folder: Path) -> StageCheck:
    """Verify one stage folder (see the module docstring)."""
    folder = Path(folder)
    if not (folder / RESULT).exists():
        if not (folder / CHECKPOINT).exists():
            return StageCheck(folder, "empty" if not any(folder.iterdir()) else "unfinished")
        problem = checkpoint_problem(folder)
        size = (folder / CHECKPOINT).stat().st_size
        if problem:
            return StageCheck(folder, "damaged", [(CHECKPOINT, problem)], hashed=size)
        return StageCheck(folder, "unfinished", hashed=size)
    result, why = read_result(folder)
    if result is None:
        return StageCheck(folder, "damaged", [(RESULT, why)], legacy=why.startswith(LEGACY))
    problems, hashed = [], 0
    for relative, record in sorted(result["files"].items()):
        problem = record_problem(folder / relative, record if isinstance(record, dict) else {})
        hashed += int(record.get("size") or 0) if isinstance(record, dict) else 0
        if problem:
            problems.append((relative, problem))
    return StageCheck(folder, "damaged" if problems else "ok", problems, result, hashed)


def set_aside(folder: Path) -> Path:
    """Rename a damaged stage folder to ``<name>.damaged-<time>`` next to it; return the new path."""
    folder = Path(folder)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = folder.with_name(f"{folder.name}{DAMAGED_TAG}{stamp}"), 1
    while target.exists():
        target, n = folder.with_name(f"{folder.name}{DAMAGED_TAG}{stamp}-{n}"), n + 1
    os.rename(folder, target)
    return target


def resumable(check: StageCheck) -> bool:
    """Whether a damaged stage can resume from its checkpoint: ``last.ckpt`` verifies and so does
    every checkpoint and log its result records (else resuming would not end where an undamaged
    run ends). A ``result.json`` without checksums (an older tgp) is never resumed from."""
    folder = check.folder
    if not (folder / CHECKPOINT).is_file():
        return False
    if check.result is not None:
        resume = [f for f in check.result["files"]
                  if f == CHECKPOINT or f in RESUME_FILES or f.split("/", 1)[0] in RESUME_FOLDERS]
        bad = {f for f, _ in check.problems}
        return CHECKPOINT in resume and not bad.intersection(resume)
    if check.legacy:
        return False  # its checkpoints may come from a computation that has changed since
    if checkpoint_problem(folder) is not None:
        return False
    return all(zip_problem(folder / f) is None for f in RESUME_FILES if (folder / f).exists())


def salvage(damaged: Path, fresh: Path) -> list[str]:
    """Link (or copy) what a resume needs from the set-aside folder ``damaged`` into ``fresh``:
    ``last.ckpt``, the best-val checkpoint, the per-attempt logs and ``attempts.json`` (its time
    counts). Files are replaced, never written in place, so a hard link shares nothing that changes."""
    damaged, fresh = Path(damaged), Path(fresh)
    fresh.mkdir(parents=True, exist_ok=True)
    names = [CHECKPOINT, ATTEMPTS, *RESUME_FILES]
    names += [p.relative_to(damaged).as_posix() for top in RESUME_FOLDERS for p in sorted((damaged / top).rglob("*"))
              if p.is_file()]
    carried = []
    for name in names:
        source = damaged / name
        if not source.is_file():
            continue
        target = fresh / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        carried.append(name)
    return carried


# -- runs -----------------------------------------------------------------------------------------
STUDENT = "student_sparse.pt"
RUN_MASK = "mask.pt"
#: the files a run writes itself (not its stages) and the prefix of their record in metrics.json (a flat row)
RUN_FILES = {STUDENT: "student_sparse", RUN_MASK: "mask"}
STUDENT_KEYS = ("student_sparse_size", "student_sparse_sha256")


def run_file_record(path: Path) -> dict:
    """The flat ``metrics.json`` fields that record one of the run's own files (:data:`RUN_FILES`)."""
    record, prefix = file_record(path), RUN_FILES[Path(path).name]
    return {f"{prefix}_size": record["size"], f"{prefix}_sha256": record["sha256"]}


def student_record(path: Path) -> dict:
    """The flat ``metrics.json`` fields that record the run's ``student_sparse.pt``."""
    return run_file_record(path)


def stage_folders(run_dir: Path) -> list[Path]:
    """The stage folders of a run directory (links into the stage store, or folders), in name order;
    none that was set aside."""
    out = []
    for child in sorted(Path(run_dir).iterdir()):
        if child.name.startswith(".") or DAMAGED_TAG in child.name or not child.is_dir():
            continue
        if any((child / name).exists() for name in (RESULT, ATTEMPTS, CHECKPOINT)):
            out.append(child)
    return out


def student_problem(run_dir: Path, row: dict | None = None, name: str = STUDENT) -> str | None:
    """Why the run's ``student_sparse.pt`` (or another of its own files, ``name`` in :data:`RUN_FILES`)
    cannot be trusted: against its record in ``metrics.json`` (``row``, read when not given), or, for a
    run from before the record, by its archive's CRCs."""
    run_dir = Path(run_dir)
    if row is None:
        try:
            row = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            row = {}
    prefix = RUN_FILES[name]
    if f"{prefix}_size" in row and f"{prefix}_sha256" in row:
        return record_problem(run_dir / name, {"size": row[f"{prefix}_size"], "sha256": row[f"{prefix}_sha256"]})
    return zip_problem(run_dir / name) if (run_dir / name).exists() else None


def run_problems(run_dir: Path, cache: dict | None = None) -> tuple[list[tuple[Path, str]], int]:
    """``([(damaged file, reason), ...], bytes hashed)`` of a finished run: every stage folder it holds
    (:func:`check_stage`, each physical folder once per ``cache``) and its ``student_sparse.pt``. Paths
    are shown through the run directory (``<run>/prune/mask.pt``), as its user knows them."""
    run_dir = Path(run_dir)
    problems, hashed = [], 0
    try:
        row = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError:
        row = None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        problems.append((run_dir / "metrics.json", f"not valid JSON ({type(e).__name__}: truncated or overwritten)"))
        row = {}
    for link in stage_folders(run_dir):
        key = str(link.resolve())
        check = cache.get(key) if cache is not None else None
        if check is None:
            check = check_stage(link)
            hashed += check.hashed
            if cache is not None:
                cache[key] = check
        if check.damaged:
            problems += [(link / file, reason) for file, reason in check.problems]
    own, own_hashed = run_file_problems(run_dir, row)
    return problems + own, hashed + own_hashed


def run_file_problems(run_dir: Path, row: dict | None) -> tuple[list[tuple[Path, str]], int]:
    """``([(file, reason), ...], bytes hashed)`` of the run's own files (:data:`RUN_FILES`): each one
    present, recorded in its ``metrics.json`` row, or — the student — expected of a finished run."""
    run_dir = Path(run_dir)
    problems, hashed = [], 0
    for name, prefix in RUN_FILES.items():
        path = run_dir / name
        expected = bool(row) and (name == STUDENT or f"{prefix}_sha256" in row)
        if expected or path.exists():
            problem = student_problem(run_dir, row, name)
            hashed += path.stat().st_size if path.exists() else 0
            if problem:
                problems.append((path, problem))
    return problems, hashed


def file_problem(path: Path) -> str | None:
    """Why one file that a stage or run wrote cannot be trusted (None: it verifies). Against the
    record of the stage folder it lies in, or of the run (``student_sparse.pt``); a checkpoint of an
    unfinished stage against ``attempts.json``; any other torch file by its archive's CRCs."""
    path = Path(path)
    folder = path.parent
    if path.name in RUN_FILES and (folder / "metrics.json").exists():
        return student_problem(folder, name=path.name)
    if (folder / RESULT).exists():
        result, why = read_result(folder)
        if result is None:
            return f"the record of its stage, {folder / RESULT}, is damaged: {why}"
        name = path.relative_to(folder).as_posix()
        if name in result["files"]:
            return record_problem(path, result["files"][name])
    elif path.name == CHECKPOINT and (folder / ATTEMPTS).exists():
        return checkpoint_problem(folder)
    return zip_problem(path) if path.suffix in (".pt", ".ckpt", ".pth") else None
