"""Entry point: ``python -m tgp.run [hydra overrides]`` (console script ``tgp-run``).

Thin on purpose: check the command line, compose the config, run the pipeline, report. A user
error (a bad setting, missing data, a checkpoint that does not fit) is printed as one paragraph and
exits with code 2. :func:`precheck` refuses what makes the whole job or sweep impossible (unknown
config options and keys, unwritable output folders, a GPU trainer without CUDA) before Hydra creates
anything; :func:`tgp.checks.validate_job` refuses the rest before the first stage. In a multirun a
job that fails later has its error written to its folder and the sweep goes on.
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
    """``tgp-run`` / ``python -m tgp.run``: refuse bad settings (one paragraph, exit 2), then run Hydra."""
    try:
        precheck(sys.argv[1:], cluster=True)
    except TGPError as e:  # nothing has been created yet
        print(f"tgp: error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Exception:  # noqa: BLE001 - a command line the precheck does not understand: Hydra judges it alone
        pass
    return hydra_main()


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
        except TGPError as e:
            message = f"tgp: error: {e}"
            outcome["error"] = message
            _record_failure(run_dir, message)
            if multirun:
                log.error("job failed, sweep continues: %s", e)
                return None
            print(message, file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        except Exception:
            outcome["error"] = traceback.format_exc()
            _record_failure(run_dir, outcome["error"])
            if multirun:
                log.exception("job failed, sweep continues (error in %s)", run_dir / "error.txt")
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


def _record_failure(run_dir: Path, text: str) -> None:
    from tgp.io import atomic_write_bytes

    try:
        atomic_write_bytes(run_dir / "error.txt", lambda f: f.write(text.encode()))
    except OSError:
        pass


if __name__ == "__main__":
    main()
