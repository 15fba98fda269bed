"""One job: build the data, check every setting, run the method's stages in the run directory, write the report.

The run-directory contract (users and scripts read it)::

    <run_dir>/config.yaml                resolved config
    <run_dir>/<stage>/                   one folder per stage (a link into paths.stage_store)
        result.json                      written last: the stage is done (kind, version, key, seconds, attempts,
                                         files: the size and SHA-256 of every file it wrote; tgp.integrity)
        attempts.json                    one entry per start of the stage (seconds, status)
        last.ckpt, best.ckpt, net.pt     Lightning checkpoints (masks inside once pruned), plain weights
        metrics.csv                      every epoch's logged metrics, exactly once across resumes
    <run_dir>/prune/mask.pt              {param_name: bool tensor}, True = kept
    <run_dir>/prune/sparsity_report.json per-layer and global: total, kept, sparsity
    <run_dir>/student_sparse.pt          plain state_dict of the final student (zeros in place)
    <run_dir>/metrics.json               one flat row (see tgp.report.summary.metrics_row), with the size and
                                         SHA-256 of student_sparse.pt (student_sparse_size, _sha256)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.checks import validate_job
from tgp.errors import TGPError
from tgp.integrity import student_record
from tgp.io import atomic_save_json, atomic_torch_save, atomic_write_bytes
from tgp.job import Job
from tgp.logs import FILE_ONLY, configure_console
from tgp.methods import get_method
from tgp.pruning.mask import load_mask
from tgp.pruning.threshold import check_sparsity
from tgp.report.summary import metrics_row, summary_table
from tgp.stages import StopPipeline

log = logging.getLogger("tgp")


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


def run_pipeline(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run ``cfg.method`` in ``run_dir``; return the metrics row (also written to ``metrics.json``).

    Every setting is checked before anything is written to ``run_dir`` or the stage store.
    """
    run_dir = Path(run_dir)
    configure_console(cfg)  # verbose=false: one line per stage, Lightning's INFO lines in run.log only
    check_sparsity(cfg.pruning.sparsity)
    spec = get_method(str(cfg.method.name))
    dm = build_datamodule(cfg)
    student = instantiate_checked(cfg.model, num_classes=dm.num_classes, in_channels=dm.in_channels)
    validate_job(cfg, spec, dm, student)
    if spec.check is not None:
        spec.check(cfg, dm)

    run_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write_bytes(run_dir / "config.yaml", lambda f: f.write(text))
    job = Job(cfg, run_dir, dm)
    try:
        final_stage = spec.run(job)
    except StopPipeline as stop:
        log.info("stopped after stage %s (stop_after); re-run without it to continue", stop)
        return {"status": f"stopped_after_{stop}", "run_dir": str(run_dir)}

    net = instantiate(cfg.model, num_classes=dm.num_classes, in_channels=dm.in_channels)
    net.load_state_dict(torch.load(job.stage_path(final_stage, "net.pt"), map_location="cpu", weights_only=True))
    mask_path = job.stage_path("prune", "mask.pt")
    mask = load_mask(mask_path, net) if mask_path.exists() else None
    if mask is not None:
        params = dict(net.named_parameters())
        leaked = [n for n, m in mask.items() if bool(params[n].detach()[~m].ne(0).any())]
        if leaked:  # a broken invariant, not a user error: fail loudly
            raise RuntimeError(f"pruned weights are nonzero after {final_stage}: {leaked}")
    atomic_torch_save(net.state_dict(), run_dir / "student_sparse.pt")
    row = metrics_row(cfg, spec, job, final_stage, net, mask)
    row["run_dir"] = str(run_dir)
    row.update(student_record(run_dir / "student_sparse.pt"))  # what tgp-eval and tgp-verify check it against
    row["status"] = "ok"
    atomic_save_json(row, run_dir / "metrics.json")
    table = summary_table(row, run_dir)
    print(table, flush=True)  # as it is on the console; into Hydra's job log (run.log) only through the logger
    log.info("summary\n%s", table, extra=FILE_ONLY)
    return row
