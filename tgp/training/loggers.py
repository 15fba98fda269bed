"""The config's ``logger`` group for one stage: CSV per attempt, one W&B run per job."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def make_loggers(cfg: DictConfig, stage: str, folder: Path, version: str | None = None) -> list:
    """Instantiate ``cfg.logger`` (a dict of named loggers) for one stage; the CSV logger writes to
    ``folder/logs/<version>/`` (Lightning's CSVLogger deletes an existing metrics.csv, so every
    attempt gets its own) or, with ``version=None``, to ``folder`` itself."""
    out = []
    for name, lcfg in (OmegaConf.select(cfg, "logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        if lcfg._target_.endswith("CSVLogger"):
            where = dict(name="", version="") if version is None else dict(name="logs", version=version)
            out.append(instantiate(lcfg, save_dir=str(folder), **where))
        elif lcfg._target_.endswith("WandbLogger"):  # one W&B run per job, shared by its stages
            from tgp.logging_wandb import job_logger

            out.append(job_logger(cfg, lcfg))
        else:
            out.append(instantiate(lcfg))
    return out
