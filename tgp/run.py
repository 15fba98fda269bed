"""Entry point: ``python -m tgp.run [hydra overrides]`` (console script ``tgp-run``).

Thin on purpose: check the command line, compose the config, run the pipeline, report. A user
error (a bad setting, missing data, a checkpoint that does not fit) is printed as one paragraph and
exits with code 2. :func:`~tgp.checks.precheck` refuses what makes the whole job or sweep impossible
(config files, options and keys, types, missing extras, unwritable output folders, a GPU trainer without
CUDA) before Hydra starts; the job refuses the rest (:func:`tgp.pipeline.prepare_job`) before it writes
anything into its folder.

**A refusal writes nothing.** Hydra would write the job's ``.hydra/`` and open its ``run.log`` before
the job runs, into a folder that may hold a finished run (the run folder is named by the settings
that change results, so ``data.num_workers=-1`` lands in the folder of the run without it). So
``hydra.output_subdir`` is null and the job writes ``.hydra/`` itself once its settings passed
(:func:`write_hydra_files`), ``run.log`` is opened by its first line (``delay``) and the lines logged
while the job is checked are held back until then (:func:`tgp.logs.held_file_logs`). In a multirun a
refused job whose folder holds no finished run gets its ``error.txt`` and the sweep goes on; a job
that fails later has its error written to its folder likewise. Once every job has run, the sweep
exits with the worst of its jobs' exit codes, its last lines naming each failed job (:mod:`tgp.exits`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tgp.checks import precheck
from tgp.checks.hardware import check_launch  # noqa: F401 - tgp.run.check_launch, as before
from tgp.errors import TGPError
from tgp.exits import CRASH, JobFailed, JobFailure, error_file, error_summary, record_failure, sweep_report, take_failures, worst
from tgp.naming import register_resolvers
from tgp.resources import CONFIG_DIR

register_resolvers()
log = logging.getLogger("tgp")
SWEEP_PID = "TGP_SWEEP_PID"  # the pid of the process that runs the sweep (tgp.run.main)


HYDRA_SUBDIR = ".hydra"  # where Hydra would write them (hydra.output_subdir is null: see the module docstring)


def prepare(cfg: DictConfig, multirun: bool):
    """The job's checks (writing nothing): its launch mode where it runs on another machine than the command
    line, then :func:`tgp.pipeline.prepare_job` (the data, an untrained student, every setting)."""
    from tgp.checks.job import check_job_launch
    from tgp.logs import quiet_lightning
    from tgp.pipeline import prepare_job  # heavy imports after Hydra has parsed the command line

    quiet_lightning()
    apply_extras(cfg)
    check_job_launch(cfg, multirun, str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default="") or ""))
    return prepare_job(cfg)


def write_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them, atomically."""
    from tgp.io import atomic_write_bytes

    hydra_cfg = HydraConfig.instance().cfg
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        text = OmegaConf.to_yaml(node).encode()
        atomic_write_bytes(run_dir / HYDRA_SUBDIR / name, lambda f, text=text: f.write(text))


