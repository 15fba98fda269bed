"""The GLUE score of a sweep's text runs: per (method, model, sparsity, retrain KD), over seeds.

Per seed ``i`` of a cell, over the GLUE tasks ``T`` the cell ran (each task's single score ``s_t``, a
two-metric task's the mean of its two, MNLI's the mean of its matched and mismatched accuracies)::

    GLUE_i = (1/|T|) · Σ_{t ∈ T} s_t(i)

then mean ± std and the 95 % CI over the seeds that ran every task of ``T`` (a seed missing a task is
left out and counted, never scored on fewer tasks), and the paired difference to the reference method
over matched seeds (:func:`tgp.report.stats.paired_differences`) — only where the reference covers the
same tasks (a score over other tasks is not comparable). ``T`` is named: the GLUE score is the mean over
all of GLUE's 8 tasks we run (WNLI left out, as BERT's paper does); over fewer it is called
"mean over k of 8 GLUE tasks", never the GLUE score. The teacher and the dense student (last epoch
of their stages) get a row each, per seed over the tasks their jobs ran.
"""

from __future__ import annotations

import math
from collections import defaultdict

from tgp.report.aggregate import (GROUP_KEYS, KIND_ORDER, dense_model_label, method_label, normalize,
                                  variant_label)
from tgp.report.scores import DENSE_METHOD, GLUE_TASKS
from tgp.report.stats import is_reference, paired_differences, summarize

#: a GLUE row is one per these (the task is what it averages over)
CELL_KEYS = ("method", "sanity", "model", "target_sparsity", "retrain_kd")
FIELD = "glue"


def task_set_name(tasks) -> str:
    """``GLUE score`` for all of :data:`GLUE_TASKS`; ``mean over 3 of 8 GLUE tasks (cola, mrpc, mnli)``
    otherwise."""
    tasks = [t for t in GLUE_TASKS if t in set(tasks)]
    if len(tasks) == len(GLUE_TASKS):
        return "GLUE score"
    return f"mean over {len(tasks)} of {len(GLUE_TASKS)} GLUE tasks ({', '.join(tasks)})"


def _mean(values) -> float:
    return math.fsum(values) / len(values)


def _cells(rows: list[dict], checkpoint: str) -> dict[tuple, dict]:
    """Cell (kind, label, :data:`CELL_KEYS`) → ``{"seeds": {seed: {task: [score]}}, "rows": [...]}``: the
    methods' ``score_<checkpoint>``, and the teacher's and dense student's last-epoch scores."""
    cells: dict[tuple, dict] = defaultdict(lambda: {"seeds": defaultdict(lambda: defaultdict(list)), "rows": []})

    def add(key, r, value):
        if value is None:
            return
        cells[key]["seeds"][r.get("seed")][r["dataset"]].append(value)
        cells[key]["rows"].append(r)

    for r in rows:
        add(("method", None, *(r.get(k) for k in CELL_KEYS)), r, r.get(f"score_{checkpoint}"))
        if r.get("score_teacher") is not None:
            label = f"teacher {r.get('teacher') or '?'}"
            add(("teacher", label, label, None, r.get("model"), 0.0, None), r, r["score_teacher"])
        if r.get("score_dense_student") is not None:
            stage = r.get("dense_stage")
            label = f"dense student ({stage})" if stage else "dense student"
            add(("dense", label, label, None, r.get("model"), 0.0, None), r, r["score_dense_student"])
    return cells


