"""Aggregation of a sweep's metrics rows: groups over seeds (mean, std, CIs), the paired differences
to a reference method, the teacher and dense student as rows of their own, the variant labels and
the training cost per variant. Everything it knows about a job is in the job's row."""

from __future__ import annotations

import logging
import math
from collections import defaultdict

from tgp.report import cost
from tgp.report.references import model_label
from tgp.report.scores import DENSE_METHOD, TOP1, add_scores, flat_metrics, format_count
from tgp.report.stats import is_reference, paired_differences, summarize

log = logging.getLogger("tgp")

#: one row of the report per these (``model`` width-qualified, e.g. ``resnet18-w8``; see :func:`model_label`)
GROUP_KEYS = ("method", "sanity", "dataset", "model", "target_sparsity", "retrain_kd")

#: the score columns of the report (which checkpoint each one is: tgp.report.markdown.CHECKPOINTS); a
#: top-1 group also carries them under their top-1 names (``top1_best_val_mean`` …, :func:`_top1_aliases`)
SCORE_METRICS = ("score_best_val", "score_last")
ACCURACY_METRICS = SCORE_METRICS
AUTO = "auto"
#: per-job numbers summarized over seeds in every method row (besides the scores)
OTHER_METRICS = ("measured_sparsity", "effective_sparsity", "effective_sparsity_dense", "flops_nonzero",
                 "flops_effective", "score_teacher", "score_dense_student", "epochs_total", "seconds_total",
                 "cost_flops", "student_epochs_equiv", "params_nonzero", "params_total")
KIND_ORDER = {"teacher": 0, "dense": 1, "method": 2}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def job_cost_flops(row: dict) -> float | None:
    """One job's training FLOPs as if it ran alone: its own stages plus the shared ones it used
    (None when not recorded or when a stage it used is unmeasured)."""
    own, shared = _number(row.get("cost_flops_own")), _number(row.get("cost_flops_shared"))
    return None if own is None or shared is None else own + shared


def job_device(row: dict) -> str | None:
    """The device the job's seconds were measured on."""
    return row.get("cost_device") or row.get("device") or None


def uses_teacher(row: dict) -> bool:
    """Whether the row's method uses a teacher (it has ±KD variants): the row's ``uses_teacher``; a row
    written before that field named a ``teacher`` exactly when its method used one."""
    if row.get("uses_teacher") is not None:
        return bool(row["uses_teacher"])
    return bool(row.get("teacher"))


def normalize(row: dict) -> dict:
    """A copy of a metrics row as the report groups it: width-qualified model (and teacher) names,
    ``sanity`` None unless set, ``cost_flops`` per job, ``uses_teacher`` (:func:`uses_teacher`),
    ``dense_stage`` (None in rows written before it was recorded: their dense student is unnamed), the
    score fields (:func:`tgp.report.scores.add_scores`: ``score_*``, top-1 in rows written before them)
    and the official metrics as flat fields (:func:`tgp.report.scores.flat_metrics`)."""
    r = add_scores(dict(row))
    r.update(flat_metrics(row))
    r["uses_teacher"] = uses_teacher(row)
    r["dense_stage"] = row.get("dense_stage") or None
    r["model"] = model_label(row.get("model"), row.get("model_width"))
    if row.get("teacher"):
        r["teacher"] = model_label(row.get("teacher"), row.get("teacher_width"))
    r["sanity"] = row.get("sanity") or None
    r["cost_flops"] = job_cost_flops(row)
    if row.get("variant"):  # an ablation the method declares (MethodSpec.variant: SDP's λ=0): a row of its own
        r["method"] = f"{row['method']} ({row['variant']})"
    return r


def default_reference(rows: list[dict]) -> str | None:
    """``tgp`` when the rows hold tgp runs (the paper's method), else None (no paired differences)."""
    return "tgp" if any(r.get("method") == "tgp" and not r.get("sanity") for r in rows) else None


