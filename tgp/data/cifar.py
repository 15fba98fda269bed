"""CIFAR-10 / CIFAR-100 DataModules on top of torchvision's loaders."""

from __future__ import annotations

import os
import pickle
from typing import Callable

from torchvision.datasets import CIFAR10, CIFAR100

import torch

from tgp.data.image import ImageClassificationDataModule
from tgp.data.transforms import pil_eval_transform, pil_train_transform
from tgp.errors import DataNotFoundError

_LOAD_ERRORS = (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError)


def _without_md5(cls: type[CIFAR10]) -> type[CIFAR10]:
    """A subclass of ``cls`` whose file checks test existence only (md5 entries set to None)."""
    return type(
        f"{cls.__name__}NoChecksum",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


CIFAR10NoChecksum = _without_md5(CIFAR10)
CIFAR100NoChecksum = _without_md5(CIFAR100)


class _CIFARDataModule(ImageClassificationDataModule):
    in_channels = 3
    image_size = 32
    _tv_class: type[CIFAR10] = CIFAR10
    _tv_class_nocheck: type[CIFAR10] = CIFAR10NoChecksum
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __init__(self, *args, verify_checksums: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_checksums = bool(verify_checksums)

    def _uint8_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """torchvision keeps the decoded pixels as ``.data`` (uint8 [N, 32, 32, 3]) and ``.targets``."""
        idx = torch.as_tensor(self._split_indices(split), dtype=torch.long)
        source = self.data_test.dataset if split == "test" else self.data_train.dataset
        return torch.from_numpy(source.data)[idx], torch.as_tensor(source.targets)[idx]

    @property
    def _dataset_cls(self) -> type[CIFAR10]:
        return self._tv_class if self.verify_checksums else self._tv_class_nocheck

    @property
    def data_path(self) -> str:
        return os.path.join(os.path.abspath(self.root), self._tv_class.base_folder)

    def _error(self, reason: str) -> DataNotFoundError:
        url = self._tv_class.url
        checksum_hint = (
            " If the files are a repacked copy whose checksums differ from the official ones, set data.verify_checksums=false."
            if self.verify_checksums and os.path.isdir(self.data_path)
            else ""
        )
        return DataNotFoundError(
            f"{self.name}: {reason} at {self.data_path}. Set data.download=true on a machine with network access, "
            f"or download the official archive {url} and unpack it under data.root={os.path.abspath(self.root)} "
            f"(so that {self.data_path} exists).{checksum_hint}"
        )

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            for train in (True, False):
                self._dataset_cls(self.root, train=train, download=True)
        except Exception as exc:  # URLError, RuntimeError, OSError, tarfile errors ...
            raise self._error(f"download failed ({type(exc).__name__}: {exc}); no usable data") from None

    def _load_raw(self):
        cls = self._dataset_cls
        try:
            train = cls(self.root, train=True, download=False)
            test = cls(self.root, train=False, download=False)
        except _LOAD_ERRORS as exc:
            if not os.path.isdir(self.data_path):
                reason = "dataset folder not found"
            elif self.verify_checksums:
                reason = f"files missing, incomplete or failing the md5 check ({exc})"
            else:
                reason = f"files missing or unreadable ({type(exc).__name__}: {exc})"
            raise self._error(reason) from None
        return train, test

    def train_transform(self) -> Callable:
        return pil_train_transform(32, self.mean, self.std, padding=4)

    def eval_transform(self) -> Callable:
        return pil_eval_transform(self.mean, self.std)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (torchvision files under ``<root>/cifar-10-batches-py``)."""

    name = "cifar10"
    num_classes = 10
    _tv_class = CIFAR10
    _tv_class_nocheck = CIFAR10NoChecksum
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100, fine labels (torchvision files under ``<root>/cifar-100-python``)."""

    name = "cifar100"
    num_classes = 100
    _tv_class = CIFAR100
    _tv_class_nocheck = CIFAR100NoChecksum
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
