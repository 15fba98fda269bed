"""Image classification on top of :class:`~tgp.data.base.ClassificationDataModule`.

A subclass only says how to load the raw train and test sets (items ``(raw_image, int_label)``)
and which transforms to apply; the base class does the seeded train/val split, the optional
``limit_train``/``limit_test`` subsets and builds the dataloaders.

Two data paths (``data.loader``), one implementation for every dataset that offers the second:
``torch`` (DataLoader workers run the PIL transforms per image) and ``device`` (the split as one
``uint8`` tensor on the training device, augmented in batches by
:class:`~tgp.data.device_loader.DeviceLoader`). A dataset offers ``device`` by implementing
:meth:`ImageClassificationDataModule._uint8_split`.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tgp.data.base import ClassificationDataModule
from tgp.data.device_loader import DeviceLoader
from tgp.data.global_batches import running_ranks


class TransformedSubset(Dataset):
    """``dataset[indices[i]]`` with ``transform`` applied to the image; labels become ``int``.

    Indexed with ``(i, seed)`` (from :class:`EpochSampler`), the transform's random draws are
    seeded by ``seed``: the sample's augmentation is a function of the run's seed and epoch only.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable | None = None):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int | tuple[int, int]) -> tuple[Any, int]:
        seed = None
        if isinstance(i, tuple):
            i, seed = i
        x, y = self.dataset[int(self.indices[i])]
        if self.transform is not None:
            if seed is not None:  # torchvision's and our transforms draw from torch's (and Python's) global RNG
                torch.manual_seed(seed)
                random.seed(seed)
            x = self.transform(x)
        return x, int(y)


class ImageClassificationDataModule(ClassificationDataModule):
    """Common behaviour of all image-classification DataModules of ``tgp``.

    Subclasses set the class attributes ``name``, ``num_classes``, ``in_channels``, ``image_size``
    and implement :meth:`_load_raw`, :meth:`train_transform` and :meth:`eval_transform`.
    """

    modality = "image"
    in_channels: int = 0
    image_size: int = 0
    crop_padding: int = 4  # RandomCrop(image_size, padding=crop_padding) of the train transform, on both paths

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_size: float | int = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        download: bool = False,
        limit_train: int | None = None,
        limit_test: int | None = None,
        score_seed: int = 0,
        loader: str = "torch",
    ):
        super().__init__(root=root, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         pin_memory=pin_memory, persistent_workers=persistent_workers, val_size=val_size,
                         split_seed=split_seed, download=download, limit_train=limit_train, limit_test=limit_test,
                         score_seed=score_seed, loader=loader)
        self.augment = bool(augment)

    # ----------------------------------------------------------------- the model's input format
    def model_kwargs(self) -> dict:
        """``num_classes`` and ``in_channels``: what every image network is built with."""
        return {"num_classes": int(self.num_classes), "in_channels": int(self.in_channels)}

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A batch in the model's input format: float zeros ``(batch_size, in_channels, image_size,
        image_size)``. What FLOPs, effective sparsity and timings are measured on, instead of shapes
        written out by hand (another modality's datamodule returns its own, e.g. token ids ``(B, L)``)."""
        return torch.zeros(int(batch_size), int(self.in_channels), int(self.image_size), int(self.image_size))

    # ----------------------------------------------------------------- subclass hooks
    def train_transform(self) -> Callable | None:
        raise NotImplementedError

    def eval_transform(self) -> Callable | None:
        raise NotImplementedError

    def _uint8_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 [n, H, W, C], labels int64 [n])`` of ``split`` (``train``, ``val`` or
        ``test``), as decoded and before any transform, in the order of that split's indices.

        What the device loader serves; a dataset whose raw images are equal-sized ``uint8`` arrays
        implements it (and its train transform must be :func:`~tgp.data.transforms.pil_train_transform`
        with ``crop_padding``, which the device loader reproduces) to offer ``data.loader=device``.
        """
        raise NotImplementedError

    @classmethod
    def _has_device_path(cls) -> bool:
        return cls._uint8_split is not ImageClassificationDataModule._uint8_split

    def _subset(self, dataset: Dataset, indices: np.ndarray, split: str) -> TransformedSubset:
        """Training images get the train transform (when ``augment``), every other split the eval one."""
        eval_tf = self.eval_transform()
        transform = self.train_transform() if split == "train" and self.augment else eval_tf
        return TransformedSubset(dataset, indices, transform)

    # ----------------------------------------------------------------- the device path
    def _device_loader(self, split: str, device: torch.device | str | None = None, *, trainer=None,
                       **kw) -> DeviceLoader:
        """``split`` served by a :class:`DeviceLoader` on ``device`` (default: the Trainer's root
        device, else the CPU) with the same batch sizes, drop_last rule, augmentation and
        normalization as the torch path; the training order and crops are seeded by
        ``(shuffle_seed, trainer epoch)`` so a resumed stage draws the epochs it had not drawn.
        ``trainer``: the Trainer fitting through another datamodule that wraps this one (default: the
        one attached here); ``kw``: :class:`DeviceLoader`'s ``batch_sampler`` and ``with_index``."""
        images, labels = self._uint8_split(split)
        trainer = trainer if trainer is not None else getattr(self, "trainer", None)
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        device = torch.device(device)
        train = split == "train"
        return DeviceLoader(
            images, labels, batch_size=self.rank_batch_size if train else self.rank_eval_batch_size,
            mean=self.mean, std=self.std, device=device, shuffle=train,
            drop_last=train and len(labels) > self.batch_size, augment=train and self.augment,
            padding=self.crop_padding, seed=self.shuffle_seed, channels_last=device.type == "cuda",
            epoch_fn=(lambda: trainer.current_epoch) if train and trainer is not None else None,
            ranks=running_ranks(trainer), **kw,
        )
