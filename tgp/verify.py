"""``tgp-verify PATH...`` (``python -m tgp.verify``): list what is damaged in stage stores and run folders.

Like ``git fsck``: every stage folder found under each PATH (a stage store, a sweep or run folder, a
single stage folder) is checked against the sizes and SHA-256 hashes its ``result.json`` records
(an unfinished one: its ``last.ckpt`` against ``attempts.json``), and every finished run's
``student_sparse.pt`` against its ``metrics.json`` (:mod:`tgp.integrity`). Nothing is changed:
``tgp-run`` sets a damaged stage aside and computes it again when a job needs it.

Output: one line per damaged stage folder or run file (``damaged: <folder>: <file>: <reason>``),
then one summary line. Exit codes: 0 nothing is damaged; 1 something is damaged; 2 a PATH does not
exist (nothing was checked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tgp.integrity import (ATTEMPTS, CHECKPOINT, DAMAGED_TAG, RESULT, StageCheck, check_stage, run_file_problems,
                           stage_folders)


def _is_stage(folder: Path) -> bool:
    return any((folder / name).exists() for name in (RESULT, ATTEMPTS, CHECKPOINT))


def _is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and ((folder / "metrics.json").exists() or (folder / ".hydra").is_dir())


class Census:
    """What was checked and found: stage folders by physical path (each once), runs, damage lines."""

    def __init__(self):
        self.stages: dict[str, StageCheck] = {}
        self.runs = 0
        self.set_aside = 0
        self.hashed = 0
        self.lines: list[str] = []

    def stage(self, folder: Path, shown: Path | None = None) -> None:
        key = str(folder.resolve())
        if key in self.stages:
            return
        check = check_stage(folder)
        self.stages[key] = check
        self.hashed += check.hashed
        if check.damaged:
            self.lines.append(f"damaged: {shown or folder}: {check.describe()}")

    def run(self, run_dir: Path) -> None:
        self.runs += 1
        for link in stage_folders(run_dir):
            self.stage(link)  # shown by its store path: that is the folder a re-run sets aside
        if (run_dir / "metrics.json").exists():  # a finished run: its own files against their records
            try:
                row = json.loads((run_dir / "metrics.json").read_text())
            except (OSError, ValueError, UnicodeDecodeError) as e:
                self.lines.append(f"damaged: {run_dir}: metrics.json: not valid JSON ({type(e).__name__})")
                row = {}
            problems, hashed = run_file_problems(run_dir, row)
            self.hashed += hashed
            self.lines += [f"damaged: {run_dir}: {path.name}: {problem}" for path, problem in problems]

    def walk(self, root: Path) -> None:
        """Every stage folder and run below ``root`` (links into a stage store are followed from a run only)."""
        if _is_stage(root):
            self.stage(root)
            return
        if _is_run(root):
            self.run(root)
            return
        for dirpath, dirnames, _ in os.walk(root, followlinks=False):
            here = Path(dirpath)
            keep = []
            for d in sorted(dirnames):
                path = here / d
                if DAMAGED_TAG in d:
                    self.set_aside += 1
                elif d.startswith(".") or d == "wandb" or path.is_symlink():
                    continue
                elif _is_stage(path):
                    self.stage(path)
                elif _is_run(path):
                    self.run(path)
                else:
                    keep.append(d)
            dirnames[:] = keep

    @property
    def damaged(self) -> int:
        return len(self.lines)

    def summary(self, seconds: float) -> str:
        counts: dict[str, int] = {}
        for check in self.stages.values():
            counts[check.status] = counts.get(check.status, 0) + 1
        parts = [f"{len(self.stages)} stage folder{'s' * (len(self.stages) != 1)} "
                 f"({counts.get('ok', 0)} ok, {counts.get('unfinished', 0) + counts.get('empty', 0)} unfinished, "
                 f"{counts.get('damaged', 0)} damaged)", f"{self.runs} run{'s' * (self.runs != 1)}"]
        aside = f"; {self.set_aside} folder{'s' * (self.set_aside != 1)} set aside earlier (*{DAMAGED_TAG}*)" \
            if self.set_aside else ""
        verdict = "nothing damaged" if not self.damaged else f"{self.damaged} damaged"
        return (f"tgp-verify: {verdict}: checked {', '.join(parts)}; {self.hashed / 1e6:,.1f} MB hashed in "
                f"{seconds:.1f} s{aside}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgp-verify", description=__doc__.split("\n\n")[0],
                                epilog="Exit codes: 0 nothing damaged, 1 something damaged, 2 a PATH does not exist.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a stage store, sweep or run folder, or one stage folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [p for p in args.paths if not Path(p).is_dir()]
    if missing:
        print(f"tgp-verify: error: PATH={missing[0]!r}: no such folder. Fix: pass a stage store (e.g. outputs/stages), "
              "a sweep or run folder, or a stage folder.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    census = Census()
    for path in args.paths:
        census.walk(Path(path))
    for line in census.lines:
        print(line)
    print(census.summary(time.perf_counter() - started))
    return 1 if census.damaged else 0


if __name__ == "__main__":
    sys.exit(main())
