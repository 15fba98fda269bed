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

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.io import atomic_save_json, atomic_torch_save
from tgp.methods import get_method
from tgp.methods.common import load_stage_net
from tgp.pruning.mask import load_mask
from tgp.pruning.threshold import check_sparsity
from tgp.report.summary import metrics_row, summary_table
from tgp.stages import StageRunner

log = logging.getLogger("tgp")


def build_datamodule(cfg: DictConfig):
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def run_pipeline(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run ``cfg.method`` in ``run_dir``; return the metrics row (also written to ``metrics.json``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_sparsity(cfg.pruning.sparsity)
    method = get_method(str(cfg.method.name))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    dm = build_datamodule(cfg)
    runner = StageRunner(cfg, run_dir, dm)
    final_stage = method(runner)

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