def main() -> float | None:
    """``tgp-run`` / ``python -m tgp.run``: refuse bad settings (one paragraph, exit 2), then run Hydra.

    Exit codes: :mod:`tgp.exits`. A multirun runs every job, then exits with the worst of its jobs'
    codes, its last lines naming each failed job and its ``error.txt``."""
    try:
        precheck(sys.argv[1:], cluster=True)
    except TGPError as e:  # nothing has been created yet
        print(f"tgp: error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Exception:  # noqa: BLE001 - a command line the precheck does not understand: Hydra judges it alone
        pass
    code = None
    os.environ[SWEEP_PID] = str(os.getpid())  # a job in this very process needs no failed JobReturn
    try:
        value = hydra_main()
    except SystemExit as e:  # Hydra's own exit (its error printed), a stopped sweep or job, a refusal
        code = e.code if isinstance(e.code, int) else (1 if e.code else 0)
    failures = take_failures()  # the jobs of a multirun that failed (in this process or a launcher's)
    if failures:
        if code == 1:  # Hydra's sweeper re-raised the first failed job's result (hydra/launcher=node): not a crash
            code = None
        print(sweep_report(failures), file=sys.stderr, flush=True)
        sys.exit(worst([*(f.code for f in failures), code or 0]))
    if code is not None:
        sys.exit(code)
    return value


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    from tgp.logs import held_file_logs

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with held_file_logs() as file_logs:  # run.log gets these lines only if the job goes on
        done = _finished_row(run_dir) if multirun else None
        if done is not None:  # re-running a sweep skips its finished jobs (their folders untouched)
            file_logs.discard()
            log.info("job done already (%s): skipped; delete its metrics.json to recompute", run_dir / "metrics.json")
            return objective(done)
        try:
            prepared = prepare(cfg, multirun)
        except TGPError as e:
            message = f"tgp: error: {e}"
            if not multirun:  # the console says it; the folder stays as it was (Hydra's empty one goes)
                file_logs.discard()
                print(message, file=sys.stderr, flush=True)
                _remove_if_empty(run_dir)
                sys.exit(e.exit_code)
            # A multirun job's record (error.txt, Hydra's files that say which job it was — the report
            # names a failed job from them — and a failed W&B run with logger=wandb); its folder holds no
            # finished run (that job was skipped above).
            from tgp.logging_wandb import wandb_job

            with contextlib.suppress(OSError):  # a full disk must not hide the refusal itself
                write_hydra_files(cfg, run_dir)
            _record_failure(run_dir, message)
            with wandb_job(cfg, run_dir) as outcome:
                outcome["error"] = message
            log.error("job refused, sweep continues: %s", e)
            return _sweep_job_failed(run_dir, e.exit_code, message)
    write_hydra_files(cfg, run_dir)
    from tgp.logging_wandb import wandb_job
    from tgp.pipeline import run_pipeline

    with wandb_job(cfg, run_dir) as outcome:  # one W&B run per job, finished in a `finally`
        try:
            row = run_pipeline(cfg, run_dir, prepared)
            outcome["row"] = row
            (run_dir / "error.txt").unlink(missing_ok=True)
            return objective(row)
        except Exception as e:
            from tgp.io import disk_full_error

            told = e if isinstance(e, TGPError) else disk_full_error(e, run_dir)  # a full disk: one paragraph too
            if told is None:
                return _crashed(run_dir, outcome, multirun)
            message = f"tgp: error: {told}"
            outcome["error"] = message
            _record_failure(run_dir, message)
            if multirun:
                log.error("job failed, sweep continues: %s", told)
                return _sweep_job_failed(run_dir, told.exit_code, message)
            print(message, file=sys.stderr, flush=True)
            sys.exit(told.exit_code)


def _crashed(run_dir: Path, outcome: dict, multirun: bool) -> None:
    """A bug: its traceback into ``error.txt``; in a multirun the sweep goes on, else it is raised
    (called from the ``except`` block: the bare ``raise`` re-raises the exception being handled)."""
    outcome["error"] = traceback.format_exc()
    _record_failure(run_dir, outcome["error"])
    if multirun:
        log.exception("job failed, sweep continues (error in %s)", run_dir / "error.txt")
        return _sweep_job_failed(run_dir, CRASH, outcome["error"])
    raise


def objective(row: dict) -> float | None:
    """What a job returns to a sweeper (Optuna maximizes it): the final stage's best VALIDATION top-1
    (``val_acc_best``), never a test-split number. None (a failed trial) when no validation ran."""
    value = row.get("val_acc_best")
    return float(value) if value is not None else None


# Known noise: warnings that say nothing about the job (library deprecations, Lightning's hints about
# workers and log intervals on tiny data, non-empty stage folders, optuna's experimental-API notes).
_NOISE = (
    (DeprecationWarning, None), (FutureWarning, None), (PendingDeprecationWarning, None),
    (UserWarning, r".*(num_workers|does not have many workers|logging interval|log_every_n_steps).*"),
    (UserWarning, r".*exists and is not empty.*"),  # a stage resumes into its own folder on purpose
    (UserWarning, r".*(is an experimental|experimental feature|ExperimentalWarning).*"),
)


def apply_extras(cfg: DictConfig) -> None:
    """``extras``: ``ignore_warnings`` silences :data:`_NOISE`; ``print_config`` prints the job's config
    as a tree (rich) before it runs (``--cfg job`` prints it without running)."""
    import warnings

    extras = OmegaConf.select(cfg, "extras", default=None) or {}
    if extras.get("ignore_warnings", False):
        for category, message in _NOISE:
            warnings.filterwarnings("ignore", message=message or "", category=category)
        if "optuna" in sys.modules:  # only an Optuna sweep has it loaded; importing it costs a second
            from optuna.exceptions import ExperimentalWarning

            warnings.filterwarnings("ignore", category=ExperimentalWarning)
    if extras.get("print_config", False):
        print_config_tree(cfg)


def print_config_tree(cfg: DictConfig, file=None) -> None:
    """The config as a rich tree: one branch per top-level node, its YAML inside (unresolvable values
    are shown as written)."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold")
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            try:
                text = OmegaConf.to_yaml(value, resolve=True)
            except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a job
                text = OmegaConf.to_yaml(value)
        else:
            text = str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console = rich.console.Console(file=file) if file is not None else rich.get_console()
    console.print(tree)


def _finished_row(run_dir: Path) -> dict | None:
    """The job's metrics.json row when it finished (and did not fail since), else None."""
    import json

    metrics, error = run_dir / "metrics.json", run_dir / "error.txt"
    if not metrics.exists() or (error.exists() and error.stat().st_mtime > metrics.stat().st_mtime):
        return None
    try:
        row = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None
    if row.get("status", "ok") != "ok":
        return None
    from tgp.integrity import run_problems

    # Only a run whose files verify is done: a damaged one runs again (its damaged stages are set aside
    # and recomputed, intact ones reused), so the report that listed it as damaged lists it done next.
    problems, _ = run_problems(run_dir)
    if problems:
        listed = "; ".join(f"{path}: {why}" for path, why in problems[:3]) + ("; ..." if len(problems) > 3 else "")
        log.warning("job finished before but its files are damaged (%s): running it again", listed)
        return None
    return row


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty folder: the one Hydra created for this job
    except OSError:
        pass


def _sweep_job_failed(run_dir: Path, code: int, text: str) -> None:
    """Record a failed multirun job for the sweep's exit code and last lines (:mod:`tgp.exits`). In the
    sweep's own process (Hydra's basic launcher) the record is all it takes. Anywhere else (submitit,
    SLURM, the node launcher's job processes) the job ends as failed: Hydra's ``run_job`` keeps the
    raised :class:`JobFailed` as the job's result and the launcher carries it back to the sweep's
    process, where unpickling records it; the sweep goes on to its other jobs."""
    hc = HydraConfig.get()
    job = f"#{hc.job.num} {' '.join(hc.overrides.task)}"
    failure = JobFailure(job, int(code), error_file(run_dir), error_summary(text))
    record_failure(failure)
    if os.environ.get(SWEEP_PID) != str(os.getpid()):
        raise JobFailed(failure)


def _record_failure(run_dir: Path, text: str) -> None:
    from tgp.io import atomic_write_bytes

    try:
        atomic_write_bytes(run_dir / "error.txt", lambda f: f.write(text.encode()))
    except OSError:
        pass


if __name__ == "__main__":
    main()
