"""The per-run result: ``metrics.json`` (one flat row) and the one-screen summary.

The row is the one record of a run that :mod:`tgp.report` reads: what the report needs to know
about the method (its dense stage, whether it uses a teacher) and the data (``dataset``, the
datamodule's ``name``) is written here, so the report never looks at the code that ran.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tgp.pruning.mask import Mask
from tgp.measure.connectivity import effective_metrics
from tgp.measure.cost import job_cost_fields
from tgp.measure.flops import count_parameters, flops, masked_sparsity


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def metrics_row(cfg: DictConfig, spec, job, final_stage: str, net: torch.nn.Module, mask: Mask | None) -> dict:
    """The flat row of the run-directory contract (see the README).

    ``measured_sparsity`` is over the weights the mask covers (the prunable set, after
    ``pruning.exclude``), read off the weights; ``sparsity_all`` over every parameter. ``dataset`` is
    the datamodule's ``name`` (the one dataset name of a run); ``dense_stage`` and ``uses_teacher``
    are the method spec's (:class:`~tgp.methods.MethodSpec`), for the report's dense-student rows and
    its ±KD variant labels.
    """
    dm = job.dm
    total_prunable, zeros = masked_sparsity(net, mask)
    params_total, params_nonzero = count_parameters(net)
    flops_dense, flops_nonzero = flops(net, dm.example_input)
    res = job.results
    final = res[final_stage]
    dense_stage = spec.dense_stage
    row = {
        "method": str(cfg.method.name),
        "dataset": dm.name,
        "model": str(OmegaConf.select(cfg, "model.name", default="?")),
        "model_width": OmegaConf.select(cfg, "model.width", default=None),  # "resnet18" names every width
        "uses_teacher": bool(spec.uses_teacher),
        "dense_stage": dense_stage,
        "teacher": str(OmegaConf.select(cfg, "teacher.net.name", default="")) if spec.uses_teacher else None,
        "teacher_width": OmegaConf.select(cfg, "teacher.net.width", default=None) if spec.uses_teacher else None,
        "seed": int(cfg.seed),
        "tags": [str(t) for t in (OmegaConf.select(cfg, "tags", default=None) or [])],  # free labels (config `tags`)
        # KD in retraining needs a teacher; methods without one retrain with their own loss.
        "retrain_kd": bool(OmegaConf.select(cfg, "retrain.kd", default=False)) and spec.uses_teacher,
        "sanity": OmegaConf.select(cfg, "pruning.sanity", default=None),  # sanity-check variant; None = the method
        # torch.compile mode of the job's fits, False = eager (not in stage keys: each result.json says its own)
        "compile": OmegaConf.select(cfg, "compile_mode", default="default") if cfg.get("compile") else False,
        "target_sparsity": float(cfg.pruning.sparsity),
        "measured_sparsity": zeros / max(total_prunable, 1),
        "sparsity_all": (params_total - params_nonzero) / params_total,
        "params_total": params_total,
        "params_nonzero": params_nonzero,
        "flops_dense": flops_dense,
        "flops_nonzero": flops_nonzero,
        "theoretical_speedup": flops_dense / max(flops_nonzero, 1),
        "top1_teacher": res.get("teacher", {}).get("top1_last"),
        "top1_dense_student": res.get(dense_stage, {}).get("top1_last") if dense_stage else None,
        "top1_pruned": res.get("prune", {}).get("top1_pruned"),
        "top1_last": final.get("top1_last"),
        "top1_best_val": final.get("top1_best_val"),
        "val_acc_best": final.get("val_acc_best"),
    }
    # Effective sparsity (weights on no input→output path at this resolution) and effective FLOPs: tgp.measure.connectivity
    row.update(effective_metrics(net, mask, dm.example_input))
    # What the final stage actually trained with (batch_size is global; see tgp.training).
    row["world_size"] = final.get("world_size")
    row["per_rank_batch"] = final.get("per_rank_batch")
    for stage, r in res.items():
        row[f"epochs_{stage}"] = r.get("epochs")
        row[f"seconds_{stage}"] = r.get("seconds")
    # Nominal epochs and seconds of every stage this job used, shared ones included (a loaded teacher costs
    # nothing; a trained one is counted; COLT's half-data epochs count as full ones): kept for continuity.
    row["epochs_total"] = sum((r.get("epochs") or 0) for r in res.values())
    row["seconds_total"] = sum((r.get("seconds") or 0.0) for r in res.values())
    row["stages_skipped"] = list(job.stages.skipped)
    # Cost that compares across methods and machines (tgp.measure.cost): training FLOPs per stage, the job's own
    # stages vs those reused from the stage store, stage keys to count each stage once per sweep, and epochs in
    # full-data-equivalent units (student_epochs_equiv, teacher separate).
    row.update(job_cost_fields(res, job.stages.keys, job.stages.skipped, getattr(dm, "num_train", None)))
    row.update(placement_fields())
    return row


def placement_fields() -> dict:
    """Where this job ran and what it saw: ``launcher_slot`` (``hydra/launcher=node``'s slot, else None),
    ``visible_devices`` (``CUDA_VISIBLE_DEVICES`` as the job saw it; None when unset), ``cpu_affinity``
    (the cores it could run on), ``torch_threads``, and when its process started and this row was
    written (``job_started``/``job_finished``, UTC ISO times; jobs run side by side overlap in them)."""
    slot = os.environ.get("TGP_LAUNCHER_SLOT")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = None
    started = _process_started()
    return {
        "launcher_slot": int(slot) if slot and slot.isdigit() else None,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu_affinity": cpus,
        "torch_threads": torch.get_num_threads(),
        "job_started": _iso(started) if started is not None else None,
        "job_finished": _iso(time.time()),
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def _process_started() -> float | None:
    """This process's start (epoch seconds, to 10 ms) from /proc; None where there is no /proc."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); the fields after "(comm)" start at field 3
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def summary_table(row: dict, run_dir: Path) -> str:
    """A plain-text table; printed with rich when it is installed."""
    variant = " (KD)" if row.get("retrain_kd") else (" (CE)" if row.get("top1_teacher") is not None else "")
    lines = [
        ("dense teacher", row.get("top1_teacher"), None),
        ("dense student", row.get("top1_dense_student"), None),
        ("pruned, before retraining", row.get("top1_pruned"), row.get("measured_sparsity")),
        (f"retrained{variant}, last epoch", row.get("top1_last"), row.get("measured_sparsity")),
        (f"retrained{variant}, best val epoch", row.get("top1_best_val"), row.get("measured_sparsity")),
    ]
    out = [f"{row['method']} on {row['dataset']} / {row['model']}  (seed {row['seed']}, run {run_dir})",
           f"{'model':<38}{'test top-1 %':>14}{'sparsity %':>12}"]
    out += [f"{name:<38}{_pct(acc):>14}{_pct(sp) if sp is not None else '0.00':>12}" for name, acc, sp in lines]
    out.append(
        f"target sparsity {_pct(row['target_sparsity'])}%, measured {_pct(row['measured_sparsity'])}% of prunable weights "
        f"({_pct(row['sparsity_all'])}% of all parameters); nonzero params {row['params_nonzero']:,} / {row['params_total']:,}; "
        f"FLOPs {row['flops_nonzero']:,} nonzero / {row['flops_dense']:,} dense "
        f"({row['theoretical_speedup']:.2f}x theoretical); {row['epochs_total']:g} epochs, {row['seconds_total']:.1f} s"
    )
    if row.get("effective_sparsity") is not None:
        out.append(
            f"effective sparsity {_pct(row['effective_sparsity'])}% (weights on no input→output path; the dense student "
            f"at this resolution: {_pct(row.get('effective_sparsity_dense'))}%); effective FLOPs {row.get('flops_effective', 0):,}"
        )
    return "\n".join(out)
