"""What a job's row scores, whatever the data: the single score the report aggregates, its name, and the
task's official metrics as flat fields.

A metrics row names its score (``score_name``: ``top1`` for images; a text task's, e.g. ``mcc`` for CoLA,
``acc_f1`` for MRPC/QQP, ``pearson_spearman`` for STS-B, ``acc`` for the accuracy tasks) and gives it at
each checkpoint in ``score_best_val`` / ``score_last`` (and for its dense stages ``score_teacher`` /
``score_dense_student``). The task's single score is the mean of its official metrics over its evaluation
sets: MRPC ``(acc + F1) / 2``, MNLI ``(acc_m + acc_mm) / 2``, XNLI the mean accuracy over its languages.
Rows written before scores were recorded (images) carry only ``top1_*``: their score is top-1.

The official metrics come as ``metrics_<ckpt>`` (``{metric: value}``) and, for a task with several
evaluation sets, ``groups_<ckpt>`` (``{group: {metric: value}}``: MNLI's matched and mismatched sets,
XGLUE's languages); :func:`flat_metrics` spells them as fields ``metric/<ckpt>/<metric>`` and
``group/<ckpt>/<group>/<metric>`` that the report aggregates like any other per-job number.
"""

from __future__ import annotations

import math

from tgp.data.text.tasks import TASKS

CHECKPOINTS = ("best_val", "last")
#: the score fields of a row and the top-1 field each falls back to (rows written before scores)
SCORE_FIELDS = {"score_best_val": "top1_best_val", "score_last": "top1_last", "score_teacher": "top1_teacher",
                "score_dense_student": "top1_dense_student", "score_pruned": "top1_pruned"}
TOP1 = "top1"
#: the comparison method: a dense model fine-tuned for the whole budget, no pruning (its rows: sparsity 0)
DENSE_METHOD = "dense"
GLUE_TASKS = tuple(k for k, t in TASKS.items() if t.benchmark == "glue")
XGLUE_TASKS = tuple(k for k, t in TASKS.items() if t.benchmark == "xglue")

#: how each score and metric is named in the report's headers (never an MCC called "top-1")
TITLES = {"top1": "top-1", "acc": "accuracy", "accuracy": "accuracy", "f1": "F1", "mcc": "MCC",
          "matthews": "MCC", "pearson": "Pearson r", "spearman": "Spearman ρ",
          "acc_f1": "mean of accuracy and F1", "pearson_spearman": "mean of Pearson r and Spearman ρ"}
#: scores that are fractions of examples (shown in %); the others are correlations in [−1, 1] (shown ×100)
PERCENT = {"top1", "acc", "accuracy", "f1", "acc_f1"}


def title(name) -> str:
    """The header name of a score or metric: ``mcc`` → ``MCC``; an unknown name as it is."""
    return TITLES.get(str(name), str(name))


def unit(name) -> str:
    """``%`` for a fraction of examples, ``×100`` for a correlation (both printed as 100·value)."""
    return "%" if str(name) in PERCENT else "×100"


def header(name) -> str:
    """``top-1 %``, ``accuracy %``, ``MCC ×100``."""
    return f"{title(name)} {unit(name)}"


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def benchmark_of(row: dict) -> str | None:
    """``glue`` | ``xglue`` | None: the row's ``benchmark``, else the benchmark of a known task key."""
    if row.get("benchmark"):
        return str(row["benchmark"])
    task = TASKS.get(str(row.get("dataset")))
    return task.benchmark if task is not None and task.benchmark in ("glue", "xglue") else None


def add_scores(row: dict) -> dict:
    """``row`` with ``score_name`` and every ``score_*`` set (in place): the row's own, else its ``top1_*``."""
    row["score_name"] = row.get("score_name") or TOP1
    for field, fallback in SCORE_FIELDS.items():
        own = _number(row.get(field))
        row[field] = own if own is not None else _number(row.get(fallback))
    row["benchmark"] = benchmark_of(row)
    return row


def metric_field(checkpoint: str, metric: str, group: str | None = None) -> str:
    """The flat field of one official metric: ``metric/best_val/f1`` or ``group/best_val/de/accuracy``."""
    return f"metric/{checkpoint}/{metric}" if group is None else f"group/{checkpoint}/{group}/{metric}"


AVERAGE = "avg"


def flat_metrics(row: dict) -> dict[str, float]:
    """The row's official metrics (``metrics_<ckpt>``, ``groups_<ckpt>``) as :func:`metric_field` fields;
    for an XGLUE task also each metric's unweighted mean over its languages, as group :data:`AVERAGE`
    (``group/best_val/avg/accuracy``: the average XGLUE reports, aggregated over seeds like a language)."""
    out = {}
    for ckpt in CHECKPOINTS:
        for metric, v in (row.get(f"metrics_{ckpt}") or {}).items():
            if _number(v) is not None:
                out[metric_field(ckpt, metric)] = _number(v)
        per_metric: dict[str, list[float]] = {}
        for group, metrics in (row.get(f"groups_{ckpt}") or {}).items():
            if group == AVERAGE:  # recomputed below from the languages themselves
                continue
            for metric, v in (metrics or {}).items():
                if _number(v) is not None:
                    out[metric_field(ckpt, metric, group)] = _number(v)
                    per_metric.setdefault(metric, []).append(_number(v))
        if benchmark_of(row) == "xglue":
            for metric, values in per_metric.items():
                out[metric_field(ckpt, metric, AVERAGE)] = math.fsum(values) / len(values)
    return out


def parse_field(field: str) -> tuple[str, str, str | None, str]:
    """``(kind, checkpoint, group, metric)`` of a :func:`metric_field` field."""
    parts = field.split("/")
    if parts[0] == "group":
        return "group", parts[1], "/".join(parts[2:-1]), parts[-1]
    return "metric", parts[1], None, parts[-1]


def is_text(row: dict) -> bool:
    """A text task's row: it names a benchmark or a score other than top-1."""
    return bool(row.get("benchmark")) or (row.get("score_name") or TOP1) != TOP1


def format_count(n) -> str:
    """``28_763_648`` → ``28.8M``; ``—`` when unknown."""
    n = _number(n)
    if n is None:
        return "—"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"
