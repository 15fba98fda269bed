"""Dataset trees in the real on-disk formats, filled with generated images.

They live in the package (not only in the tests) because the data-path benchmark
(``python -m tgp.bench.data --tiny-imagenet``) and the GPU check (``python -m tgp.gpu_check``, a
CIFAR-10 job at the real size) need a tree to run on machines that have no copy of the real data,
and the tests need the very same files: real JPEG (and PNG) files and CIFAR pickles decoded by the
real loader code, never mocks.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from PIL import Image

FOLDER = "tiny-imagenet-200"


def _natural_looking(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """A smooth random picture plus mild noise: JPEGs of about the size and decode cost of Tiny
    ImageNet's (a few KB), where pure noise would give files several times larger and slower."""
    coarse = rng.integers(0, 256, size=(8, 8, channels), dtype=np.uint8)
    mode = "RGB" if channels == 3 else "L"
    smooth = np.asarray(Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse, mode)
                        .resize((size, size), Image.BILINEAR), dtype=np.int16)
    if channels == 1:
        smooth = smooth[..., None]
    noisy = smooth + rng.integers(-24, 25, size=smooth.shape, dtype=np.int16)
    out = np.clip(noisy, 0, 255).astype(np.uint8)
    return out.squeeze(-1) if channels == 1 else out


def write_fake_tiny_imagenet(root, classes: int = 3, per_class: int = 4, val_per_class: int = 2,
                             seed: int = 0, size: int = 64) -> dict:
    """Write the official ``tiny-imagenet-200`` layout under ``root`` with real image files.

    ``wnids.txt`` (deliberately not sorted: the class index is the position in ``sorted(wnids)``),
    ``words.txt``, ``train/<wnid>/images/<wnid>_<j>.JPEG`` with ``<wnid>_boxes.txt``,
    ``val/images/val_<j>.JPEG`` with ``val/val_annotations.txt`` (``val_per_class`` per class, in
    shuffled order) and one unlabelled ``test/images/test_0.JPEG`` that loaders must ignore.

    Odd files the real data holds or a user's copy may hold, so that every decoder path is
    exercised: the first training image of the first wnid in ``wnids.txt`` and the first val image
    are grayscale JPEGs (Tiny ImageNet has some); when a class has at least two images, the second
    training image of the last wnid is an RGBA PNG (``<wnid>_1.png``).

    Returns ``{"folder", "wnids", "val_labels", "gray", "png"}``: ``val_labels`` maps a val file
    name to its wnid; ``gray`` and ``png`` list the odd files' paths.
    """
    if classes < 1 or per_class < 1 or val_per_class < 0:
        raise ValueError("classes and per_class must be >= 1, val_per_class >= 0")
    rng = np.random.default_rng(seed)
    folder = os.path.join(str(root), FOLDER)
    wnids: list[str] = []
    while len(wnids) < classes:
        w = f"n{int(rng.integers(10**7, 10**8 - 1)):08d}"
        if w not in wnids:
            wnids.append(w)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    with open(os.path.join(folder, "words.txt"), "w") as f:
        f.writelines(f"{w}\tthing {i}\n" for i, w in enumerate(wnids))

    gray, png = [], []
    for ci, w in enumerate(wnids):
        img_dir = os.path.join(folder, "train", w, "images")
        os.makedirs(img_dir, exist_ok=True)
        boxes = []
        for j in range(per_class):
            if ci == 0 and j == 0:
                name = f"{w}_{j}.JPEG"
                Image.fromarray(_natural_looking(rng, size, 1), "L").save(os.path.join(img_dir, name), "JPEG")
                gray.append(os.path.join(img_dir, name))
            elif ci == classes - 1 and j == 1:
                name = f"{w}_{j}.png"
                rgba = np.concatenate([_natural_looking(rng, size, 3),
                                       rng.integers(0, 256, size=(size, size, 1), dtype=np.uint8)], axis=-1)
                Image.fromarray(rgba, "RGBA").save(os.path.join(img_dir, name), "PNG")
                png.append(os.path.join(img_dir, name))
            else:
                name = f"{w}_{j}.JPEG"
                Image.fromarray(_natural_looking(rng, size, 3), "RGB").save(os.path.join(img_dir, name), "JPEG")
            boxes.append(f"{name}\t0\t0\t{size - 1}\t{size - 1}\n")
        with open(os.path.join(folder, "train", w, f"{w}_boxes.txt"), "w") as f:
            f.writelines(boxes)

    val_dir = os.path.join(folder, "val", "images")
    os.makedirs(val_dir, exist_ok=True)
    val_wnids = [w for w in wnids for _ in range(val_per_class)]
    rng.shuffle(val_wnids)
    val_labels, lines = {}, []
    for j, w in enumerate(val_wnids):
        name = f"val_{j}.JPEG"
        val_labels[name] = w
        channels = 1 if j == 0 else 3
        Image.fromarray(_natural_looking(rng, size, channels), "L" if channels == 1 else "RGB").save(
            os.path.join(val_dir, name), "JPEG")
        if channels == 1:
            gray.append(os.path.join(val_dir, name))
        x0, y0 = (int(v) for v in rng.integers(0, size // 3, size=2))
        lines.append(f"{name}\t{w}\t{x0}\t{y0}\t{x0 + size // 2}\t{y0 + size // 2}\n")
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)

    test_dir = os.path.join(folder, "test", "images")
    os.makedirs(test_dir, exist_ok=True)
    Image.fromarray(_natural_looking(rng, size, 3), "RGB").save(os.path.join(test_dir, "test_0.JPEG"), "JPEG")
    return {"folder": folder, "wnids": wnids, "val_labels": val_labels, "gray": gray, "png": png}


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
