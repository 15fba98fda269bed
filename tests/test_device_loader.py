"""The device-resident data path gives the same data as the torch path, sharded like DistributedSampler."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from helpers.fake_data import write_fake_cifar
from tgp.data import CIFAR10DataModule
from tgp.data.device_loader import DeviceLoader
from tgp.distill import DistillationLoss
from tgp.errors import ConfigError
from tgp.models import build_model
from tgp.lit import ClassifierModule


@pytest.fixture
def cifar(tmp_path):
    write_fake_cifar(tmp_path, n_train=120, n_test=40)
    return lambda **kw: CIFAR10DataModule(root=str(tmp_path), verify_checksums=False, val_size=20, batch_size=16, **kw)


def test_eval_batches_equal_the_torch_path(cifar):
    torch_dm, device_dm = cifar(), cifar(loader="device")
    for a, b in zip(torch_dm.test_dataloader(), device_dm.test_dataloader()):
        assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-5)
    xa = torch.cat([x for x, _ in torch_dm.val_dataloader()])
    xb = torch.cat([x for x, _ in device_dm.val_dataloader()])
    assert torch.allclose(xa, xb, atol=1e-5)


def test_augmented_images_are_padded_crops_possibly_flipped(cifar):
    dm = cifar(loader="device")
    dm.setup()
    raw = torch.from_numpy(dm.data_train.dataset.data)[torch.as_tensor(dm.train_indices)]  # [N, 32, 32, 3]
    loader = dm.train_dataloader()
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 32, 32) and len(loader) == 100 // 16
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)  # back to raw pixel values
    padded = F.pad(raw.permute(0, 3, 1, 2), (4, 4, 4, 4))
    labels = torch.as_tensor(dm.data_train.dataset.targets)[torch.as_tensor(dm.train_indices)]
    for img, label in zip(pixels[:6], y[:6]):
        candidates = [
            (padded[i, :, dy:dy + 32, dx:dx + 32], f)
            for i in torch.nonzero(labels == label).flatten().tolist() for dy in range(9) for dx in range(9)
            for f in (False, True)
        ]
        assert any(torch.equal(img, c.flip(-1) if f else c) for c, f in candidates)


def test_epochs_differ_and_are_reproducible():
    imgs = torch.randint(0, 255, (50, 8, 8, 3), dtype=torch.uint8)
    make = lambda: DeviceLoader(imgs, torch.arange(50), batch_size=10, mean=(0, 0, 0), std=(1, 1, 1),  # noqa: E731
                                shuffle=True, augment=True, seed=3)
    a, b = make(), make()
    ea1, ea2 = [y for _, y in a], [y for _, y in a]
    assert torch.equal(torch.cat(ea1).sort().values, torch.arange(50))  # every sample once per epoch
    assert not torch.equal(torch.cat(ea1), torch.cat(ea2))  # a new order every epoch
    assert all(torch.equal(p, q) for p, q in zip(ea1, [y for _, y in b]))  # same seed, same epoch, same batches


def test_ranks_share_the_one_process_batches_pixel_for_pixel():
    """Under DDP rank r takes the r-th half of each one-process batch, crops and flips included (the draws
    are made for the whole global batch): the ranks together train on exactly the one-process batches."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (23, 6, 6, 3), dtype=torch.uint8, generator=g)

    def make(batch, ranks=None, shuffle=True):
        return DeviceLoader(imgs, torch.arange(23), batch_size=batch, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                            shuffle=shuffle, augment=shuffle, padding=2, seed=5, drop_last=shuffle,
                            epoch_fn=lambda: 3, ranks=ranks)

    one = list(make(8))
    halves = [list(make(4, (rank, 2))) for rank in (0, 1)]
    assert len(one) == len(halves[0]) == len(halves[1]) == 2  # 23 // 8 global batches, the rest dropped
    for (x, y), (x0, y0), (x1, y1) in zip(one, *halves):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    # evaluation: contiguous, unpadded shards, every sample once
    shards = [torch.cat([y for _, y in make(5, (rank, 2), shuffle=False)]) for rank in (0, 1)]
    assert torch.equal(torch.cat(shards), torch.arange(23)) and len(shards[0]) == 12


