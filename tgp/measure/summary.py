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


def _row_score(row: dict, which: str):
    """The row's ``score_<which>`` (``top1_<which>`` in a row written before scores were)."""
    value = row.get(f"score_{which}")
    return value if value is not None else row.get(f"top1_{which}")


def metrics_row(cfg: DictConfig, spec, job, final_stage: str, net: torch.nn.Module, mask: Mask | None) -> dict:
    """The flat row of the run-directory contract (see the README).

    ``measured_sparsity`` is over the weights the mask covers (the prunable set, after
    ``pruning.exclude``), read off the weights; ``sparsity_all`` over every parameter. ``dataset`` is
    the datamodule's ``name`` (the one dataset name of a run: a text task's key); ``dense_stage`` and
    ``uses_teacher`` are the method spec's (:class:`~tgp.methods.MethodSpec`), for the report's
    dense-student rows and its ±KD variant labels.

    **Scores** (every dataset): ``score_name`` (``dm.scoring.name``: images ``top1``; a text task ``mcc``,
    ``acc``, ``acc_f1``, ``pearson_spearman``) and ``score_last``, ``score_best_val``, ``score_teacher``,
    ``score_dense_student``, ``score_pruned`` — the single score of the test split (the mean of the task's
    metrics, over its evaluation sets when it has several: :mod:`tgp.metrics.scoring`); ``metrics_last`` /
    ``metrics_best_val`` (``{metric: value}``), ``groups_last`` / ``groups_best_val`` (``{set: {metric:
    value}}`` for MNLI matched/mismatched and XGLUE's languages, else None) and ``benchmark`` (``glue``,
    ``xglue`` or None). For images ``top1_*`` equal ``score_*``; a text row's ``top1_*`` are None.
    ``val_acc_best`` is the final stage's best *validation* score (the sweeper's objective).
    """
    dm = job.dm
    total_prunable, zeros = masked_sparsity(net, mask)
    params_total, params_nonzero = count_parameters(net)
    flops_dense, flops_nonzero = flops(net, dm.example_input)
    res = job.results
    final = res[final_stage]
    dense_stage = spec.dense_stage
    scoring = dm.scoring
    row = {
        "method": str(cfg.method.name),
        # an ablation of the method the report keeps apart (MethodSpec.variant: SDP's λ=0), else None
        "variant": spec.variant(cfg) if spec.variant is not None else None,
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
        "target_sparsity": float(cfg.pruning.sparsity) if spec.prunes else 0.0,
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
        "score_name": scoring.name,
        "score_last": _score(final, "last"),
        "score_best_val": _score(final, "best_val"),
        "score_teacher": _score(res.get("teacher", {}), "last"),
        "score_dense_student": _score(res.get(dense_stage, {}), "last") if dense_stage else None,
        "score_pruned": _score(res.get("prune", {}), "pruned"),
        "metrics_last": final.get("metrics_last"),
        "metrics_best_val": final.get("metrics_best_val"),
        "groups_last": final.get("groups_last"),
        "groups_best_val": final.get("groups_best_val"),
        "benchmark": getattr(dm, "benchmark", None),
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


def _score(result: dict, which: str) -> float | None:
    """A stage result's ``score_<which>``; a stage stored before scores were recorded has the top-1 only
    (images), which is the score there."""
    value = result.get(f"score_{which}")
    return value if value is not None else result.get(f"top1_{which}")


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


SCORE_LABELS = {"top1": "top-1"}


def summary_table(row: dict, run_dir: Path) -> str:
    """A plain-text table of the run's scores (by the data's score name: top-1, mcc, acc_f1, ...)."""
    variant = " (KD)" if row.get("retrain_kd") else (" (CE)" if _row_score(row, "teacher") is not None else "")
    lines = [
        ("dense teacher", _row_score(row, "teacher"), None),
        ("dense student", _row_score(row, "dense_student"), None),
        ("pruned, before retraining", _row_score(row, "pruned"), row.get("measured_sparsity")),
        (f"retrained{variant}, last epoch", _row_score(row, "last"), row.get("measured_sparsity")),
        (f"retrained{variant}, best val epoch", _row_score(row, "best_val"), row.get("measured_sparsity")),
    ]
    name = row.get("score_name") or "top1"
    head = f"test {SCORE_LABELS.get(name, name)} %"
    out = [f"{row['method']} on {row['dataset']} / {row['model']}  (seed {row['seed']}, run {run_dir})",
           f"{'model':<38}{head:>{max(14, len(head) + 2)}}{'sparsity %':>12}"]
    out += [f"{label:<38}{_pct(acc):>{max(14, len(head) + 2)}}{_pct(sp) if sp is not None else '0.00':>12}"
            for label, acc, sp in lines]
    metrics, groups = row.get("metrics_best_val") or {}, row.get("groups_best_val") or {}
    if len(metrics) > 1 or groups:
        parts = [f"{k} {_pct(v)}" for k, v in metrics.items()]
        parts += [f"{g}: " + ", ".join(f"{k} {_pct(v)}" for k, v in m.items()) for g, m in groups.items()]
        out.append("best val epoch, test metrics %: " + "; ".join(parts))
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
