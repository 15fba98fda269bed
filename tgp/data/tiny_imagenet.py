"""Tiny ImageNet (200 classes, 64x64) read from the official ``tiny-imagenet-200`` folder.

The labelled ``val`` split is used as the test split; the unlabelled ``test/`` folder is ignored.

With ``data.cache=true`` (the config's default) the JPEGs are decoded once into a ``uint8`` array
file (:mod:`tgp.data.image_cache`) beside the data (``<tiny-imagenet-200>/.tgp_cache/``) or under
``data.cache_dir``; both data paths then read pixels from it: ``data.loader=torch`` hands the same
PIL images to the same transforms (results identical to ``cache=false``, only faster) and
``data.loader=device`` serves the splits from the training device.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tgp.data.image import ImageClassificationDataModule
from tgp.data.cache_files import default_folders
from tgp.data.image_cache import CachedImages, ensure_cache
from tgp.data.transforms import pil_eval_transform, pil_train_transform
from tgp.errors import ConfigError, DataNotFoundError

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"


class ImageListDataset(Dataset):
    """``(path, label)`` list; items are ``(PIL RGB image, label)``."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except OSError as exc:
            raise DataNotFoundError(
                f"tiny_imagenet: cannot read image {path} ({exc}). The copy under that folder is damaged; "
                f"unpack the official archive {TINY_IMAGENET_URL} again."
            ) from None
        return image, label


class TinyImageNetDataModule(ImageClassificationDataModule):
    """Tiny ImageNet; ``root`` may be the parent of ``tiny-imagenet-200`` or that folder itself."""

    name = "tiny_imagenet"
    num_classes = 200
    in_channels = 3
    image_size = 64
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2302, 0.2265, 0.2262)

    def __init__(self, *args, cache: bool = True, cache_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(cache, bool):
            raise ConfigError("data.cache", cache, "must be true or false.",
                              "set data.cache=true (decode the JPEGs once into a uint8 array file) or false.")
        if cache_dir is not None and not (isinstance(cache_dir, str) and cache_dir.strip()):
            raise ConfigError("data.cache_dir", cache_dir, "must be a folder path or null.",
                              "set data.cache_dir to a writable folder, or null to keep the cache next to the data.")
        if self.loader == "device" and not cache:
            raise ConfigError("data.loader", self.loader, "the device path serves the decoded uint8 cache, and "
                              "data.cache=false turns the cache off.",
                              "set data.cache=true (the JPEGs are decoded once, then read from the array file), "
                              "or data.loader=torch to read the JPEG files in DataLoader workers.")
        self.cache, self.cache_dir = cache, cache_dir
        self.cache_builds: dict[str, float] = {}  # split -> seconds, for the caches this module built

    def cache_folders(self) -> list[str]:
        """Where the decoded cache may live, in order: ``data.cache_dir`` when set (only there: the
        user chose it); else beside the data, then the user's cache folder (a read-only data copy)."""
        tag = f"{self.name}-{hashlib.sha1(self.data_path.encode()).hexdigest()[:10]}"
        return default_folders(self.data_path, tag, self.cache_dir)

    def _cached(self, samples: list[tuple[str, int]], name: str) -> CachedImages:
        workers = min(self.num_workers, os.cpu_count() or 1)
        result = ensure_cache(samples, self.data_path, name, self.cache_folders(), size=(self.image_size,) * 2,
                              dataset=self.name, workers=workers, setting="data.cache_dir",
                              setting_value=self.cache_dir)
        if result.built:
            self.cache_builds[name] = result.seconds
        return CachedImages(result.path, samples)

    @property
    def data_path(self) -> str:
        root = os.path.abspath(self.root)
        if os.path.basename(root.rstrip(os.sep)) == FOLDER or (
            os.path.isfile(os.path.join(root, "wnids.txt")) and not os.path.isdir(os.path.join(root, FOLDER))
        ):
            return root
        return os.path.join(root, FOLDER)

    def _error(self, reason: str) -> DataNotFoundError:
        extra = " Automatic download is not supported for Tiny ImageNet (data.download is ignored)." if self.download else ""
        return DataNotFoundError(
            f"tiny_imagenet: {reason} (looked in {self.data_path}). Download the official archive "
            f"{TINY_IMAGENET_URL} and unzip it under data.root={os.path.abspath(self.root)}, so that "
            f"{os.path.join(self.data_path, 'wnids.txt')} exists; data.root may also point at the "
            f"{FOLDER} folder itself.{extra}"
        )

    def _load_raw(self):
        base = self.data_path
        wnids_file = os.path.join(base, "wnids.txt")
        if not os.path.isfile(wnids_file):
            reason = "dataset folder not found" if not os.path.isdir(base) else f"{wnids_file} not found"
            raise self._error(reason)
        try:
            with open(wnids_file) as f:
                wnids = sorted({line.strip() for line in f if line.strip()})
        except OSError as exc:
            raise self._error(f"cannot read {wnids_file} ({exc})") from None
        if not wnids:
            raise self._error(f"{wnids_file} is empty")
        class_index = {w: i for i, w in enumerate(wnids)}

        train_samples: list[tuple[str, int]] = []
        for wnid in wnids:
            img_dir = os.path.join(base, "train", wnid, "images")
            if not os.path.isdir(img_dir):
                raise self._error(f"training folder {img_dir} not found")
            names = sorted(n for n in os.listdir(img_dir) if n.lower().endswith((".jpeg", ".jpg", ".png")))
            train_samples.extend((os.path.join(img_dir, n), class_index[wnid]) for n in names)
        if not train_samples:
            raise self._error("no training images found under train/<wnid>/images/")

        ann_file = os.path.join(base, "val", "val_annotations.txt")
        val_dir = os.path.join(base, "val", "images")
        if not os.path.isfile(ann_file):
            raise self._error(f"{ann_file} not found")
        test_samples: list[tuple[str, int]] = []
        try:
            with open(ann_file) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) < 2 or parts[1] not in class_index:
                        raise self._error(f"line {lineno} of {ann_file} is malformed or names an unknown wnid: {line.strip()!r}")
                    test_samples.append((os.path.join(val_dir, parts[0]), class_index[parts[1]]))
        except OSError as exc:
            raise self._error(f"cannot read {ann_file} ({exc})") from None
        test_samples.sort()
        missing = [p for p, _ in test_samples if not os.path.isfile(p)]
        if missing:
            raise self._error(f"{len(missing)} validation images listed in {ann_file} are missing, e.g. {missing[0]}")
        if self.cache:
            return self._cached(train_samples, "train"), self._cached(test_samples, "val")
        return ImageListDataset(train_samples), ImageListDataset(test_samples)

    def _uint8_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the decoded cache (a copy of the split's rows, read from the memory map)."""
        idx = self._split_indices(split)
        source = self.data_test.dataset if split == "test" else self.data_train.dataset
        if not isinstance(source, CachedImages):  # __init__ refuses loader=device without the cache
            raise RuntimeError("the device path needs the decoded cache (data.cache=true)")
        return torch.from_numpy(source.array[idx]), torch.as_tensor(np.asarray(source.targets)[idx], dtype=torch.long)

    def train_transform(self) -> Callable:
        return pil_train_transform(64, self.mean, self.std, padding=4)

    def eval_transform(self) -> Callable:
        return pil_eval_transform(self.mean, self.std)
