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
    from tgp.pipeline import run_pipeline  # heavy imports after Hydra has parsed the command line

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return run_pipeline(cfg, run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        row = run_job(cfg)
        (run_dir / "error.txt").unlink(missing_ok=True)
        return row.get("top1_best_val")
    except TGPError as e:
        message = f"tgp: error: {e}"
        _record_failure(run_dir, message)
        if multirun:
            log.error("job failed, sweep continues: %s", e)
            return None
        print(message, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Exception:
        _record_failure(run_dir, traceback.format_exc())
        if multirun:
            log.exception("job failed, sweep continues (error in %s)", run_dir / "error.txt")
            return None
        raise


def _record_failure(run_dir: Path, text: str) -> None:
    from tgp.io import atomic_write_bytes

    try:
        atomic_write_bytes(run_dir / "error.txt", lambda f: f.write(text.encode()))
    except OSError:
        pass


if __name__ == "__main__":
    main()
