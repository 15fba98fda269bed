"""scikit-learn's bundled 8x8 digits (1797 images): real data that works fully offline."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tgp.data.image import ImageClassificationDataModule
from tgp.data.transforms import RandomTranslate
from tgp.errors import ConfigError

TEST_FRACTION = 0.2  # fixed test split: our choice
TEST_SPLIT_SEED = 0  # fixed, independent of split_seed, so the test set never moves


class TensorImageDataset(Dataset):
    """Items ``(images[i], int(labels[i]))`` from in-memory tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


@functools.lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``; x in [0, 1], shape [N, 8, 8]; fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, stratify=y, random_state=TEST_SPLIT_SEED
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


class DigitsDataModule(ImageClassificationDataModule):
    """sklearn ``load_digits``: 10 classes, 1 channel, 8 px (optionally upsampled / repeated to 3 channels).

    ``root`` and ``download`` are accepted and ignored. 20 % of the data is a fixed stratified test split;
    the validation split is carved from the rest with ``split_seed``.
    """

    name = "digits"
    num_classes = 10

    def __init__(self, *args, image_size: int = 8, channels: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ConfigError("data.image_size", image_size, "digits images are 8x8 and can only be upsampled.",
                              "set data.image_size to an integer >= 8 (e.g. 32 for CIFAR-shaped models).")
        if channels not in (1, 3):
            raise ConfigError("data.channels", channels, "digits supports 1 (grayscale) or 3 (repeated) channels.",
                              "set data.channels to 1 or 3.")
        self.image_size = image_size
        self.in_channels = channels
        self.mean = 0.0
        self.std = 1.0

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).unsqueeze(1)  # [N, 1, 8, 8]
        if self.image_size != 8:
            t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        t = (t - self.mean) / self.std
        if self.in_channels == 3:
            t = t.repeat(1, 3, 1, 1)
        return t.contiguous()

    def _load_raw(self):
        x_tr, y_tr, x_te, y_te = _digits_split()
        # Normalization statistics from the (fixed) train+val part only.
        self.mean = float(x_tr.mean())
        self.std = float(x_tr.std())
        train = TensorImageDataset(self._prepare(x_tr), torch.from_numpy(y_tr))
        test = TensorImageDataset(self._prepare(x_te), torch.from_numpy(y_te))
        return train, test

    def train_transform(self) -> Callable:
        # Translation by up to one ORIGINAL pixel (scaled with the upsampling); fill = a blank pixel.
        pad = max(1, round(self.image_size / 8))
        return RandomTranslate(pad, fill=(0.0 - self.mean) / self.std)

    def eval_transform(self) -> Callable | None:
        return None
