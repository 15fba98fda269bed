"""Each text task's official metric, through ``torchmetrics``, and the benchmark scores built on them.

Per task (GLUE's definitions, Wang et al. 2019; values are fractions in [0, 1], not percent):

* CoLA: Matthews correlation ``MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``,
  0 when a factor of the denominator is 0 (:class:`GlueMatthewsCorrCoef`).
* MRPC, QQP: accuracy and F1 of the positive class (paraphrase / duplicate, label 1),
  ``F1 = 2·TP / (2·TP + FP + FN)``.
* STS-B: Pearson's ``r`` and Spearman's ``ρ`` (Pearson's ``r`` of the ranks, ties averaged) between
  predicted and gold scores.
* SST-2, MNLI (matched and mismatched), QNLI, RTE, XNLI, PAWS-X, roleswap: accuracy.

A task's score is the mean of its metrics over its evaluation sets (MNLI: the mean of its matched
and mismatched accuracies; MRPC: the mean of accuracy and F1); the GLUE score is the mean of the
task scores (a task with two metrics contributes the mean of its two). XGLUE: accuracy per
language and their unweighted average.

Predictions are the model's outputs: logits ``[B, C]`` (the class is their argmax) or, for STS-B,
scores ``[B]`` / ``[B, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchmetrics
from torch import Tensor
from torchmetrics import classification as C
from torchmetrics import regression as R

from tgp.data.text.tasks import TextTask, get_task

METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")


class GlueMatthewsCorrCoef(C.BinaryMatthewsCorrCoef):
    """Binary MCC as GLUE scores it (its scorer calls scikit-learn's ``matthews_corrcoef``): 0 when a
    factor of the denominator is 0, e.g. for a model that predicts one class for every sentence —
    common early in CoLA fine-tuning. torchmetrics (1.9) smooths that case with an epsilon instead
    (Chicco & Jurman) and reports e.g. 0.18 for a constant predictor, which GLUE would score 0."""

    def compute(self) -> Tensor:
        tn, fp, fn, tp = self.confmat.double().reshape(-1)
        denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        mcc = (tp * tn - fp * fn) / denominator.clamp_min(1).sqrt()
        return torch.where(denominator > 0, mcc, torch.zeros_like(mcc)).float()


def _metric(name: str, num_classes: int, validate_args: bool = True) -> torchmetrics.Metric:
    # validate_args=False: no checks of label ranges, which read values back to the host on every update
    # (the training steps never sync); Pearson and Spearman have no such checks.
    if name == "accuracy":
        return C.MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=validate_args)
    if name == "f1":
        return C.BinaryF1Score(validate_args=validate_args)
    if name == "mcc":
        return GlueMatthewsCorrCoef(validate_args=validate_args)
    if name == "pearson":
        return R.PearsonCorrCoef()
    if name == "spearman":
        return R.SpearmanCorrCoef()
    raise ValueError(f"unknown metric {name!r}; one of {METRICS}")


def predictions(outputs: Tensor, regression: bool) -> Tensor:
    """Class indices (argmax of the logits) or, for regression, the scores as a flat float tensor."""
    if regression:
        return outputs.reshape(-1).float()
    return outputs.argmax(dim=-1) if outputs.dim() > 1 else outputs.long()


class TaskMetrics(torchmetrics.MetricCollection):
    """The official metrics of one task (for one evaluation set), updated with model outputs:
    ``update(logits_or_scores, target)``; ``compute()`` gives ``{metric: value}``."""

    def __init__(self, task: TextTask | str, prefix: str | None = None, validate_args: bool = True):
        task = task if isinstance(task, TextTask) else get_task(task)
        super().__init__({m: _metric(m, task.num_classes, validate_args) for m in task.metrics}, prefix=prefix,
                         compute_groups=False)
        self.regression = task.regression

    def update(self, outputs: Tensor, target: Tensor) -> None:  # type: ignore[override]
        preds = predictions(outputs, self.regression)
        super().update(preds, target.float() if self.regression else target.long())


SHORT_NAMES = {"accuracy": "acc"}


def score_name(task: TextTask | str) -> str:
    """The name of a task's single score in the metrics row: its metrics joined by ``_`` (``mcc``, ``acc``,
    ``acc_f1``, ``pearson_spearman``)."""
    task = task if isinstance(task, TextTask) else get_task(task)
    return "_".join(SHORT_NAMES.get(m, m) for m in task.metrics)


def text_collection(task: str) -> TaskMetrics:
    """A fresh :class:`TaskMetrics` of ``task`` without argument checks (what training and evaluation update)."""
    return TaskMetrics(task, validate_args=False)


def text_scoring(task: TextTask | str):
    """The :class:`~tgp.metrics.scoring.Scoring` of a text task: its official metrics, the score their mean
    (logged as ``score``), MSE-trained when it is a regression (STS-B)."""
    from functools import partial

    from tgp.metrics.scoring import Scoring

    task = task if isinstance(task, TextTask) else get_task(task)
    return Scoring(score_name(task), tuple(task.metrics), partial(text_collection, task.key), logged="score",
                   regression=task.regression)


def task_scores(task: TextTask | str, outputs: Tensor, target: Tensor) -> dict[str, float]:
    """The task's metrics of a whole evaluation set at once: ``{metric: value}``."""
    metrics = TaskMetrics(task)
    metrics.update(outputs, target)
    return {k: float(v) for k, v in metrics.compute().items()}


def grouped_scores(task: TextTask | str, groups: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, float]:
    """``{"<group>/<metric>": value}`` over the task's evaluation sets (``groups``: name → (outputs,
    target); the group ``""`` gives plain metric names), plus ``avg/accuracy`` over the languages of
    an XGLUE task."""
    task = task if isinstance(task, TextTask) else get_task(task)
    out: dict[str, float] = {}
    for group, (outputs, target) in groups.items():
        for metric, value in task_scores(task, outputs, target).items():
            out[f"{group}/{metric}" if group else metric] = value
    if task.benchmark == "xglue" and groups:
        out["avg/accuracy"] = sum(out[f"{g}/accuracy"] for g in groups) / len(groups)
    return out


def task_score(scores: Mapping[str, float]) -> float:
    """The task's single score: the mean of its metrics over its evaluation sets (the keys of
    :func:`grouped_scores`; an XGLUE task's ``avg/`` entry is itself that mean and is not counted twice)."""
    values = [v for k, v in scores.items() if not k.startswith("avg/")]
    if not values:
        raise ValueError("no metric values")
    return float(sum(values) / len(values))


def glue_score(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE score of the tasks given (``{task: grouped_scores}``): the mean of the task scores."""
    if not per_task:
        raise ValueError("no tasks")
    return float(sum(task_score(s) for s in per_task.values()) / len(per_task))


def xglue_summary(per_language: Mapping[str, float]) -> dict[str, float]:
    """Per-language accuracies and their unweighted average (``avg``)."""
    if not per_language:
        raise ValueError("no languages")
    return {**per_language, "avg": float(sum(per_language.values()) / len(per_language))}

