"""How a dataset's predictions are scored: its metrics, its single score, and one evaluation of a network.

A datamodule says how its targets are scored with a :class:`Scoring` (``dm.scoring``): the metrics
(a fresh ``torchmetrics.MetricCollection`` per use), the name of its single score in the metrics row
(``score_name``: images ``top1``; a text task ``mcc``, ``acc``, ``acc_f1``, ``pearson_spearman``) and
the key the score is logged under (images: ``acc``, the top-1 itself, as ``<stage>/val/acc``; text:
``score``, beside each metric). Every LightningModule, test evaluation and report row reads it, so a
new dataset brings its own metrics without touching the training code.

**The single score** of one evaluation set is the mean of its metrics (GLUE's rule: a task with two
metrics contributes their mean). A task with several evaluation sets (MNLI matched/mismatched, the
languages of an XGLUE task) is scored per set; its metrics are the per-set means of each metric, and
its score the mean of those — the mean over its sets and metrics (:func:`tgp.metrics.text.task_score`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy


@dataclass(frozen=True)
class Scoring:
    """What a dataset's predictions are scored with (see the module docstring). Picklable: ``factory``
    is a module-level function or a :func:`functools.partial` of one (DDP ranks carry it)."""

    name: str  # the metrics row's score_name
    metric_names: tuple[str, ...]  # the keys of the collection, in order
    factory: Callable[[], MetricCollection]  # a fresh collection {metric: Metric}, updated with (outputs, targets)
    logged: str = "acc"  # the key the single score is logged under (<stage>/<split>/<logged>)
    regression: bool = False  # targets are scores (MSE loss), not class indices (CE)

    def metrics(self) -> MetricCollection:
        return self.factory()

    def score(self, values: Mapping[str, float | Tensor]) -> float:
        """The single score of one evaluation set: the mean of its metrics."""
        return float(sum(float(values[k]) for k in self.metric_names) / len(self.metric_names))


def accuracy_collection(num_classes: int, validate_args: bool = False) -> MetricCollection:
    """``{"acc": top-1}``. ``validate_args=False``: torchmetrics' checks of label ranges read values back
    to the host, once per update (the training steps never sync)."""
    return MetricCollection({"acc": MulticlassAccuracy(int(num_classes), average="micro", validate_args=validate_args)})


def accuracy_scoring(num_classes: int) -> Scoring:
    """Classification scored by top-1 accuracy (the image datasets): score ``top1``, logged as ``acc``."""
    from functools import partial

    return Scoring("top1", ("acc",), partial(accuracy_collection, int(num_classes)), logged="acc")


@dataclass(frozen=True)
class Evaluation:
    """One network on a test split: ``score`` (the single score), ``metrics`` (``{metric: value}``; for
    several evaluation sets the per-set mean of each metric) and ``groups`` (``{set: {metric: value}}``,
    or None for a split with one set)."""

    score: float
    metrics: dict[str, float]
    groups: dict[str, dict[str, float]] | None = None

    def fields(self, which: str, top1: bool) -> dict:
        """The stage-result fields of this evaluation as ``which`` (``last``, ``best_val``, ``pruned``):
        ``score_<which>``, ``metrics_<which>``, ``groups_<which>``, and ``top1_<which>`` — the score when
        it is a top-1 (``top1``), else None."""
        return {f"top1_{which}": self.score if top1 else None, f"score_{which}": self.score,
                f"metrics_{which}": dict(self.metrics), f"groups_{which}": self.groups}


@torch.inference_mode()
def evaluate(net: nn.Module, loaders: Mapping[str, object], scoring: Scoring, device: torch.device) -> Evaluation:
    """Score ``net`` (eval mode, bf16 autocast on CUDA) on each loader of ``loaders`` (``{set: loader}``;
    one entry, named ``""``, for a split with one set), in this process."""
    was_training = net.training
    net = net.to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    per_set: dict[str, dict[str, float]] = {}
    with autocast:
        for group, loader in loaders.items():
            metrics = scoring.metrics().to(device)
            for x, y in loader:
                metrics.update(net(x.to(device, non_blocking=True)).float(), y.to(device, non_blocking=True))
            per_set[group] = {k: float(v) for k, v in metrics.compute().items()}
    net.train(was_training)
    names = scoring.metric_names
    means = {k: sum(s[k] for s in per_set.values()) / len(per_set) for k in names}
    return Evaluation(scoring.score(means), means, per_set if len(per_set) > 1 else None)
