"""Base LightningDataModule for image classification.

A subclass only says how to load the raw train and test sets (items ``(raw_image, int_label)``)
and which transforms to apply; this class does the seeded train/val split, the optional
``limit_train``/``limit_test`` subsets and builds the dataloaders.

Two data paths (``data.loader``), one implementation for every dataset that offers the second:
``torch`` (DataLoader workers run the PIL transforms per image) and ``device`` (the split as one
``uint8`` tensor on the training device, augmented in batches by
:class:`~tgp.data.device_loader.DeviceLoader`). A dataset offers ``device`` by implementing
:meth:`ImageClassificationDataModule._uint8_split`.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tgp.data.device_loader import DeviceLoader
from tgp.data.global_batches import GlobalBatchSampler, RankShard, running_ranks
from tgp.errors import ConfigError

LOADERS = ("torch", "device")


def per_rank_batch(batch_size: int, world_size: int, setting: str = "data.batch_size") -> int:
    """The batch each of ``world_size`` DDP ranks takes so that together they make the global
    ``batch_size`` (``setting`` names it in the error); a :class:`~tgp.errors.ConfigError` when it does not divide."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if batch_size % world_size:
        lower, upper = batch_size - batch_size % world_size, batch_size + world_size - batch_size % world_size
        raise ConfigError(
            setting, batch_size,
            f"is the global batch, split evenly over the {world_size} DDP processes, and does not divide by {world_size}.",
            f"set {setting} to a multiple of {world_size} (e.g. {max(lower, world_size)} or {upper}), "
            "or run on a number of devices that divides it.",
        )
    return batch_size // world_size


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class EpochSampler(Sampler):
    """A random order of ``range(n)`` per epoch that depends on ``(seed, epoch)`` only.

    Each index comes with a seed for that sample's augmentation (``(index, sample_seed)``, read
    by :class:`TransformedSubset`), so the augmented batches of an epoch are the same whether the
    run was resumed or not and however many (persistent) loader workers there are. Lightning calls
    :meth:`set_epoch` before every epoch (with the restored epoch on resume); iterated outside a
    Trainer, each iteration is the next epoch.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self._explicit = int(n), int(seed), 0, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit = int(epoch), True

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if not self._explicit:
            self.epoch += 1
        gen = torch.Generator().manual_seed(mix_seed("order", self.seed, epoch))
        order = torch.randperm(self.n, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=gen).tolist()
        return iter(zip(order, seeds))


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


class ImageClassificationDataModule(L.LightningDataModule):
    """Common behaviour of all image-classification DataModules of ``tgp``.

    Subclasses set the class attributes ``name``, ``num_classes``, ``in_channels``, ``image_size``
    and implement :meth:`_load_raw`, :meth:`train_transform` and :meth:`eval_transform`.
    """

    name: str = "base"
    num_classes: int = 0
    in_channels: int = 0
    image_size: int = 0
    # The data path. A class attribute too, so that views built without __init__ (class subsets)
    # take the torch path over their own subsets.
    loader: str = "torch"
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
        super().__init__()
        _check_int("data.batch_size", batch_size, minimum=1)
        if eval_batch_size is not None:
            _check_int("data.eval_batch_size", eval_batch_size, minimum=1)
        _check_int("data.num_workers", num_workers, minimum=0)
        for setting, value in (("data.limit_train", limit_train), ("data.limit_test", limit_test)):
            if value is not None:
                _check_int(setting, value, minimum=1)
        _check_val_size_type(val_size)
        self.root = str(root)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.val_size = val_size
        self.split_seed = int(split_seed)
        self.augment = bool(augment)
        self.download = bool(download)
        self.limit_train = limit_train
        self.limit_test = limit_test
        self.score_seed = int(score_seed)
        self.loader = self._checked_loader(loader)
        # Seed of the training order and augmentation (EpochSampler); Training.fit sets it per stage.
        self.shuffle_seed = self.split_seed

        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.data_score: Dataset | None = None
        # Indices into the full raw train set / raw test set (sorted).
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None

    # ----------------------------------------------------------------- subclass hooks
    def _load_raw(self) -> tuple[Dataset, Dataset]:
        """Return ``(full_train, test)`` with items ``(raw_image, int_label)``.

        Raise :class:`tgp.errors.DataNotFoundError` when the files are missing or unreadable.
        """
        raise NotImplementedError

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

    def _split_indices(self, split: str) -> np.ndarray:
        """Indices of ``split`` into its raw set (the full train set for train/val, the test set for test)."""
        self._require_setup()
        return {"train": self.train_indices, "val": self.val_indices, "test": self.test_indices}[split]

    @classmethod
    def _has_device_path(cls) -> bool:
        return cls._uint8_split is not ImageClassificationDataModule._uint8_split

    def _checked_loader(self, loader: Any) -> str:
        if loader not in LOADERS:
            raise ConfigError("data.loader", loader, "unknown data path.",
                              "use torch (DataLoader workers, PIL transforms) or device (images on the training "
                              "device, batched augmentation there).")
        if loader == "device" and not self._has_device_path():
            raise ConfigError("data.loader", loader, f"the {self.name} dataset has no device path (it is offered by "
                              "datasets stored as equal-sized uint8 images: cifar10, cifar100, tiny_imagenet).",
                              "set data.loader=torch.")
        return loader

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        full_train, test = self._load_raw()

        n_train_full = len(full_train)
        available = np.arange(n_train_full)
        if self.limit_train is not None and self.limit_train < n_train_full:
            rng = np.random.default_rng([self.split_seed, 1])
            available = np.sort(rng.choice(n_train_full, size=self.limit_train, replace=False))

        n_val = self._num_val(len(available))
        perm = np.random.default_rng([self.split_seed, 2]).permutation(len(available))
        self.val_indices = np.sort(available[perm[:n_val]])
        self.train_indices = np.sort(available[perm[n_val:]])

        n_test = len(test)
        test_idx = np.arange(n_test)
        if self.limit_test is not None and self.limit_test < n_test:
            rng = np.random.default_rng([self.split_seed, 3])
            test_idx = np.sort(rng.choice(n_test, size=self.limit_test, replace=False))
        self.test_indices = test_idx

        eval_tf = self.eval_transform()
        train_tf = self.train_transform() if self.augment else eval_tf
        self.data_val = TransformedSubset(full_train, self.val_indices, eval_tf)
        self.data_score = TransformedSubset(full_train, self.train_indices, eval_tf)
        self.data_test = TransformedSubset(test, self.test_indices, eval_tf)
        self.data_train = TransformedSubset(full_train, self.train_indices, train_tf)

    def _num_val(self, n_available: int) -> int:
        v = self.val_size
        if isinstance(v, float):
            n_val = int(round(v * n_available))
        else:
            n_val = int(v)
        if n_val >= n_available:
            raise ConfigError(
                "data.val_size",
                v,
                f"leaves no training samples: the {self.name} train split has {n_available} samples"
                + (f" (after data.limit_train={self.limit_train})" if self.limit_train is not None else "")
                + f" and {n_val} would go to validation.",
                f"set data.val_size to a fraction below 1 or a count below {n_available}.",
            )
        return n_val

    # ----------------------------------------------------------------- loaders
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=generator,
        )

    def _require_setup(self) -> None:
        if self.data_train is None:
            self.setup()

    # ----------------------------------------------------------------- global vs per-rank batch
    @property
    def world_size(self) -> int:
        """DDP processes of the Trainer this datamodule is attached to (1 when none)."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    @property
    def rank_batch_size(self) -> int:
        """``batch_size`` is the global training batch: each rank takes ``batch_size // world_size``."""
        return per_rank_batch(self.batch_size, self.world_size)

    @property
    def rank_eval_batch_size(self) -> int:
        """The evaluation batch per rank, likewise (or the whole batch outside DDP)."""
        return per_rank_batch(self.eval_batch_size, self.world_size, "data.eval_batch_size")

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

    # ----------------------------------------------------------------- the loaders Lightning asks for
    def train_dataloader(self) -> DataLoader | DeviceLoader:
        if self.loader == "device":
            return self._device_loader("train")
        self._require_setup()
        drop_last = len(self.data_train) > self.batch_size
        batch = self.rank_batch_size
        sampler = EpochSampler(len(self.data_train), self.shuffle_seed)
        rank, world = running_ranks(getattr(self, "trainer", None))
        if world > 1:  # each rank its share of the one-process batches (tgp.data.global_batches)
            return DataLoader(
                self.data_train, batch_sampler=GlobalBatchSampler(sampler, self.batch_size, rank, world, drop_last),
                num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
            )
        return DataLoader(
            self.data_train, batch_size=batch, sampler=sampler, drop_last=drop_last, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
        )

    def val_dataloader(self) -> DataLoader | DeviceLoader:
        if self.loader == "device":
            return self._device_loader("val")
        self._require_setup()
        return self._eval_loader(self.data_val)

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        if self.loader == "device":
            return self._device_loader("test")
        self._require_setup()
        return self._eval_loader(self.data_test)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation split in order; under a running DDP Trainer, this rank's contiguous unpadded shard."""
        rank, world = running_ranks(getattr(self, "trainer", None))
        if world == 1:
            return self._loader(dataset, self.rank_eval_batch_size, shuffle=False)
        return DataLoader(dataset, batch_size=self.rank_eval_batch_size, sampler=RankShard(len(dataset), rank, world),
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers)

    def score_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Train subset with the eval transform, in a fixed (``score_seed``) shuffled order."""
        self._require_setup()
        generator = torch.Generator()
        generator.manual_seed(self.score_seed)
        return self._loader(self.data_score, batch_size or self.eval_batch_size, shuffle=True, generator=generator)

    def train_eval_dataloader(self, batch_size: int | None = None) -> DataLoader:
        return self.score_dataloader(batch_size)

    @property
    def num_train(self) -> int:
        self._require_setup()
        return len(self.data_train)


def _check_int(setting: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(setting, value, f"must be an integer >= {minimum}.", f"set {setting} to an integer >= {minimum}.")


def _check_val_size_type(v: Any) -> None:
    ok = not isinstance(v, bool) and (
        (isinstance(v, float) and 0.0 <= v < 1.0) or (isinstance(v, (int, np.integer)) and v >= 0)
    )
    if not ok:
        raise ConfigError(
            "data.val_size",
            v,
            "must be a fraction in [0, 1) or a sample count >= 0.",
            "set data.val_size to e.g. 0.1 or 5000.",
        )
