"""LightningDataModules for the datasets used in the experiments.

The classes are imported on first use (PEP 562), so that light submodules such as
:mod:`tgp.data.image_cache` and :mod:`tgp.data.fake_trees` can be used — in a cache-building
process, in a benchmark's helper — without importing torch and Lightning (seconds per process).
``from tgp.data import X`` and Hydra's ``_target_: tgp.data.X`` work as before.

A dataset's name is its datamodule class's ``name`` (``dm.name``, the ``dataset`` of a run's metrics
row); where only a config is at hand (run names, the report's failed jobs) :func:`dataset_name`
reads the same attribute off the class the config names.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ClassificationDataModule": "tgp.data.base",
    "ImageClassificationDataModule": "tgp.data.image",
    "CIFAR10DataModule": "tgp.data.cifar",
    "CIFAR100DataModule": "tgp.data.cifar",
    "TinyImageNetDataModule": "tgp.data.tiny_imagenet",
    "DigitsDataModule": "tgp.data.digits",
    "MNIST5kDataModule": "tgp.data.mnist5k",
    "SyntheticDataModule": "tgp.data.synthetic",
    "TextClassificationDataModule": "tgp.data.text.datamodule",
}

__all__ = [*_WHERE, "dataset_name"]


def dataset_name(data_cfg) -> str | None:
    """The dataset name of a ``data`` config node (a DictConfig or a plain dict): the ``name`` of the
    datamodule class its ``_target_`` names. ``None`` without a ``_target_``, or when that class cannot
    be imported here (a config written by another version)."""
    target = data_cfg.get("_target_") if hasattr(data_cfg, "get") else None
    if not target:
        return None
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except (ImportError, AttributeError, ValueError):
        return None
    reader = getattr(cls, "dataset_name_of", None)
    try:
        name = reader(data_cfg) if reader is not None else getattr(cls, "name", None)
    except Exception:  # noqa: BLE001 - a config this version cannot read (e.g. an unknown task): no name
        return None
    return str(name) if name else None


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
