"""A dataset and a model family that live here and nowhere else, to show what plugging one in takes.

``TabularBlobs``: a new modality (``tabular``: float feature vectors ``[B, D]``), four Gaussian classes,
scored by its own metric (balanced accuracy, ``bal_acc``). ``tiny_mlp``: a model family (an MLP with
``forward_features`` and ``fc``), built straight from its config's ``_target_`` (no registry entry).
Nothing in tgp names either: tests/test_plugin.py runs the pipeline's methods on them.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tgp.data.base import ClassificationDataModule
from tgp.metrics.scoring import Scoring


def balanced_accuracy(num_classes: int) -> MetricCollection:
    return MetricCollection({"bal_acc": MulticlassAccuracy(num_classes, average="macro", validate_args=False)})


class TabularBlobs(ClassificationDataModule):
    """Four classes of ``features``-dimensional Gaussian blobs (seeded): ``n`` training rows, ``n // 2`` test rows."""

    name = "blobs"
    modality = "tabular"
    num_classes = 4

    def __init__(self, features: int = 8, n: int = 256, seed: int = 0, **kw):
        super().__init__(**kw)
        self.features, self.n, self.seed = int(features), int(n), int(seed)

    def _load_raw(self) -> tuple[Dataset, Dataset]:
        g = torch.Generator().manual_seed(self.seed)
        centers = 2.0 * torch.randn(self.num_classes, self.features, generator=g)

        def draw(n: int) -> TensorDataset:
            y = torch.arange(n) % self.num_classes
            return TensorDataset(centers[y] + torch.randn(n, self.features, generator=g), y)

        return draw(self.n), draw(self.n // 2)

    def _subset(self, dataset: Dataset, indices: np.ndarray, split: str) -> Dataset:
        return _Rows(Subset(dataset, indices.tolist()))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(int(batch_size), self.features)

    def model_kwargs(self) -> dict:
        return {"num_classes": self.num_classes, "in_features": self.features}

    @property
    def scoring(self) -> Scoring:
        return Scoring("bal_acc", ("bal_acc",), partial(balanced_accuracy, self.num_classes), logged="score")


class _Rows(Dataset):
    """Items ``(x, int y)``, indexed by ``i`` or by the base sampler's ``(i, seed)``."""

    def __init__(self, rows: Dataset):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        x, y = self.rows[i[0] if isinstance(i, tuple) else i]
        return x, int(y)


class TinyMLP(nn.Module):
    """``fc(forward_features(x))``: two hidden Linear layers (prunable, as every Linear is by default)."""

    def __init__(self, num_classes: int, in_features: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)
        self.arch, self.num_classes = "tiny_mlp", num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def tiny_mlp(num_classes: int, in_features: int, width: int = 32, name: str = "tiny_mlp") -> TinyMLP:
    return TinyMLP(num_classes, in_features, width)
