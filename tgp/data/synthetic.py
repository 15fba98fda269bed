"""Synthetic, learnable random images for tests and benchmarks (no files needed)."""

from __future__ import annotations

from typing import Callable

import torch

from tgp.data.image import ImageClassificationDataModule
from tgp.data.digits import TensorImageDataset
from tgp.errors import ConfigError


class SyntheticDataModule(ImageClassificationDataModule):
    """Each class has a fixed random prototype image; a sample is its prototype plus gaussian noise.

    ``root``, ``download`` and ``augment`` have no effect (there is no augmentation).
    """

    name = "synthetic"

    def __init__(
        self,
        *args,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        n_train: int = 512,
        n_test: int = 256,
        seed: int = 0,
        noise: float = 1.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        for setting, value, minimum in (
            ("data.num_classes", num_classes, 2),
            ("data.image_size", image_size, 1),
            ("data.channels", channels, 1),
            ("data.n_train", n_train, 2),
            ("data.n_test", n_test, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(setting, value, f"must be an integer >= {minimum}.",
                                  f"set {setting} to an integer >= {minimum}.")
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_channels = channels
        self.n_train = n_train
        self.n_test = n_test
        self.seed = int(seed)
        self.noise = float(noise)

    def _make(self, n: int, g: torch.Generator, prototypes: torch.Tensor) -> TensorImageDataset:
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=g)]
        x = prototypes[labels] + self.noise * torch.randn(
            (n, self.in_channels, self.image_size, self.image_size), generator=g
        )
        return TensorImageDataset(x.float(), labels.long())

    def _load_raw(self):
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_classes, self.in_channels, self.image_size, self.image_size)
        prototypes = torch.randn(shape, generator=g)
        train = self._make(self.n_train, g, prototypes)
        test = self._make(self.n_test, g, prototypes)
        return train, test

    def train_transform(self) -> Callable | None:
        return None

    def eval_transform(self) -> Callable | None:
        return None