def _summary_fields(g: dict, metric: str, values, ci: bool) -> None:
    s = summarize(values)
    g[f"{metric}_mean"], g[f"{metric}_std"] = s.mean, s.std
    if ci:
        g[f"{metric}_lo"], g[f"{metric}_hi"], g[f"{metric}_n"] = s.lo, s.hi, s.n


def _diff_fields(g: dict, metric: str, d) -> None:
    """``diff_<metric>_mean/_lo/_hi/_n/_mark`` and the power figures ``_sd/_mdd/_seeds_needed`` of a
    paired-difference summary (or of none)."""
    g[f"diff_{metric}_mean"] = d.mean if d else None
    g[f"diff_{metric}_lo"] = d.lo if d else None
    g[f"diff_{metric}_hi"] = d.hi if d else None
    g[f"diff_{metric}_n"] = d.n if d else 0
    g[f"diff_{metric}_mark"] = d.mark if d else ""
    g[f"diff_{metric}_sd"] = getattr(d, "std", None) if d else None
    g[f"diff_{metric}_mdd"] = getattr(d, "mdd", None) if d else None
    g[f"diff_{metric}_seeds_needed"] = getattr(d, "seeds_needed", None) if d else None


def _top1_aliases(g: dict) -> None:
    """A top-1 group's score fields under their top-1 names too (``score_last_mean`` → ``top1_last_mean``):
    for images the score is top-1, and readers of the top-1 names (W&B tables, scripts) keep working."""
    if g.get("score_name", TOP1) != TOP1:
        return
    for key in [k for k in g if "score_" in k and k != "score_name"]:
        g[key.replace("score_", "top1_")] = g[key]


def _official_metrics(g: dict, rs: list[dict], diffs: dict, key: tuple) -> None:
    """``g["metrics"]``: per official-metric field (:func:`tgp.report.scores.metric_field`) of the group's
    rows, its summary over seeds and its paired difference to the reference (``diff_*``)."""
    fields = sorted({f for r in rs for f in r if f.startswith(("metric/", "group/"))})
    g["metrics"] = {}
    for f in fields:
        m: dict = {}
        _summary_fields(m, "value", [r.get(f) for r in rs], ci=True)
        _diff_fields(m, "value", diffs.get(f, {}).get(key))
        g["metrics"][f] = m


def _per_seed_mean(rows: list[dict], field: str) -> list[float]:
    """One value per seed (a shared stage's accuracy occurs in every job of that seed: counted once)."""
    by_seed: dict = defaultdict(list)
    for r in rows:
        v = _number(r.get(field))
        if v is not None:
            by_seed[r.get("seed")].append(v)
    return [math.fsum(v) / len(v) for _, v in sorted(by_seed.items(), key=lambda kv: str(kv[0]))]


def _baseline_rows(rows: list[dict]) -> list[dict]:
    """The teacher and the dense student(s) as rows of their own, per (dataset, model): their
    accuracy (last epoch of their stage) over seeds, each seed counted once."""
    out = []
    teachers, dense = defaultdict(list), defaultdict(list)
    for r in rows:
        if r.get("score_teacher") is not None:
            teachers[(r.get("dataset"), r.get("model"), r.get("teacher"))].append(r)
        if r.get("score_dense_student") is not None:
            dense[(r.get("dataset"), r.get("model"), r.get("dense_stage"))].append(r)
    for kind, table, metric in (("teacher", teachers, "score_teacher"), ("dense", dense, "score_dense_student")):
        for (dataset, model, what), rs in table.items():
            vals = _per_seed_mean(rs, metric)
            label = (f"teacher {what or '?'}" if kind == "teacher"
                     else f"dense student ({what})" if what else "dense student")
            g = {"kind": kind, "method": label, "label": label, "variant": label, "sanity": None, "dataset": dataset,
                 "model": model, "teacher": what if kind == "teacher" else None,
                 "dense_stage": what if kind == "dense" else None, "target_sparsity": 0.0, "retrain_kd": None,
                 "n": len(vals), "seeds": sorted({r.get("seed") for r in rs}, key=str), "reference": None,
                 "score_name": rs[0]["score_name"], "benchmark": rs[0].get("benchmark"), "metrics": {}}
            _summary_fields(g, "score_last", vals, ci=True)  # the last epoch of its stage
            _summary_fields(g, "score_best_val", [], ci=True)  # not recorded for these stages
            for m in OTHER_METRICS:
                g[f"{m}_mean"] = g[f"{m}_std"] = None
            g["measured_sparsity_mean"] = g["effective_sparsity_mean"] = 0.0
            if kind == "dense":  # the dense student has the pruned model's architecture, every weight kept
                g["params_total_mean"] = g["params_nonzero_mean"] = summarize([r.get("params_total") for r in rs]).mean
            _top1_aliases(g)
            out.append(g)
    return out