def test_fit_through_lightning_with_the_device_path(cifar):
    dm = cifar(loader="device")
    module = ClassifierModule(build_model("resnet20", num_classes=10, width=4), DistillationLoss(kd_weight=0.0), epochs=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 100 // 16 and "train/val/acc" in trainer.callback_metrics


def test_unknown_loader_is_a_config_error(cifar):
    with pytest.raises(ConfigError, match="data.loader"):
        cifar(loader="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_bf16_channels_last(cifar):
    dm = cifar(loader="device")
    net = build_model("resnet18", num_classes=10, width=16)
    module = ClassifierModule(net, DistillationLoss(kd_weight=0.0), epochs=1, channels_last=True)
    trainer = L.Trainer(max_epochs=1, accelerator="gpu", devices=1, precision="bf16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    assert trainer.global_step == 100 // 16


def test_augmentation_is_the_drawn_crop_then_flip_of_each_image():
    """Recompute every augmented batch independently (slice the zero-padded image at the drawn
    offset, then flip it if drawn) from the loader's documented draws: same seed, same order."""
    imgs = torch.randint(0, 256, (30, 8, 6, 3), dtype=torch.uint8)
    loader = DeviceLoader(imgs, torch.arange(30), batch_size=7, mean=(0, 0, 0), std=(1, 1, 1), shuffle=True,
                          augment=True, padding=2, seed=5)
    for epoch in range(2):
        batches = list(loader)
        order = loader._indices(epoch)
        gen = torch.Generator().manual_seed(5 * 100_003 + epoch + 1)
        for k, (x, y) in enumerate(batches):
            idx = order[k * 7:(k + 1) * 7]
            b = len(idx)
            oy, ox = torch.randint(0, 5, (b,), generator=gen), torch.randint(0, 5, (b,), generator=gen)
            flip = torch.rand(b, generator=gen) < 0.5
            padded = F.pad(imgs[idx].permute(0, 3, 1, 2), (2, 2, 2, 2))
            crops = [padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 6] for i in range(b)]
            expected = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip)])
            assert torch.equal(y, idx) and x.shape == (b, 3, 8, 6) and x.is_contiguous()
            assert torch.equal(torch.round(x * 255).to(torch.uint8), expected)


@pytest.mark.parametrize("regime", ["pskd", "dlb", "cskd"])
def test_self_distillation_batches_on_the_device_path(cifar, regime):
    """EPSD's SD loaders with ``loader=device``: DLB's and CS-KD's batches are their sampler's index
    lists (drawn from the global RNG, as on the torch path), PS-KD's a seeded shuffle, and every
    ``(x, y, i)`` is sample ``i`` of the training split, as the torch path's dataset gives it."""
    from tgp.data.views import SelfDistillData

    sd = SelfDistillData(cifar(augment=False, loader="device"), regime)
    torch.manual_seed(0)
    loader = sd.train_dataloader()
    assert isinstance(loader, DeviceLoader) and len(loader) == len(SelfDistillData(cifar(), regime).train_dataloader())
    batches = list(loader)
    data = sd.base.data_train
    for x, y, i in batches:
        assert torch.allclose(x, torch.stack([data[int(k)][0] for k in i]), atol=1e-5)
        assert torch.equal(y, torch.as_tensor([data[int(k)][1] for k in i]))
    if regime == "pskd":  # every sample at most once: all but the dropped last partial batch
        seen = torch.cat([i for _, _, i in batches])
        assert len(seen) == len(set(seen.tolist())) == 96
    else:
        torch.manual_seed(0)
        expected = list(sd._batch_sampler())
        assert [i.tolist() for _, _, i in batches] == [list(map(int, e)) for e in expected]


def test_pskd_fit_through_lightning_with_the_device_path(cifar):
    from tgp.data.views import SelfDistillData
    from tgp.lit import SelfDistillModule

    sd = SelfDistillData(cifar(loader="device"), "pskd")
    module = SelfDistillModule(build_model("resnet20", num_classes=10, width=4), regime="pskd", num_train=100, epochs=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=sd)
    assert trainer.global_step == 100 // 16 and int(module.pskd_seen.sum()) == 96
