"""Exit codes scripts can rely on, and a sweep's record of its failed jobs.

Every tgp command ends with one of these codes:

====  =================================================================================
0     all done
1     a crash: a bug (its traceback in the job's ``error.txt``), a full disk, a file that
      could not be written; the message names what
2     a setting: an input the message names (a bad setting, missing data, a checkpoint that
      does not fit, a damaged file given to ``tgp-eval``), or nothing to report (``tgp-report``)
128+n stopped by signal n (130: Ctrl-C, 143: SIGTERM, 138: SIGUSR1): re-run the same command to resume
====  =================================================================================

A multirun (``tgp-run -m``) runs every job, then exits with the worst of its jobs' codes, in the
order signal > crash > setting > done (:func:`worst`), and its last lines list the failed jobs with
their ``error.txt``. ``tgp-verify`` has its own: 0 nothing damaged, 1 something damaged, 2 no such folder.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import CompactHydraException

OK, CRASH, SETTING = 0, 1, 2


def severity(code: int | None) -> int:
    """How bad an exit code is: done 0 < setting 1 < crash 2 < signal 3."""
    code = int(code or 0)
    if code == OK:
        return 0
    if code == SETTING:
        return 1
    return 3 if code > 128 else 2


def worst(codes) -> int:
    """The exit code of a sweep whose jobs ended with ``codes`` (see the module docstring)."""
    return max((int(c or 0) for c in codes), key=severity, default=OK)


def describe(code: int) -> str:
    if code > 128:
        try:
            return f"exit code {code}: stopped by {signal.Signals(code - 128).name}"
        except ValueError:
            return f"exit code {code}: stopped by signal {code - 128}"
    return {OK: "exit code 0", CRASH: "exit code 1: a crash", SETTING: "exit code 2: a setting"}.get(code, f"exit code {code}")


@dataclass
class JobFailure:
    """One failed job of a sweep: its folder, exit code, where its error is, and its first line."""

    job: str  # how the launcher names it (its number and overrides)
    code: int
    error_file: str | None
    summary: str


class JobFailed(CompactHydraException):
    """A failed job's result as a Hydra launcher returns it (``JobReturn.return_value``): Hydra prints
    the message alone, without a traceback."""

    def __init__(self, failure: JobFailure):
        self.failure = failure
        super().__init__(f"{failure.job} failed ({describe(failure.code)}): {failure.summary}")

    def __reduce__(self):  # pickled from the job's process to the launcher's with its record
        return _failed_in_another_process, (self.failure,)


def _failed_in_another_process(failure: JobFailure) -> JobFailed:
    """Unpickling a job's failure in the launcher's process (submitit, SLURM, the node launcher) records
    it there: that is the process whose exit code and last lines the sweep's user sees."""
    record_failure(failure)
    return JobFailed(failure)


_FAILURES: list[JobFailure] = []  # this process's failed jobs, in the order they ended


def record_failure(failure: JobFailure) -> None:
    if failure not in _FAILURES:  # the same job's record arriving twice (unpickled, then handled) counts once
        _FAILURES.append(failure)


def take_failures() -> list[JobFailure]:
    """The failed jobs recorded in this process since the last call (and forget them)."""
    out = list(_FAILURES)
    _FAILURES.clear()
    return out


def error_summary(text: str) -> str:
    """The line that says what went wrong: the first, or a traceback's last (the exception)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "(no message)"
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def sweep_report(failures: list[JobFailure]) -> str:
    """The last lines of a sweep with failed jobs: how many, the sweep's code, one line per job."""
    code = worst(f.code for f in failures)
    lines = [f"tgp: {len(failures)} job{'s' * (len(failures) != 1)} of this sweep failed; the others ran "
             f"({describe(code)}). Fix what each line says, then re-run the same command: finished jobs are skipped."]
    for f in failures:
        where = f" (error in {f.error_file})" if f.error_file else ""
        lines.append(f"  failed [{f.code}] {f.job}{where}: {f.summary}")
    return "\n".join(lines)


def error_file(run_dir: Path) -> str | None:
    path = Path(run_dir) / "error.txt"
    return str(path) if path.exists() else None