def aggregate(rows: list[dict], reference: str | None = AUTO, min_effect: float = 0.01) -> list[dict]:
    """The report's rows, from the metrics rows of finished jobs.

    * ``kind="method"``: one per (method, sanity, dataset, model, target_sparsity, retrain_kd):
      ``<metric>_mean/_std`` over seeds, and for the scores (``score_best_val``, ``score_last``: the
      row's score, top-1 for images) the 95 % CI ``_lo/_hi`` and ``_n`` (see :mod:`tgp.report.stats`);
      with a ``reference`` method, ``diff_<metric>_mean/_lo/_hi/_n`` and ``diff_<metric>_mark`` (``*``
      when the CI excludes 0), the paired difference to the reference's run of the same cell and seed
      (in score units, positive = better than it), and its power figures
      ``diff_<metric>_sd/_mdd/_seeds_needed`` (the seeds needed for a true difference of ``min_effect``,
      score units: 0.01 = 1 point; :mod:`tgp.report.stats`). ``metrics``: the same for each official metric of a
      text task (:func:`_official_metrics`). A ``method=dense`` row (a dense comparison model) is
      labelled ``dense <model> (<nonzero params>)``.
    * ``kind="teacher"`` / ``kind="dense"``: the teacher and the dense student per (dataset, model),
      sparsity 0, their last-epoch score over seeds in ``score_last_*``.

    A top-1 group carries its score fields under their top-1 names too (``top1_best_val_mean`` …).

    ``reference="auto"``: ``tgp`` when present; None: no differences.
    """
    rows = [normalize(r) for r in rows]
    if reference == AUTO:
        reference = default_reference(rows)
    if reference is not None and not any(is_reference(r, reference) for r in rows):
        log.warning("reference method %r has no finished job here: no paired differences", reference)
        reference = None
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in GROUP_KEYS)].append(r)
    diffs = ({m: paired_differences(rows, reference, m, GROUP_KEYS, min_effect=min_effect) for m in SCORE_METRICS}
             if reference else {})
    fields = sorted({f for r in rows for f in r if f.startswith(("metric/", "group/"))})
    field_diffs = {f: paired_differences(rows, reference, f, GROUP_KEYS) for f in fields} if reference else {}
    out = []
    for key, rs in groups.items():
        g = dict(zip(GROUP_KEYS, key))
        g["kind"] = "method"
        g["label"] = method_label(g["method"], g["sanity"])
        g["uses_teacher"] = any(r["uses_teacher"] for r in rs)
        g["variant"] = variant_label(g["method"], g["retrain_kd"], g["sanity"], g["uses_teacher"])
        g["teacher"] = next((r["teacher"] for r in rs if r.get("teacher")), None)
        g["score_name"] = rs[0]["score_name"]
        g["benchmark"] = next((r["benchmark"] for r in rs if r.get("benchmark")), None)
        for metric in SCORE_METRICS:
            _summary_fields(g, metric, [r.get(metric) for r in rs], ci=True)
        for metric in OTHER_METRICS:
            _summary_fields(g, metric, [r.get(metric) for r in rs], ci=False)
        g["is_dense_model"] = g["method"] == DENSE_METHOD and not g["sanity"]
        if g["is_dense_model"]:
            g["label"] = g["variant"] = dense_model_label(g["model"], g["params_nonzero_mean"])
        g["n"] = len(rs)
        g["seeds"] = sorted({r.get("seed") for r in rs}, key=str)
        devices = sorted({str(job_device(r)) for r in rs if job_device(r)})
        g["device"] = ", ".join(devices) or None
        g["reference"] = reference
        g["is_reference"] = reference is not None and is_reference(g, reference)
        for metric, by_group in diffs.items():
            _diff_fields(g, metric, by_group.get(key))
        _official_metrics(g, rs, field_diffs, key)
        g["power_min_effect"] = min_effect
        _top1_aliases(g)
        out.append(g)
    out += _baseline_rows(rows)

    def order(g):
        ts = g["target_sparsity"] if isinstance(g["target_sparsity"], (int, float)) else float("inf")
        return (str(g["dataset"]), str(g["model"]), KIND_ORDER[g["kind"]], ts, g["retrain_kd"] is False,
                g["method"] != reference, str(g["method"]), str(g["sanity"] or ""), str(g.get("label")))

    out.sort(key=order)
    return out


