"""Tests of tgp.data: fake files in the real formats, digits offline, synthetic data."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fake_data import write_fake_cifar

from tgp.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageClassificationDataModule,
    SyntheticDataModule,
    TinyImageNetDataModule,
)
from tgp.data.fake_trees import write_fake_tiny_imagenet
from tgp.errors import ConfigError, DataNotFoundError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"


def _check_batch(batch, channels, size, num_classes, batch_size=None):
    x, y = batch
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (channels, size, size)
    assert x.shape[0] == y.shape[0]
    if batch_size is not None:
        assert x.shape[0] == batch_size
    assert int(y.min()) >= 0 and int(y.max()) < num_classes


def _all_labels(loader):
    return torch.cat([y for _, y in loader])


# ------------------------------------------------------------------ CIFAR
@pytest.mark.parametrize("cls,num_classes", [(CIFAR10DataModule, 10), (CIFAR100DataModule, 100)])
def test_cifar_fake_files_load(tmp_path, cls, num_classes):
    write_fake_cifar(tmp_path, n_train=60, n_test=20, num_classes=num_classes)
    dm = cls(root=str(tmp_path), batch_size=8, val_size=10, verify_checksums=False)
    assert isinstance(dm, ImageClassificationDataModule)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (num_classes, 3, 32)
    assert dm.name == ("cifar10" if num_classes == 10 else "cifar100")
    dm.setup("fit")
    dm.setup("test")  # idempotent
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (50, 10, 20)
    assert set(dm.train_indices).isdisjoint(dm.val_indices)
    _check_batch(next(iter(dm.train_dataloader())), 3, 32, num_classes, batch_size=8)
    _check_batch(next(iter(dm.val_dataloader())), 3, 32, num_classes)
    _check_batch(next(iter(dm.test_dataloader())), 3, 32, num_classes)
    assert len(_all_labels(dm.test_dataloader())) == 20


@pytest.mark.parametrize("cls,num_classes", [(CIFAR10DataModule, 10), (CIFAR100DataModule, 100)])
def test_cifar_fake_files_rejected_by_checksum(tmp_path, cls, num_classes):
    write_fake_cifar(tmp_path, n_train=10, n_test=5, num_classes=num_classes)
    dm = cls(root=str(tmp_path), val_size=2)
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert "md5" in msg and "verify_checksums" in msg and dm.name in msg
    assert "\n" not in msg


def test_cifar_val_transform_has_no_augmentation(tmp_path):
    write_fake_cifar(tmp_path, n_train=20, n_test=4)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=4, verify_checksums=False)
    dm.setup()
    a = torch.stack([dm.data_val[i][0] for i in range(4)])
    b = torch.stack([dm.data_val[i][0] for i in range(4)])
    assert torch.equal(a, b)


def test_cifar_download_failure_is_data_not_found(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    dm = CIFAR10DataModule(root=str(tmp_path), download=True)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    assert info.value.__suppress_context__
    assert "cifar10" in str(info.value) and "URLError" in str(info.value)


# ------------------------------------------------------------------ missing data
@pytest.mark.parametrize(
    "cls,expected_dir,hint",
    [
        (CIFAR10DataModule, "cifar-10-batches-py", "data.download"),
        (CIFAR100DataModule, "cifar-100-python", "data.download"),
        (TinyImageNetDataModule, "tiny-imagenet-200", "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
    ],
)
def test_missing_data_message(tmp_path, cls, expected_dir, hint):
    root = tmp_path / "nothing_here"
    dm = cls(root=str(root))
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert dm.name in msg
    assert os.path.join(str(root), expected_dir) in msg
    assert hint in msg
    assert "\n" not in msg
    assert info.value.__cause__ is None


# ------------------------------------------------------------------ Tiny ImageNet
@pytest.mark.parametrize("point_at_folder,cache", [(False, True), (True, True), (False, False)])
def test_tiny_imagenet_tree_loads(tmp_path, point_at_folder, cache):
    info = write_fake_tiny_imagenet(tmp_path, classes=3, per_class=4, val_per_class=2)
    root = info["folder"] if point_at_folder else str(tmp_path)
    dm = TinyImageNetDataModule(root=root, batch_size=4, val_size=2, cache=cache)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (200, 3, 64)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (10, 2, 6)  # test/ ignored
    _check_batch(next(iter(dm.train_dataloader())), 3, 64, 3, batch_size=4)

    # Test split = labelled val folder; labels follow the annotation file and sorted(wnids).
    index = {w: i for i, w in enumerate(sorted(info["wnids"]))}
    expected = [index[info["val_labels"][name]] for name in sorted(info["val_labels"])]
    labels = _all_labels(dm.test_dataloader())
    assert labels.tolist() == expected
    paths = [p for p, _ in dm.data_test.dataset.samples]
    assert all(os.sep + "val" + os.sep in p for p in paths)

    # The grayscale training image comes out with 3 channels.
    raw = dm.data_train.dataset
    gray = [i for i, (p, _) in enumerate(raw.samples) if p.endswith(f"{info['wnids'][0]}_0.JPEG")]
    assert len(gray) == 1
    img, _ = raw[gray[0]]
    assert img.mode == "RGB"
    assert dm.eval_transform()(img).shape == (3, 64, 64)
    # So does the RGBA PNG.
    png = [i for i, (p, _) in enumerate(raw.samples) if p == info["png"][0]]
    assert len(png) == 1 and raw[png[0]][0].mode == "RGB"
    # Every class folder read, class index = position in sorted(wnids).
    assert sorted({label for _, label in raw.samples}) == [0, 1, 2]


def test_tiny_imagenet_missing_annotation(tmp_path):
    info = write_fake_tiny_imagenet(tmp_path, classes=2, per_class=2, val_per_class=1)
    os.remove(os.path.join(info["folder"], "val", "val_annotations.txt"))
    with pytest.raises(DataNotFoundError, match="val_annotations.txt"):
        TinyImageNetDataModule(root=str(tmp_path), val_size=1).setup()


# ------------------------------------------------------------------ digits
def test_digits_offline_and_deterministic_split():
    dm = DigitsDataModule(batch_size=32, val_size=0.15, split_seed=0)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 8)
    dm.setup()
    n_rest = len(dm.data_train) + len(dm.data_val)
    assert len(dm.data_test) == 1797 - n_rest and abs(len(dm.data_test) - 0.2 * 1797) <= 1
    assert set(dm.train_indices).isdisjoint(dm.val_indices)
    _check_batch(next(iter(dm.train_dataloader())), 1, 8, 10, batch_size=32)

    same = DigitsDataModule(split_seed=0, val_size=0.15)
    same.setup()
    assert np.array_equal(same.val_indices, dm.val_indices)
    assert np.array_equal(same.train_indices, dm.train_indices)

    other = DigitsDataModule(split_seed=1, val_size=0.15)
    other.setup()
    assert not np.array_equal(other.val_indices, dm.val_indices)
    x1, y1 = (torch.cat(t) for t in zip(*dm.test_dataloader()))
    x2, y2 = (torch.cat(t) for t in zip(*other.test_dataloader()))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # the test split is fixed


def test_digits_upsampled_three_channels():
    dm = DigitsDataModule(image_size=32, channels=3, batch_size=16, val_size=100)
    assert (dm.in_channels, dm.image_size) == (3, 32)
    dm.setup()
    assert len(dm.data_val) == 100
    _check_batch(next(iter(dm.train_dataloader())), 3, 32, 10, batch_size=16)
    _check_batch(next(iter(dm.test_dataloader())), 3, 32, 10)


# ------------------------------------------------------------------ synthetic
def test_synthetic_shapes_and_learnable():
    dm = SyntheticDataModule(num_classes=4, image_size=16, channels=2, n_train=100, n_test=40, batch_size=16, val_size=0.2)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (4, 2, 16)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (80, 20, 40)
    _check_batch(next(iter(dm.train_dataloader())), 2, 16, 4, batch_size=16)
    # Nearest class mean (from train) classifies the test set well above chance.
    xs, ys = zip(*[dm.data_train[i] for i in range(len(dm.data_train))])
    xs, ys = torch.stack(xs).flatten(1), torch.tensor(ys)
    means = torch.stack([xs[ys == c].mean(0) for c in range(4)])
    xt, yt = next(iter(dm.test_dataloader()))
    pred = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (pred == yt).float().mean() > 0.5


def test_synthetic_same_seed_same_data():
    a, b = SyntheticDataModule(n_train=20, n_test=10, seed=3), SyntheticDataModule(n_train=20, n_test=10, seed=3)
    a.setup(), b.setup()
    assert torch.equal(next(iter(a.test_dataloader()))[0], next(iter(b.test_dataloader()))[0])


# ------------------------------------------------------------------ common behaviour
def test_score_dataloader_order_is_fixed(tmp_path):
    write_fake_cifar(tmp_path, n_train=40, n_test=4)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=0.1, verify_checksums=False, score_seed=5, batch_size=7)
    dm.setup()
    first = list(dm.score_dataloader())
    second = list(dm.score_dataloader())
    assert sum(len(y) for _, y in first) == len(dm.data_train)  # drop_last=False
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    # A fresh module (another process) gives the same order.
    dm2 = CIFAR10DataModule(root=str(tmp_path), val_size=0.1, verify_checksums=False, score_seed=5, batch_size=7)
    third = list(dm2.score_dataloader())
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, third))
    assert torch.equal(_all_labels(dm.train_eval_dataloader()), _all_labels(first_loader := dm.score_dataloader()))
    assert first_loader.batch_size == 7
    assert dm.score_dataloader(batch_size=3).batch_size == 3


def test_score_order_differs_by_seed():
    a = SyntheticDataModule(n_train=64, score_seed=0, batch_size=64)
    b = SyntheticDataModule(n_train=64, score_seed=1, batch_size=64)
    xa = next(iter(a.score_dataloader()))[0]
    xb = next(iter(b.score_dataloader()))[0]
    assert not torch.equal(xa, xb)


def test_limit_train_and_test(tmp_path):
    write_fake_cifar(tmp_path, n_train=100, n_test=30)
    dm = CIFAR10DataModule(root=str(tmp_path), limit_train=40, limit_test=12, val_size=0.25, verify_checksums=False)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (30, 10, 12)
    assert len(set(dm.train_indices) | set(dm.val_indices)) == 40
    dm2 = CIFAR10DataModule(root=str(tmp_path), limit_train=40, limit_test=12, val_size=0.25, verify_checksums=False)
    dm2.setup()
    assert np.array_equal(dm.train_indices, dm2.train_indices) and np.array_equal(dm.test_indices, dm2.test_indices)


def test_drop_last_only_when_more_than_a_batch():
    small = SyntheticDataModule(n_train=20, val_size=0.5, batch_size=16)
    assert small.train_dataloader().drop_last is False
    big = SyntheticDataModule(n_train=40, val_size=0.5, batch_size=16)
    loader = big.train_dataloader()
    assert loader.drop_last is True
    assert all(len(y) == 16 for _, y in loader)
    assert big.val_dataloader().batch_size == 16
    assert SyntheticDataModule(batch_size=16, eval_batch_size=64).test_dataloader().batch_size == 64


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError, match="data.val_size"):
        SyntheticDataModule(n_train=20, val_size=20).setup()
    with pytest.raises(ConfigError, match="data.val_size"):
        SyntheticDataModule(val_size=1.5)
    with pytest.raises(ConfigError, match="data.batch_size"):
        SyntheticDataModule(batch_size=0)
    assert SyntheticDataModule(num_workers=0, persistent_workers=True).train_dataloader().persistent_workers is False


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tiny_imagenet", "digits", "mnist5k", "synthetic"])
def test_hydra_configs_instantiate(tmp_path, name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"seed": 3, "paths": {"data_dir": str(tmp_path)}})
    cfg.data = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    dm = instantiate(cfg.data)
    assert isinstance(dm, ImageClassificationDataModule) and dm.name == name
    assert dm.split_seed == 3
