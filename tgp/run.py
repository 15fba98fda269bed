"""Entry point: ``python -m tgp.run [hydra overrides]`` (console script ``tgp-run``).

Thin on purpose: check the command line, compose the config, run the pipeline, report. A user
error (a bad setting, missing data, a checkpoint that does not fit) is printed as one paragraph and
exits with code 2. :func:`precheck` refuses what makes the whole job or sweep impossible (unknown
config options and keys, unwritable output folders, a GPU trainer without CUDA) before Hydra creates
anything; :func:`tgp.checks.validate_job` refuses the rest before the first stage. In a multirun a
job that fails later has its error written to its folder and the sweep goes on; once every job has
run, the sweep exits with the worst of its jobs' exit codes (:mod:`tgp.exits`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tgp.errors import TGPError
from tgp.exits import CRASH, JobFailure, error_file, error_summary, record_failure, sweep_report, take_failures, worst
from tgp.naming import register_resolvers
from tgp.precheck import CONFIG_DIR, check_launch, precheck

register_resolvers()
log = logging.getLogger("tgp")


def run_job(cfg: DictConfig) -> dict:
    from tgp.logs import quiet_lightning
    from tgp.pipeline import run_pipeline  # heavy imports after Hydra has parsed the command line

    quiet_lightning()
    apply_extras(cfg)

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return run_pipeline(cfg, run_dir)


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
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_launch(cfg)
    except TGPError as e:  # the whole job (or sweep) is wrong: stop before anything runs
        message = f"tgp: error: {e}"
        _record_failure(run_dir, message)
        print(message, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    if multirun:
        done = _finished_row(run_dir)
        if done is not None:  # re-running a sweep skips its finished jobs
            log.info("job done already (%s): skipped; delete its metrics.json to recompute", run_dir / "metrics.json")
            return objective(done)
    from tgp.logging_wandb import wandb_job

    with wandb_job(cfg, run_dir) as outcome:  # one W&B run per job, finished in a `finally`
        try:
            row = run_job(cfg)
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
                _sweep_job_failed(run_dir, told.exit_code, message)
                return None
            print(message, file=sys.stderr, flush=True)
            sys.exit(told.exit_code)


def _crashed(run_dir: Path, outcome: dict, multirun: bool) -> None:
    """A bug: its traceback into ``error.txt``; in a multirun the sweep goes on, else it is raised
    (called from the ``except`` block: the bare ``raise`` re-raises the exception being handled)."""
    outcome["error"] = traceback.format_exc()
    _record_failure(run_dir, outcome["error"])
    if multirun:
        log.exception("job failed, sweep continues (error in %s)", run_dir / "error.txt")
        _sweep_job_failed(run_dir, CRASH, outcome["error"])
        return None
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
    return row if row.get("status", "ok") == "ok" else None


def _sweep_job_failed(run_dir: Path, code: int, text: str) -> None:
    """Record a failed multirun job for the sweep's exit code and last lines (:mod:`tgp.exits`)."""
    hc = HydraConfig.get()
    job = f"#{hc.job.num} {' '.join(hc.overrides.task)}"
    record_failure(JobFailure(job, int(code), error_file(run_dir), error_summary(text)))


def _record_failure(run_dir: Path, text: str) -> None:
    from tgp.io import atomic_write_bytes

    try:
        atomic_write_bytes(run_dir / "error.txt", lambda f: f.write(text.encode()))
    except OSError:
        pass


if __name__ == "__main__":
    main()
