"""The modality-neutral part of every tgp DataModule.

A batch is ``(x, y)`` for every modality: images ``float [B, C, H, W]`` (:mod:`tgp.data.image`),
token ids ``long [B, L]`` padded per batch (:mod:`tgp.data.text`). This class holds what does not
depend on ``x``: the seeded train/val carving, the optional ``limit_train``/``limit_test``
subsets, the epoch-seeded training order (:class:`EpochSampler`), the fixed-order score loader,
the global vs per-rank batch under DDP and the choice of data path (``data.loader``: ``torch``
DataLoader workers, or ``device``: the split resident on the training device, served by the
modality's device loader).

A subclass says how to load the raw train and test sets (:meth:`_load_raw`), how a split is
wrapped (:meth:`_subset`: transforms, tokenized views), how batches are assembled
(:attr:`collate_fn`), what one batch of model input looks like (:meth:`example_input`) and, to
offer ``data.loader=device``, how the device loader is built (:meth:`_device_loader`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of an epoch's training order: its first draw, ``randperm(n)``, is the order
    (shared by :class:`EpochSampler` and the token device loader, so both serve the same batches)."""
    return torch.Generator().manual_seed(mix_seed("order", int(seed), int(epoch)))


class EpochSampler(Sampler):
    """A random order of ``range(n)`` per epoch that depends on ``(seed, epoch)`` only.

    Each index comes with a seed for that sample's augmentation (``(index, sample_seed)``, read
    by :class:`~tgp.data.image.TransformedSubset`; datasets without augmentation ignore it), so
    the augmented batches of an epoch are the same whether the run was resumed or not and however
    many (persistent) loader workers there are. Lightning calls
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
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=gen).tolist()
        return iter(zip(order, seeds))


class ClassificationDataModule(L.LightningDataModule):
    """Common behaviour of all DataModules of ``tgp`` (see the module docstring).

    Subclasses set ``name`` and ``num_classes`` (1 for a regression target such as STS-B's) and
    implement :meth:`_load_raw`, :meth:`_subset` and :meth:`example_input`.
    """

    name: str = "base"
    num_classes: int = 0
    modality: str = "base"  # image | text: what a method's data check may ask (MethodSpec.data_check)
    benchmark: str | None = None  # the benchmark the dataset belongs to (glue, xglue), for the report
    # The data path. A class attribute too, so that views built without __init__ (class subsets)
    # take the torch path over their own subsets.
    loader: str = "torch"
    # How batches are assembled from items (None: torch's default_collate); text pads per batch.
    collate_fn: Callable | None = None
    # Which datasets offer data.loader=device (named in the error of those that do not).
    device_path_note: str = "datasets stored as equal-sized uint8 images (cifar10, cifar100, mnist5k, tiny_imagenet) and the text tasks"

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
        """Return ``(full_train, test)``, items ``(raw_x, label)``.

        Raise :class:`tgp.errors.DataNotFoundError` when the files are missing or unreadable.
        """
        raise NotImplementedError

    def _subset(self, dataset: Dataset, indices: np.ndarray, split: str) -> Dataset:
        """The items ``indices`` of ``dataset`` as ``split`` (``train``, ``val``, ``test`` or ``score``)
        serves them: e.g. with the training augmentation for ``train`` and without for the others."""
        raise NotImplementedError

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A batch in the model's input format (what FLOPs, effective sparsity and timings are measured on)."""
        raise NotImplementedError

    def model_kwargs(self) -> dict:
        """The keyword arguments every network for this data is built with (``instantiate(cfg.model,
        **dm.model_kwargs())``): the outputs (``num_classes``) and what the modality adds (images:
        ``in_channels``)."""
        raise NotImplementedError

    @property
    def regression(self) -> bool:
        """Whether the targets are scores (one output, MSE) instead of class indices (CE)."""
        return self.scoring.regression

    @property
    def scoring(self):
        """How predictions are scored (:class:`~tgp.metrics.scoring.Scoring`): top-1 accuracy over
        ``num_classes`` unless a subclass says otherwise."""
        from tgp.metrics.scoring import accuracy_scoring

        return accuracy_scoring(self.num_classes)

    def test_group_dataloaders(self) -> dict:
        """The test split per evaluation set (``{set: loader}``); one set, named ``""``, unless a subclass
        has several (MNLI matched/mismatched, the languages of an XGLUE task)."""
        return {"": self.test_dataloader()}

    def check_model(self, model, setting: str = "model") -> None:
        """Raise a :class:`~tgp.errors.ConfigError` when ``model`` cannot read this data's batches (called
        once per job, before any stage). By default: a model that says which input it reads (``modality``,
        e.g. a Transformer's ``text``) must read this data's; a model that says nothing is taken to fit."""
        wants = getattr(model, "modality", None)
        if wants is not None and wants != self.modality:
            raise ConfigError(setting, getattr(model, "arch", type(model).__name__),
                              f"is a {wants} model, and the {self.name} data is {self.modality} data.",
                              f"use a model that reads {self.modality} data for {setting} (or {wants} data for this model).")

    def check_net_config(self, node, setting: str) -> None:
        """:meth:`check_model` for a network that is only configured (``teacher.net``): built here for the
        check (a subclass may check the config alone instead, as the text data checks the tokenizer)."""
        from hydra.utils import instantiate

        self.check_model(instantiate(node, **self.model_kwargs()), setting)

    @classmethod
    def dataset_name_of(cls, data_cfg) -> str:
        """The ``name`` an instance built from the config node ``data_cfg`` has, without building it
        (run names, the report's failed jobs): the class's ``name``; a datamodule whose name depends on
        a setting (a text task) overrides this."""
        return cls.name

    def _device_loader(self, split: str, device: torch.device | str | None = None, *, trainer=None, **kw):
        """``split`` served from the training device (the ``data.loader=device`` path)."""
        raise NotImplementedError

    def _split_indices(self, split: str) -> np.ndarray:
        """Indices of ``split`` into its raw set (the full train set for train/val, the test set for test)."""
        self._require_setup()
        return {"train": self.train_indices, "val": self.val_indices, "test": self.test_indices}[split]

    @classmethod
    def _has_device_path(cls) -> bool:
        return cls._device_loader is not ClassificationDataModule._device_loader

    def _checked_loader(self, loader: Any) -> str:
        if loader not in LOADERS:
            raise ConfigError("data.loader", loader, "unknown data path.",
                              "use torch (DataLoader workers) or device (the split resident on the training "
                              "device, batches assembled there).")
        if loader == "device" and not self._has_device_path():
            raise ConfigError("data.loader", loader, f"the {self.name} dataset has no device path (it is offered by "
                              f"{self.device_path_note}).", "set data.loader=torch.")
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

        self.data_val = self._subset(full_train, self.val_indices, "val")
        self.data_score = self._subset(full_train, self.train_indices, "score")
        self.data_test = self._subset(test, self.test_indices, "test")
        self.data_train = self._subset(full_train, self.train_indices, "train")

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
            collate_fn=self.collate_fn,
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

    # ----------------------------------------------------------------- the loaders Lightning asks for
    def train_dataloader(self):
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
                collate_fn=self.collate_fn,
            )
        return DataLoader(
            self.data_train, batch_size=batch, sampler=sampler, drop_last=drop_last, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers, collate_fn=self.collate_fn,
        )

    def val_dataloader(self):
        if self.loader == "device":
            return self._device_loader("val")
        self._require_setup()
        return self._eval_loader(self.data_val)

    def test_dataloader(self):
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
                          persistent_workers=self.persistent_workers, collate_fn=self.collate_fn)

    def score_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Train subset without augmentation, in a fixed (``score_seed``) shuffled order."""
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


def __getattr__(name: str):
    # The image classes lived here before the modality split; old imports keep working.
    if name in ("ImageClassificationDataModule", "TransformedSubset"):
        from tgp.data import image

        return getattr(image, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
