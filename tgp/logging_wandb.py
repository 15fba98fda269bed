"""Weights & Biases: one W&B run per job, offline unless credentials exist, always finished.

``logger=wandb`` (conf/logger/wandb.yaml) names a Lightning ``WandbLogger``. Every stage of a
job builds a fresh ``Trainer``; :func:`job_logger` hands all of them the *same* logger, so the
stages share one W&B run (their metrics already carry stage prefixes, ``kd_pretrain/val/acc``).
The run's ``id`` is derived from the run directory and opened with ``resume="allow"``: a job
that is re-run (resumed) continues its run instead of starting another one.

With ``trainer=ddp`` / ``ddp_sim`` (``ddp_spawn``) Lightning pickles the logger into the
spawned workers; its ``__getstate__`` creates the run in the job's process first and the rank-0
worker attaches to it through the wandb service, so a DDP job still yields one run
(tests/test_wandb.py checks this).

The entry point wraps each job in :func:`wandb_job`, which logs the sparsity report and the
``metrics.json`` row as the run summary and calls ``finish()`` in a ``finally`` (exit code 1
when the job failed). Without an API key the mode is ``offline`` (``WANDB_MODE`` set by the user
wins) and the command to upload the run later is printed: no login prompt, ever. W&B's own banners
and footer stay off the console unless ``verbose=true`` (``WANDB_SILENT``, see :mod:`tgp.logs`).

A stage the job reused from the stage store (the usual case in a sweep: one teacher and one
KD-pretrained student serve every sparsity) computed nothing, so its Trainer logged nothing; its
curves are replayed from its ``metrics.csv`` into this job's run, and the summary marks every stage
``<stage>/reused`` 1 or 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("tgp")

_CURRENT: _JobRun | None = None


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")))
    except Exception:  # noqa: BLE001 - a private helper of wandb; absent or changed means "no key known"
        return False


def ensure_wandb_mode() -> str:
    """Set ``WANDB_MODE=offline`` unless the user chose a mode or credentials exist; return the mode."""
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        mode = "online" if has_wandb_credentials() else "offline"
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"
    return mode


def run_id_for(run_dir: str | Path) -> str:
    """A stable W&B run id for a run directory (same folder → same W&B run, resumed)."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def find_wandb_logger_cfg(cfg: DictConfig) -> DictConfig | None:
    for lcfg in (OmegaConf.select(cfg, "logger") or {}).values():
        if lcfg is not None and str(lcfg.get("_target_", "")).endswith("WandbLogger"):
            return lcfg
    return None


