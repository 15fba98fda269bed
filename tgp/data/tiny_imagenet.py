"""Tiny ImageNet (200 classes, 64x64) read from the official ``tiny-imagenet-200`` folder.

The labelled ``val`` split is used as the test split; the unlabelled ``test/`` folder is ignored.
"""

from __future__ import annotations

import os
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from tgp.data.base import ImageClassificationDataModule
from tgp.data.transforms import pil_eval_transform, pil_train_transform
from tgp.errors import DataNotFoundError

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
        return ImageListDataset(train_samples), ImageListDataset(test_samples)

    def train_transform(self) -> Callable:
        return pil_train_transform(64, self.mean, self.std, padding=4)

    def eval_transform(self) -> Callable:
        return pil_eval_transform(self.mean, self.std)
