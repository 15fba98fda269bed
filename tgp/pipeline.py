"""One job: build the data, check every setting, run the method's stages in the run directory, write the report.

The run-directory contract (users and scripts read it)::

    <run_dir>/.hydra/                    the composed config, Hydra's settings, the overrides (written
                                         once the job's settings passed their checks: tgp.run)
    <run_dir>/config.yaml                resolved config
    <run_dir>/<stage>/                   one folder per stage (a link into paths.stage_store)
        result.json                      written last: the stage is done (kind, version, key, seconds, attempts,
                                         files: the size and SHA-256 of every file it wrote; tgp.integrity)
        attempts.json                    one entry per start of the stage (seconds, status)
        last.ckpt, best.ckpt, net.pt     Lightning checkpoints (masks inside once pruned), plain weights
        metrics.csv                      every epoch's logged metrics, exactly once across resumes
        mask.pt, sparsity_report.json    in the stage that made a mask
    <run_dir>/student_sparse.pt          plain state_dict of the final student (zeros in place): the
                                         net.pt of the stage metrics.json names as `net_stage`
    <run_dir>/mask.pt                    the final mask {param_name: bool tensor}, True = kept: the mask.pt
                                         of the stage metrics.json names as `mask_stage` (whose
                                         sparsity_report.json has the per-layer and global counts)
    <run_dir>/metrics.json               one flat row (see tgp.measure.summary.metrics_row), with
                                         `net_stage` and `mask_stage`, and the size and SHA-256 of
                                         student_sparse.pt and mask.pt (student_sparse_size, _sha256,
                                         mask_size, mask_sha256)

Runs written before ``<run_dir>/mask.pt`` existed have the final mask in ``prune/mask.pt`` only
(:func:`tgp.pruning.mask.final_mask_path` reads both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from tgp.errors import ConfigError, TGPError
from tgp.integrity import run_file_record
from tgp.io import atomic_save_json, atomic_torch_save, atomic_write_bytes
from tgp.job import Job
from tgp.logs import FILE_ONLY, configure_console
from tgp.measure.summary import metrics_row, summary_table
from tgp.methods import MethodSpec, get_method
from tgp.pruning.mask import MASK_FILE, load_mask, save_mask
from tgp.stages import StopPipeline

log = logging.getLogger("tgp")


def instantiate_checked(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that lets our one-paragraph errors through unwrapped, and says which setting
    refers to one the config does not have (e.g. ``data.tokenizer: ${model.tokenizer}`` with an image model)."""
    try:
        return instantiate(node, **kwargs)
    except InterpolationResolutionError:
        for key in node:
            try:
                node[key]
            except InterpolationResolutionError as e:
                where = f"{node._get_full_key(None)}.{key}".lstrip(".")
                raise ConfigError(where, node._get_node(key)._value(), f"refers to a setting this config does not "
                                  f"have ({str(e).splitlines()[0]}).", f"set {where} itself, or pick the config groups that give what it "
                                  "refers to (a text dataset reads its tokenizer from a text model: model=bert_tiny, "
                                  "bert_base, ...).") from None
        raise
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


@dataclass
class PreparedJob:
    """A job whose every setting passed its checks: its method, data (set up) and an untrained student."""

    spec: MethodSpec
    dm: object
    student: torch.nn.Module


def prepare_job(cfg: DictConfig) -> PreparedJob:
    """Build what the checks need and run them (:func:`tgp.checks.validate_job`), writing nothing anywhere a
    run keeps its results: a refused job leaves its folder (and the stage store) as it was."""
    from tgp.checks import validate_job

    configure_console(cfg)  # verbose=false: one line per stage, Lightning's INFO lines in run.log only
    spec = get_method(str(cfg.method.name))
    dm = build_datamodule(cfg)
    student = instantiate_checked(cfg.model, **dm.model_kwargs())
    validate_job(cfg, spec, dm, student)
    return PreparedJob(spec, dm, student)


def run_pipeline(cfg: DictConfig, run_dir: str | Path, prepared: PreparedJob | None = None) -> dict:
    """Run ``cfg.method`` in ``run_dir``; return the metrics row (also written to ``metrics.json``).

    Every setting is checked before anything is written to ``run_dir`` or the stage store (by
    :func:`prepare_job`, here unless the caller ``prepared`` the job already).
    """
    run_dir = Path(run_dir)
    prepared = prepared or prepare_job(cfg)
    spec, dm = prepared.spec, prepared.dm

    run_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write_bytes(run_dir / "config.yaml", lambda f: f.write(text))
    job = Job(cfg, run_dir, dm)
    try:
        outputs = spec.run(job)
    except StopPipeline as stop:
        log.info("stopped after stage %s (stop_after); re-run without it to continue", stop)
        return {"status": f"stopped_after_{stop}", "run_dir": str(run_dir)}

    net = instantiate(cfg.model, **dm.model_kwargs())
    net.load_state_dict(torch.load(job.net_path(outputs.net_stage), map_location="cpu", weights_only=True))
    mask = load_mask(job.mask_path(outputs.mask_stage), net)
    params = dict(net.named_parameters())
    leaked = [n for n, m in mask.items() if bool(params[n].detach()[~m].ne(0).any())]
    if leaked:  # a broken invariant, not a user error: fail loudly
        raise RuntimeError(f"pruned weights are nonzero in {outputs.net_stage}/net.pt under "
                           f"{outputs.mask_stage}/mask.pt: {leaked}")
    atomic_torch_save(net.state_dict(), run_dir / "student_sparse.pt")
    save_mask(mask, run_dir / MASK_FILE)
    row = metrics_row(cfg, spec, job, outputs.net_stage, net, mask)
    row.update(net_stage=outputs.net_stage, mask_stage=outputs.mask_stage)
    row["run_dir"] = str(run_dir)
    # What tgp-eval, tgp-report and tgp-verify check the run's own files against
    row.update(run_file_record(run_dir / "student_sparse.pt"), **run_file_record(run_dir / MASK_FILE))
    row["status"] = "ok"
    atomic_save_json(row, run_dir / "metrics.json")
    table = summary_table(row, run_dir)
    print(table, flush=True)  # as it is on the console; into Hydra's job log (run.log) only through the logger
    log.info("summary\n%s", table, extra=FILE_ONLY)
    return row
