"""One job: build the data, run the method's stages in the run directory, write the report.

The run-directory contract (users and scripts read it)::

    <run_dir>/config.yaml                resolved config
    <run_dir>/<stage>/                   one folder per stage (a link into paths.stage_store)
        result.json                      written last: the stage is done
        last.ckpt, best.ckpt, net.pt     Lightning checkpoints (masks inside once pruned), plain weights
    <run_dir>/prune/mask.pt              {param_name: bool tensor}, True = kept
    <run_dir>/prune/sparsity_report.json per-layer and global: total, kept, sparsity
    <run_dir>/student_sparse.pt          plain state_dict of the final student (zeros in place)
    <run_dir>/metrics.json               one flat row (see tgp.report.summary.metrics_row)
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError, TGPError
from tgp.io import atomic_save_json, atomic_torch_save, atomic_write_bytes
from tgp.methods import get_method
from tgp.methods.common import load_stage_net
from tgp.pruning.mask import load_mask
from tgp.pruning.threshold import check_sparsity
from tgp.report.summary import metrics_row, summary_table
from tgp.pruning.mask import prunable_parameters
from tgp.stages import StageRunner, StopPipeline

log = logging.getLogger("tgp")
MASK_INPUT_METHODS = ("tgp", "ce_grad", "magnitude", "random", "snip", "epsd")


def instantiate_checked(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that lets our one-paragraph errors through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, TGPError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build_datamodule(cfg: DictConfig):
    dm = instantiate_checked(cfg.data)
    dm.setup("fit")
    return dm


def validate_before_running(cfg: DictConfig, dm) -> None:
    """Settings that would only fail deep inside a stage (or a DDP worker) are checked here, first."""
    student = instantiate_checked(cfg.model, num_classes=dm.num_classes, in_channels=dm.in_channels)
    prunable_parameters(student, list(cfg.pruning.exclude))  # raises on a pattern that matches nothing
    if cfg.pruning.get("mask") and str(cfg.method.name) not in MASK_INPUT_METHODS:
        raise ConfigError("pruning.mask", cfg.pruning.mask, f"method {cfg.method.name} computes its own masks.",
                          f"use pruning.mask with one of {', '.join(MASK_INPUT_METHODS)}, or drop it.")


def run_pipeline(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run ``cfg.method`` in ``run_dir``; return the metrics row (also written to ``metrics.json``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_sparsity(cfg.pruning.sparsity)
    method = get_method(str(cfg.method.name))
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write_bytes(run_dir / "config.yaml", lambda f: f.write(text))
    dm = build_datamodule(cfg)
    validate_before_running(cfg, dm)
    runner = StageRunner(cfg, run_dir, dm)
    try:
        final_stage = method(runner)
    except StopPipeline as stop:
        log.info("stopped after stage %s (stop_after); re-run without it to continue", stop)
        return {"status": f"stopped_after_{stop}", "run_dir": str(run_dir)}

    net = load_stage_net(runner, cfg.model, final_stage)
    mask_path = run_dir / "prune" / "mask.pt"
    if mask_path.exists():
        mask = load_mask(mask_path, net)
        params = dict(net.named_parameters())
        leaked = [n for n, m in mask.items() if bool(params[n].detach()[~m].ne(0).any())]
        if leaked:  # a broken invariant, not a user error: fail loudly
            raise RuntimeError(f"pruned weights are nonzero after {final_stage}: {leaked}")
    atomic_torch_save(net.state_dict(), run_dir / "student_sparse.pt")
    row = metrics_row(cfg, runner, final_stage, net)
    row["run_dir"] = str(run_dir)
    row["status"] = "ok"
    atomic_save_json(row, run_dir / "metrics.json")
    print(summary_table(row, run_dir), flush=True)
    return row