def method_rows(groups: list[dict]) -> list[dict]:
    return [g for g in groups if g.get("kind", "method") == "method"]


def dense_model_label(model, params_nonzero) -> str:
    """``dense bert_small (28.8M)``: a dense comparison model and its nonzero parameters."""
    return f"dense {model} ({format_count(params_nonzero)})"


def method_label(method, sanity=None) -> str:
    """``tgp``; a sanity check of it: ``tgp + layer_shuffle``."""
    return f"{method} + {sanity}" if sanity else str(method)


def variant_label(method: str, retrain_kd: bool, sanity: str | None = None, uses_teacher: bool = False) -> str:
    """``tgp (KD)`` / ``tgp (CE)`` for methods with a teacher (``uses_teacher``: retraining with or
    without KD are two variants); other methods by name alone; a sanity check after its method:
    ``tgp (KD) + reinit``."""
    label = f"{method} ({'KD' if retrain_kd else 'CE'})" if uses_teacher else str(method)
    return f"{label} + {sanity}" if sanity else label


# -- training cost per method --------------------------------------------------------------------
COST_BY = ("dataset", "model", "method", "sanity", "retrain_kd")


def method_costs(rows: list[dict]) -> tuple[list[dict], str]:
    """Training cost per method variant (per dataset and model), each stage counted once, from
    ``tgp.report.cost.cost_by_method`` (per seed: the distinct stages the variant's jobs used, summed
    once; then the mean over seeds), plus the whole sweep as the last row (``method`` = None).
    ``([], why)`` when the jobs' cost fields are missing."""
    rows = [normalize(r) for r in rows if r.get("method") is not None]
    if not any(r.get("stage_keys") for r in rows):
        return [], "no job recorded its cost (stage_keys, train_flops_<stage>) in metrics.json"
    with_teacher = {r["method"] for r in rows if r["uses_teacher"]}
    out = []
    for c in cost.cost_by_method(rows, by=COST_BY):
        c = dict(c)
        c["label"] = variant_label(c["method"], c["retrain_kd"], c.get("sanity"), c["method"] in with_teacher)
        out.append(c)
    out.append({**cost.sweep_total(rows), "label": "whole sweep (all seeds), each stage once", "method": None, "dataset": None,
                "model": None, "seeds": None})
    return out, ("tgp.report.cost: per seed, every distinct stage (by key) a variant's jobs used, summed once; "
                 "the mean over seeds. A stage shared by several methods (the teacher) is in each of their "
                 "totals in full and once in the sweep total; *exclusive* is the part no other variant used")