def glue_rows(rows: list[dict], reference: str | None = None, checkpoint: str = "best_val",
              normalized: bool = False) -> list[dict]:
    """The GLUE score rows of the metrics rows ``rows`` (only GLUE tasks count; see the module doc).

    Each: ``kind``, ``label``, ``variant``, the :data:`CELL_KEYS`, ``tasks`` (GLUE order), ``name``
    (:func:`task_set_name`), ``glue_mean/_std/_lo/_hi/_n`` over the complete seeds, ``seeds``,
    ``seeds_incomplete`` (seeds left out for a missing task), ``params_nonzero_mean`` (over its jobs),
    ``diff_glue_*`` (paired difference to ``reference``; ``diff_note`` says why there is none)."""
    rows = [r if normalized else normalize(r) for r in rows]
    rows = [r for r in rows if r.get("benchmark") == "glue" and r.get("dataset") in GLUE_TASKS]
    out, pseudo = [], []
    for key, cell in _cells(rows, checkpoint).items():
        kind, label, *cell_values = key
        tasks = [t for t in GLUE_TASKS if any(t in by_task for by_task in cell["seeds"].values())]
        complete = {s: by_task for s, by_task in cell["seeds"].items() if all(t in by_task for t in tasks)}
        dataset = "glue:" + ",".join(tasks)  # pairs only cells over the same tasks
        g = {**dict(zip(CELL_KEYS, cell_values)), "kind": kind, "dataset": dataset, "tasks": tasks,
             "name": task_set_name(tasks), "seeds": sorted(complete, key=str),
             "seeds_incomplete": sorted(set(cell["seeds"]) - set(complete), key=str),
             "teacher": next((r["teacher"] for r in cell["rows"] if r.get("teacher")), None),
             "uses_teacher": any(r.get("uses_teacher") for r in cell["rows"])}
        values = {s: _mean([_mean(by_task[t]) for t in tasks]) for s, by_task in complete.items()}
        if kind == "method":
            pseudo += [{**g, "seed": s, FIELD: v} for s, v in values.items()]
        s = summarize(list(values.values()))
        g.update({f"{FIELD}_mean": s.mean, f"{FIELD}_std": s.std, f"{FIELD}_lo": s.lo, f"{FIELD}_hi": s.hi,
                  f"{FIELD}_n": s.n, "n": s.n})
        # A dense student keeps every weight; the teacher's count is not in the rows (they are the student's).
        param = {"dense": "params_total", "teacher": None}.get(kind, "params_nonzero")
        g["params_nonzero_mean"] = summarize([r.get(param) for r in cell["rows"]]).mean if param else None
        if kind == "method":
            g["label"] = method_label(g["method"], g["sanity"])
            g["variant"] = variant_label(g["method"], g["retrain_kd"], g["sanity"], g["uses_teacher"])
            g["is_dense_model"] = g["method"] == DENSE_METHOD and not g["sanity"]
            if g["is_dense_model"]:
                g["label"] = g["variant"] = dense_model_label(g["model"], g["params_nonzero_mean"])
        else:
            g["label"] = g["variant"] = label
            g["is_dense_model"] = False
        out.append(g)
    _add_differences(out, pseudo, reference)
    out.sort(key=lambda g: (KIND_ORDER[g["kind"]], not g["is_dense_model"], str(g["model"]),
                            g["target_sparsity"] if isinstance(g["target_sparsity"], (int, float)) else math.inf,
                            g["retrain_kd"] is False, g["method"] != reference, str(g["method"]),
                            str(g.get("sanity") or "")))
    return out


def _add_differences(out: list[dict], pseudo: list[dict], reference: str | None) -> None:
    """``diff_glue_*`` of every method row against the reference's row of its cell (same model, sparsity,
    retrain KD, task set) over matched seeds; ``diff_note`` when the reference covers other tasks."""
    has_ref = reference is not None and any(is_reference(p, reference) for p in pseudo)
    diffs = paired_differences(pseudo, reference, FIELD, GROUP_KEYS) if has_ref else {}
    ref_tasks = {(g["model"], g["target_sparsity"]): g["tasks"] for g in out
                 if g["kind"] == "method" and has_ref and is_reference(g, reference)}
    for g in out:
        g["reference"] = reference if has_ref else None
        g["is_reference"] = g["kind"] == "method" and has_ref and is_reference(g, reference)
        d = diffs.get(tuple(g.get(k) for k in GROUP_KEYS)) if g["kind"] == "method" else None
        g[f"diff_{FIELD}_mean"], g[f"diff_{FIELD}_lo"], g[f"diff_{FIELD}_hi"] = (
            (d.mean, d.lo, d.hi) if d else (None, None, None))
        g[f"diff_{FIELD}_n"], g[f"diff_{FIELD}_mark"] = (d.n, d.mark) if d else (0, "")
        other = ref_tasks.get((g["model"], g["target_sparsity"]))
        g["diff_note"] = ("the reference ran other tasks" if d is None and other is not None and other != g["tasks"]
                          else None)