class _JobRun:
    """The W&B side of one job: a lazily built ``WandbLogger`` shared by all its stages."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.logger = None
        self.reused: list[str] = []  # stages this job took from the stage store (their curves replayed)

    def get_logger(self, lcfg: DictConfig | None = None):
        if self.logger is None:
            from hydra.utils import instantiate

            lcfg = lcfg if lcfg is not None else find_wandb_logger_cfg(self.cfg)
            ensure_wandb_mode()
            from tgp.logs import configure_console

            configure_console(self.cfg)  # WANDB_SILENT unless verbose=true, before wandb starts
            if os.environ.get("WANDB_SILENT", "").lower() in ("1", "true"):
                import wandb

                wandb.setup(settings=wandb.Settings(silent=True))  # silent from the first message on
            self.run_dir.mkdir(parents=True, exist_ok=True)
            kwargs = {"id": run_id_for(self.run_dir), "resume": "allow", "save_dir": str(self.run_dir)}
            kwargs = {k: v for k, v in kwargs.items() if lcfg.get(k) in (None, "")}
            tags = [*(lcfg.get("tags") or []), *(OmegaConf.select(self.cfg, "tags", default=None) or [])]
            if tags:  # the logger's own tags and the config's top-level `tags`, each once
                kwargs["tags"] = [str(t) for t in dict.fromkeys(str(t) for t in tags)]
            self.logger = instantiate(lcfg, **kwargs)
            # The job's settings as the run config (created here, in the job's process: spawned
            # DDP workers attach to this run instead of starting their own).
            from tgp.naming import config_hash, result_relevant_config

            hparams = result_relevant_config(self.cfg)
            hparams["config_hash"] = config_hash(self.cfg)
            try:
                self.logger.log_hyperparams(OmegaConf.to_container(OmegaConf.create(hparams), resolve=True))
            except Exception:  # noqa: BLE001 - an unresolvable value must not stop the job
                self.logger.log_hyperparams(hparams)
        return self.logger

    def replay_stage(self, name: str, folder: Path) -> None:
        """Log a reused stage's per-epoch curves from its own ``metrics.csv`` (the rows its Trainer
        logged when it was computed: the same keys, ``epoch`` and ``trainer/global_step`` as a live
        stage, plus ``<stage>/epoch``) and mark it ``<stage>/reused: 1`` in the summary and in the
        config's ``reused_stages``."""
        import csv

        run = self.get_logger().experiment
        path = Path(folder) / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        for row in rows:
            item = {}
            for k, v in row.items():
                if k in ("epoch", "step") or v in (None, ""):
                    continue
                try:
                    item[k] = float(v)
                except ValueError:
                    continue
            if not item:
                continue
            if row.get("epoch") not in (None, ""):
                item["epoch"] = item[f"{name}/epoch"] = int(float(row["epoch"]))
            if row.get("step") not in (None, ""):
                item["trainer/global_step"] = int(float(row["step"]))
            run.log(item)
        self.reused.append(name)
        run.summary[f"{name}/reused"] = 1
        run.config.update({"reused_stages": list(self.reused)}, allow_val_change=True)

    @property
    def started(self) -> bool:
        return self.logger is not None and getattr(self.logger, "_experiment", None) is not None

    def finish(self, row: dict | None, error: str | None) -> None:
        import wandb

        from tgp.pruning.mask import final_sparsity_report_path

        run = self.logger.experiment  # created here if no stage has logged yet (e.g. a job that failed early)
        summary = {}
        report_path = final_sparsity_report_path(self.run_dir, row) if row and row.get("mask_stage") else None
        if report_path is not None and report_path.exists():
            report = json.loads(report_path.read_text())
            for k, v in report.items():
                if isinstance(v, dict) and k != "layers":
                    summary.update({f"sparsity_report/{k}/{kk}": vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
                elif not isinstance(v, (dict, list)):
                    summary[f"sparsity_report/{k}"] = v
            layers = report.get("layers")
            if isinstance(layers, dict) and layers:
                cols = sorted({c for v in layers.values() if isinstance(v, dict) for c in v})
                table = wandb.Table(columns=["layer", *cols])
                for name, v in layers.items():
                    table.add_data(name, *[v.get(c) if isinstance(v, dict) else None for c in cols])
                run.log({"sparsity_report/layers": table})
        stages = self.run_dir.iterdir() if self.run_dir.is_dir() else ()
        for stage in sorted(p.name for p in stages if (p / "result.json").is_file()):
            summary.setdefault(f"{stage}/reused", 1 if stage in self.reused else 0)
        if row:
            summary.update({k: v for k, v in row.items() if isinstance(v, (int, float, str, bool)) or v is None})
        summary["status"] = "failed" if error else (row or {}).get("status", "ok")
        if error:
            summary["error"] = error.strip().splitlines()[-1][:500] if error.strip() else "error"
        run.summary.update(summary)
        offline = getattr(run, "settings", None) is not None and getattr(run.settings, "mode", "") in ("offline", "dryrun")
        run_dir = getattr(getattr(run, "settings", None), "sync_dir", None)
        url = None if offline else getattr(run, "url", None)
        run.finish(exit_code=1 if error else 0)
        if offline and run_dir:
            print(f"wandb: offline run in {run_dir}; sync with `wandb sync {run_dir}`", flush=True)
        elif url:
            print(f"wandb: run {url}", flush=True)


def job_logger(cfg: DictConfig, lcfg: DictConfig | None = None):
    """The job's shared ``WandbLogger`` (called by ``tgp.stages.make_loggers`` for every stage)."""
    global _CURRENT
    run_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if _CURRENT is None:
        # No wandb_job() around us (run_pipeline called directly): one run per run dir of this process.
        _CURRENT = _JobRun(cfg, Path(run_dir or "."))
    return _CURRENT.get_logger(lcfg)


def stage_reused(name: str, folder: Path) -> None:
    """Called by :class:`tgp.stages.StageRunner` for a stage taken from the store: the job's W&B run
    (if it has one) still gets that stage's curves (:meth:`_JobRun.replay_stage`)."""
    if _CURRENT is None:
        return
    try:
        _CURRENT.replay_stage(name, Path(folder))
    except Exception:  # noqa: BLE001 - logging must never turn a good job into a failed one
        log.warning("could not log the curves of reused stage %s to W&B", name, exc_info=True)


@contextlib.contextmanager
def wandb_job(cfg: DictConfig, run_dir: Path):
    """Around one job: yields a dict the job fills with ``row`` / ``error``; finishes the W&B run."""
    global _CURRENT
    outcome: dict = {"row": None, "error": None}
    lcfg = find_wandb_logger_cfg(cfg)
    if lcfg is None:
        yield outcome
        return
    _CURRENT = job = _JobRun(cfg, run_dir)
    try:
        yield outcome
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        outcome["error"] = outcome["error"] or f"{type(e).__name__}: {e}"
        raise
    finally:
        _CURRENT = None
        try:
            job.get_logger(lcfg)
            job.finish(outcome["row"], outcome["error"])
        except Exception:  # noqa: BLE001 - logging must never turn a good job into a failed one
            log.exception("could not finish the W&B run of %s", run_dir)
