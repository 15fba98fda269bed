"""Views of a job's datamodule that some methods train on: indexed items, class subsets, SD loaders."""

from __future__ import annotations

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from tgp.data.base import ClassificationDataModule
from tgp.data.image import TransformedSubset
from tgp.data.samplers import ClassPairBatchSampler, DLBBatchSampler
from tgp.distill.self_distill import check_regime
from tgp.errors import ConfigError

def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of a dataset: read off the wrapped dataset's ``targets`` at ``indices`` when there are
    both (a ``TransformedSubset``), else by loading every item."""
    source, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    targets = getattr(source, "targets", None) if source is not None else None
    if targets is not None and indices is not None:
        return np.asarray(targets)[np.asarray(indices)]
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])


class IndexedDataset(Dataset):
    """Items ``(x, y, i)``: the wrapped dataset's item and its position ``i`` (for per-sample state)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, i


class _Indexed(Dataset):
    """The items ``indices`` of ``dataset``; indexed with the base sampler's ``(i, seed)`` too, which it
    passes on with the mapped index (the wrapped split reads the seed, or ignores it)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, tuple):
            return self.dataset[(int(self.indices[i[0]]), i[1])]
        return self.dataset[int(self.indices[i])]


class ClassSubsetDataModule(ClassificationDataModule):
    """The train/val/test samples of ``classes`` only, reusing ``base``'s datasets, transforms and
    loader settings — and its loaders (the torch path): the global batch split per DDP rank, the
    epoch-seeded order and per-sample augmentation seeds that make a resumed stage exact. Any
    modality: the model's input format, batch assembly and scoring are ``base``'s.

    Labels keep their original index (the network keeps all its outputs).
    """

    def __init__(self, base, classes):
        L.LightningDataModule.__init__(self)
        base._require_setup() if hasattr(base, "_require_setup") else base.setup("fit")
        self.base, self.classes = base, sorted(int(c) for c in classes)
        self.name = f"{base.name}[{','.join(map(str, self.classes))}]"
        self.num_classes, self.modality = base.num_classes, getattr(base, "modality", "base")
        for attr in ("batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers",
                     "score_seed", "shuffle_seed", "collate_fn"):
            setattr(self, attr, getattr(base, attr))
        for attr in ("in_channels", "image_size"):  # what an image model reads of its data, when there
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.data_train = self._only(base.data_train)
        self.data_val = self._only(base.data_val)
        self.data_test = self._only(base.data_test)
        self.data_score = self._only(base.data_score)
        if len(self.data_train) == 0:
            raise ConfigError("data", base.name, f"the training split holds no sample of classes {self.classes}.",
                              "use more training data (data.limit_train).")

    def setup(self, stage: str | None = None) -> None:
        """The subsets are built in ``__init__``."""

    def model_kwargs(self) -> dict:
        return self.base.model_kwargs()

    def example_input(self, batch_size: int = 1):
        return self.base.example_input(batch_size)

    @property
    def scoring(self):
        return self.base.scoring

    def _only(self, dataset: Dataset) -> Dataset:
        keep = np.flatnonzero(np.isin(dataset_labels(dataset), self.classes))
        if isinstance(dataset, TransformedSubset):  # same source and transform, fewer indices
            return TransformedSubset(dataset.dataset, dataset.indices[keep], dataset.transform)
        return _Indexed(dataset, keep)


class SelfDistillData(L.LightningDataModule):
    """The run's datamodule with a train loader for an SD regime: items ``(x, y, index)``;
    PS-KD shuffles like the base loader, DLB and CS-KD use their batch samplers. The other
    loaders are the base datamodule's. With ``data.loader=device`` the same batches (same sampler,
    same index lists) are served by the base's :class:`~tgp.data.device_loader.DeviceLoader`."""

    def __init__(self, base, regime: str):
        super().__init__()
        self.base, self.regime = base, check_regime(regime)
        for attr in ("name", "num_classes", "in_channels", "image_size", "batch_size"):
            setattr(self, attr, getattr(base, attr))

    def setup(self, stage: str | None = None) -> None:
        self.base.setup(stage)

    def example_input(self, batch_size: int = 1):
        return self.base.example_input(batch_size)

    @property
    def num_train(self) -> int:
        return self.base.num_train

    def _batch_sampler(self):
        """DLB's or CS-KD's batch sampler over the training split (None for PS-KD: a plain shuffle)."""
        b = self.base
        if self.regime == "dlb":
            return DLBBatchSampler(len(b.data_train), b.batch_size)
        if self.regime == "cskd":
            return ClassPairBatchSampler(dataset_labels(b.data_train), b.batch_size)
        return None

    def train_dataloader(self):
        b = self.base
        b.setup("fit")
        if getattr(b, "loader", "torch") == "device":
            return b._device_loader("train", trainer=self.trainer, batch_sampler=self._batch_sampler(), with_index=True)
        ds = IndexedDataset(b.data_train)
        kw = dict(num_workers=b.num_workers, pin_memory=b.pin_memory, persistent_workers=b.persistent_workers)
        if self.regime == "pskd":
            return DataLoader(ds, batch_size=b.batch_size, shuffle=True, drop_last=len(ds) > b.batch_size, **kw)
        return DataLoader(ds, batch_sampler=self._batch_sampler(), **kw)

    def val_dataloader(self):
        return self.base.val_dataloader()

    def test_dataloader(self):
        return self.base.test_dataloader()

    def score_dataloader(self, batch_size: int | None = None):
        return self.base.score_dataloader(batch_size)
