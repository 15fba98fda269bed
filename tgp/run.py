"""Entry point: ``python -m tgp.run [hydra overrides]`` (console script ``tgp-run``).

Thin on purpose: compose the config, run the pipeline, report. A user error (a bad setting,
missing data, a checkpoint that does not fit) is printed as one paragraph and exits non-zero;
in a multirun the failing job's error is written to its folder and the sweep goes on.
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

register_resolvers()
log = logging.getLogger("tgp")
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run_job(cfg: DictConfig) -> dict:
    from tgp.logs import quiet_lightning
    from tgp.pipeline import run_pipeline  # heavy imports after Hydra has parsed the command line

    quiet_lightning()

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return run_pipeline(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
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
            return done.get("top1_best_val")
    from tgp.logging_wandb import wandb_job

    with wandb_job(cfg, run_dir) as outcome:  # one W&B run per job, finished in a `finally`
        try:
            row = run_job(cfg)
            outcome["row"] = row
            (run_dir / "error.txt").unlink(missing_ok=True)
            return row.get("top1_best_val")
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


# Strategies whose Lightning launcher re-runs the command line (sys.argv) in every other rank.
_RELAUNCHING = ("ddp", "fsdp", "deepspeed")


def check_launch(cfg: DictConfig) -> None:
    """Refuse the DDP launch modes that cannot run a multi-stage job correctly.

    A job runs several stages, each a fresh ``Trainer.fit``; ``ddp_spawn`` starts the rank
    processes per fit, so every rank runs exactly the stage at hand. Lightning's ``ddp``
    launcher instead re-runs the whole command line in every other rank: that rank would run
    the whole pipeline from its first stage (and under ``-m`` the whole sweep), waiting on
    locks the first rank holds. Ranks started from outside (torchrun, srun with several tasks)
    do the same. All three are refused here, before anything runs.
    """
    import os

    from tgp.errors import ConfigError

    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1"
    if world.isdigit() and int(world) > 1:
        raise ConfigError(
            "launcher", f"{world} processes started from outside (torchrun/srun)",
            "tgp starts its DDP processes itself, once per stage (ddp_spawn); ranks started from outside would each "
            "run the whole multi-stage job.",
            "start one process per job (SLURM: ntasks_per_node=1) with trainer=ddp, which uses every GPU of the node.",
        )
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "auto")
    name = name.lower()
    spawning = any(k in name for k in ("spawn", "fork", "notebook"))
    relaunching = not spawning and any(name.startswith(p) or f".{p}" in name for p in _RELAUNCHING)
    if name == "auto":  # Lightning picks `ddp` (subprocess launcher) for more than one device
        devices = OmegaConf.select(cfg, "trainer.devices", default=1)
        accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
        if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
            many = len(devices) > 1
        elif str(devices) in ("-1", "auto"):
            import torch

            many = accel != "cpu" and torch.cuda.device_count() > 1
        else:
            many = int(devices) > 1
        relaunching = many
    if relaunching:
        raise ConfigError(
            "trainer.strategy", strategy,
            "Lightning's `ddp` launcher re-runs the whole command line in every other rank: there it would re-run "
            "every stage of the job (and under Hydra multirun, -m, the whole sweep), with wrong results or a hang.",
            "use trainer.strategy=ddp_spawn (trainer=ddp on GPUs, trainer=ddp_sim on the CPU do).",
        )


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
