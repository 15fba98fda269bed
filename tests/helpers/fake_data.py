"""Write small fake datasets in the REAL on-disk formats (for tests; no network needed)."""

from __future__ import annotations

import os
import pickle

import numpy as np


def _pickle(obj, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_fake_cifar(root, n_train: int = 50, n_test: int = 20, num_classes: int = 10, seed: int = 0) -> str:
    """Write a fake CIFAR-10 (``num_classes=10``) or CIFAR-100 (``100``) in torchvision's python format.

    CIFAR-10: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``;
    CIFAR-100: ``cifar-100-python/train``, ``test``, ``meta``. Returns the dataset folder.
    """
    if num_classes not in (10, 100):
        raise ValueError("num_classes must be 10 or 100")
    rng = np.random.default_rng(seed)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)

    def labels(n: int, k: int) -> list[int]:
        return [int(v) for v in rng.integers(0, k, size=n)]

    if num_classes == 10:
        folder = os.path.join(str(root), "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        per_batch = np.array_split(np.arange(n_train), 5)
        for i, idx in enumerate(per_batch, 1):
            _pickle(
                {"batch_label": f"training batch {i} of 5", "labels": labels(len(idx), 10),
                 "data": images(len(idx)), "filenames": [f"img_{j}.png" for j in idx]},
                os.path.join(folder, f"data_batch_{i}"),
            )
        _pickle(
            {"batch_label": "testing batch 1 of 1", "labels": labels(n_test, 10), "data": images(n_test),
             "filenames": [f"test_{j}.png" for j in range(n_test)]},
            os.path.join(folder, "test_batch"),
        )
        _pickle(
            {"num_cases_per_batch": 10000, "num_vis": 3072,
             "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            os.path.join(folder, "batches.meta"),
        )
    else:
        folder = os.path.join(str(root), "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        for split, n in (("train", n_train), ("test", n_test)):
            fine = labels(n, 100)
            _pickle(
                {"filenames": [f"{split}_{j}.png" for j in range(n)], "batch_label": f"{split} batch",
                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": images(n)},
                os.path.join(folder, split),
            )
        _pickle(
            {"fine_label_names": [f"fine_{i}" for i in range(100)],
             "coarse_label_names": [f"coarse_{i}" for i in range(20)]},
            os.path.join(folder, "meta"),
        )
    return folder
