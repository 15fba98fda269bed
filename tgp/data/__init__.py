"""LightningDataModules for the datasets used in the experiments.

The classes are imported on first use (PEP 562), so that light submodules such as
:mod:`tgp.data.image_cache` and :mod:`tgp.data.fake_trees` can be used — in a cache-building
process, in a benchmark's helper — without importing torch and Lightning (seconds per process).
``from tgp.data import X`` and Hydra's ``_target_: tgp.data.X`` work as before.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ImageClassificationDataModule": "tgp.data.base",
    "CIFAR10DataModule": "tgp.data.cifar",
    "CIFAR100DataModule": "tgp.data.cifar",
    "TinyImageNetDataModule": "tgp.data.tiny_imagenet",
    "DigitsDataModule": "tgp.data.digits",
    "MNIST5kDataModule": "tgp.data.mnist5k",
    "SyntheticDataModule": "tgp.data.synthetic",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
