"""The decoded Tiny ImageNet cache and the device path, on generated trees of real image files.

Every comparison is against an independent computation: the pixels against PIL decoding the
files, the cached torch path against the JPEG torch path, the device path's random crops against
the PIL transforms' own draws. Processes are really forked, killed and run through the CLI.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, read_json, run_cli
from tgp.data import TinyImageNetDataModule
from tgp.data import image_cache
from tgp.data.fake_trees import write_fake_tiny_imagenet
from tgp.data.image_cache import CachedImages, ensure_cache
from tgp.data.tiny_imagenet import ImageListDataset
from tgp.errors import ConfigError, DataNotFoundError


@pytest.fixture
def tree(tmp_path):
    """A small tree: 3 classes x 6 train images (one grayscale JPEG, one RGBA PNG), 2 val per class."""
    info = write_fake_tiny_imagenet(tmp_path / "data", classes=3, per_class=6, val_per_class=2, seed=1)
    return info


def _dm(info, **kw) -> TinyImageNetDataModule:
    kw = {"batch_size": 4, "val_size": 4, "num_workers": 0, **kw}
    return TinyImageNetDataModule(root=info["folder"], **kw)


def _pil_pixels(path: str) -> torch.Tensor:
    """The JPEG path's decode, done here directly: PIL + convert("RGB")."""
    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB")))


def _npy_files(info, name="train"):
    return sorted(glob.glob(os.path.join(info["folder"], ".tgp_cache", f"{name}-*.npy")))


# ------------------------------------------------------------------ the cache holds the PIL path's pixels
def test_cache_equals_the_jpeg_path_image_for_image(tree):
    cached, jpeg = _dm(tree), _dm(tree, cache=False)
    cached.setup(), jpeg.setup()
    assert set(cached.cache_builds) == {"train", "val"}
    for split, source, files in (("train", cached.data_train.dataset, jpeg.data_train.dataset),
                                 ("val", cached.data_test.dataset, jpeg.data_test.dataset)):
        assert isinstance(source, CachedImages) and isinstance(files, ImageListDataset)
        assert source.samples == files.samples and source.targets == files.targets
        assert source.array.shape == (len(files), 64, 64, 3)
        for i, (path, _) in enumerate(files.samples):
            expected = _pil_pixels(path)
            assert torch.equal(torch.from_numpy(np.array(source.array[i])), expected), (split, path)
            image, _ = source[i]  # what the cached torch path hands to the transforms
            assert image.mode == "RGB" and torch.equal(torch.from_numpy(np.array(image)), expected)
    # The odd files decode as PIL converts them: grayscale repeated over R, G, B; the PNG's alpha dropped.
    rows = {p: i for i, (p, _) in enumerate(cached.data_train.dataset.samples)}
    gray = cached.data_train.dataset.array[rows[tree["gray"][0]]]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert tree["png"] and tree["png"][0] in rows


def test_cached_torch_path_gives_the_same_batches_as_the_jpeg_path(tree):
    """data.cache changes where pixels come from, not what a run computes (why it is an infra key)."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader", "score_dataloader"):
        a = list(getattr(_dm(tree), loader)())
        b = list(getattr(_dm(tree, cache=False), loader)())
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), loader


def test_cached_dataset_pickles_without_its_pixels_and_serves_loader_workers(tree):
    """A spawned DDP rank or loader worker gets the file name, not the array, and reopens it."""
    import pickle

    dm = _dm(tree)
    dm.setup()
    source = dm.data_train.dataset
    _ = source.array  # opened here
    copy = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 10_000 and copy._array is None
    assert np.array_equal(copy.array, source.array)
    a = list(_dm(tree, num_workers=2).train_dataloader())
    b = list(_dm(tree, num_workers=0).train_dataloader())
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b)) and len(a) == len(b)


# ------------------------------------------------------------------ validity: rebuilt exactly when the tree changed
def _state(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_unchanged_tree_is_not_rebuilt(tree):
    _dm(tree).setup()
    (npy,) = _npy_files(tree)
    before = _state(npy)
    again = _dm(tree)
    again.setup()
    assert again.cache_builds == {} and _npy_files(tree) == [npy] and _state(npy) == before


@pytest.mark.parametrize("change", ["add", "remove", "replace", "touch"])
def test_changed_tree_is_rebuilt(tree, change):
    first = _dm(tree)
    first.setup()
    (old,) = _npy_files(tree)
    img_dir = os.path.dirname(tree["gray"][0])
    victim = sorted(glob.glob(os.path.join(img_dir, "*.JPEG")))[-1]
    if change == "add":
        Image.new("RGB", (64, 64), (10, 200, 30)).save(os.path.join(img_dir, "zz_new.JPEG"), "JPEG")
    elif change == "remove":
        os.remove(victim)
    elif change == "replace":  # other content, other size
        Image.new("RGB", (64, 64), (250, 5, 5)).save(victim, "JPEG", quality=20)
    else:  # same bytes, new mtime: the cache cannot tell an edit from a touch, so it rebuilds
        st = os.stat(victim)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dm = _dm(tree)
    dm.setup()
    assert set(dm.cache_builds) == {"train"}  # val untouched, not rebuilt
    (new,) = _npy_files(tree)  # a new key, a new file; the earlier tree's array file is gone
    assert new != old
    files = dm.data_train.dataset
    assert len(files) == {"add": 19, "remove": 17}.get(change, 18)
    for i, (path, _) in enumerate(files.samples):
        assert torch.equal(torch.from_numpy(np.array(files.array[i])), _pil_pixels(path)), path


# ------------------------------------------------------------------ no half cache is ever trusted
def test_exception_mid_build_leaves_nothing_trusted(tree, monkeypatch):
    monkeypatch.setattr(image_cache, "CHUNK", 4)  # several chunks, so the failure comes after some are written
    files = sorted(glob.glob(os.path.join(tree["folder"], "train", "*", "images", "*")))
    broken = files[-1]
    with open(broken, "rb") as f:
        good = f.read()
    with open(broken, "wb") as f:
        f.write(good[: len(good) // 3])  # a truncated image: PIL fails on it
    with pytest.raises(DataNotFoundError) as info:
        _dm(tree).setup()
    assert broken in str(info.value) and "\n" not in str(info.value)
    cache = os.path.join(tree["folder"], ".tgp_cache")
    assert sorted(os.listdir(cache)) == ["train.lock"]  # no array, no temp file, no manifest
    with open(broken, "wb") as f:
        f.write(good)
    dm = _dm(tree)
    dm.setup()
    assert set(dm.cache_builds) == {"train", "val"}


_SLOW_BUILD = """
import json, sys, time
from tgp.data import image_cache
real = image_cache._decode_chunk
def slow(*args):
    time.sleep(0.3)
    return real(*args)
image_cache._decode_chunk, image_cache.CHUNK = slow, 2
job = json.load(open(sys.argv[1]))
image_cache.ensure_cache([tuple(s) for s in job["samples"]], job["base"], "train", [job["folder"]])
"""


def test_killed_build_is_not_trusted_and_the_next_run_rebuilds(tree, tmp_path):
    cache = os.path.join(tree["folder"], ".tgp_cache")
    job = tmp_path / "job.json"  # the DataModule's own list and folder; the child imports only the cache module
    job.write_text(json.dumps({"samples": _dm(tree, cache=False)._load_raw()[0].samples, "base": tree["folder"],
                               "folder": cache}))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(job)], cwd=ROOT)
    deadline = time.time() + 60
    try:
        while not glob.glob(os.path.join(cache, ".train-*.tmp")):  # mid-way through writing the array
            assert proc.poll() is None and time.time() < deadline, "the build ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert glob.glob(os.path.join(cache, ".train-*.tmp")) and not os.path.exists(os.path.join(cache, "train.json"))
    dm = _dm(tree)
    dm.setup()
    assert set(dm.cache_builds) == {"train", "val"}
    assert sorted(os.listdir(cache)) == sorted(["train.json", "train.lock", os.path.basename(_npy_files(tree)[0]),
                                                "val.json", "val.lock", os.path.basename(_npy_files(tree, "val")[0])])


def test_truncated_array_behind_a_manifest_is_rebuilt(tree):
    _dm(tree).setup()
    (npy,) = _npy_files(tree)
    os.truncate(npy, os.path.getsize(npy) - 100)
    dm = _dm(tree)
    dm.setup()
    assert set(dm.cache_builds) == {"train"}
    assert dm.data_train.dataset.array.shape[0] == 18


def _build_in_child(folder, samples, base, barrier, results):
    real = image_cache._decode_chunk

    def slow(*args):  # a build that lasts, so the second process surely finds the first one at work
        time.sleep(0.2)
        return real(*args)

    image_cache._decode_chunk, image_cache.CHUNK = slow, 40  # in this forked child only
    barrier.wait()
    r = ensure_cache(samples, base, "train", [folder], dataset="t")
    results.put((r.built, r.waited, r.path))


def test_two_processes_building_at_once_both_end_with_the_valid_cache(tree, tmp_path):
    samples = _dm(tree, cache=False)._load_raw()[0].samples * 20  # 360 images, 9 chunks: about 2 s
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    folder = str(tmp_path / "shared_cache")
    procs = [ctx.Process(target=_build_in_child, args=(folder, samples, tree["folder"], barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    out = sorted(results.get(timeout=5) for _ in procs)
    assert [(built, waited) for built, waited, _ in out] == [(False, True), (True, False)]  # one built, one waited
    assert out[0][2] == out[1][2]
    array = np.load(out[0][2], mmap_mode="r")
    for i in (0, 17, 359):
        assert torch.equal(torch.from_numpy(np.array(array[i])), _pil_pixels(samples[i][0]))


# ------------------------------------------------------------------ where the cache goes
def test_unwritable_data_folder_falls_back_to_the_user_cache(tree, tmp_path, monkeypatch, caplog):
    # Tests run as root, so permissions would not stop a write: a file where the cache folder
    # should be makes the data folder's cache location unwritable just as surely.
    open(os.path.join(tree["folder"], ".tgp_cache"), "w").close()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with caplog.at_level("WARNING", logger="tgp"):
        dm = _dm(tree)
        dm.setup()
    assert dm.data_train.dataset.path.startswith(str(tmp_path / "xdg" / "tgp" / "tiny_imagenet-"))
    assert "data.cache_dir" in caplog.text and ".tgp_cache" in caplog.text


def test_unwritable_cache_dir_is_a_config_error(tree, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as info:
        _dm(tree, cache_dir=str(blocker / "cache")).setup()
    msg = str(info.value)
    assert msg.startswith("data.cache_dir=") and "data.cache=false" in msg and "\n" not in msg


def test_cache_dir_holds_the_cache_and_the_data_folder_stays_clean(tree, tmp_path):
    dm = _dm(tree, cache_dir=str(tmp_path / "cc"))
    dm.setup()
    assert not os.path.exists(os.path.join(tree["folder"], ".tgp_cache"))
    assert dm.data_train.dataset.path.startswith(str(tmp_path / "cc"))
    manifest = read_json(os.path.join(os.path.dirname(dm.data_train.dataset.path), "train.json"))
    assert manifest["shape"] == [18, 64, 64, 3] and manifest["source"] == tree["folder"]


@pytest.mark.parametrize("kw,setting", [({"loader": "device", "cache": False}, "data.loader"),
                                        ({"cache": "yes"}, "data.cache"), ({"cache_dir": ""}, "data.cache_dir"),
                                        ({"loader": "gpu"}, "data.loader")])
def test_bad_settings_are_config_errors(tree, kw, setting):
    with pytest.raises(ConfigError) as info:
        _dm(tree, **kw)
    assert str(info.value).startswith(f"{setting}=") and "Fix:" in str(info.value)


def test_datasets_without_a_device_path_refuse_it():
    from tgp.data import DigitsDataModule

    with pytest.raises(ConfigError, match="data.loader='device'.*digits"):
        DigitsDataModule(loader="device")


# ------------------------------------------------------------------ the device path against the torch path
def test_device_eval_batches_equal_the_torch_path(tree):
    torch_dm, device_dm = _dm(tree), _dm(tree, loader="device")
    for name in ("val_dataloader", "test_dataloader"):
        a, b = list(getattr(torch_dm, name)()), list(getattr(device_dm, name)())
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5, rtol=0)


def test_device_train_epoch_without_augmentation_is_the_torch_epoch_reordered(tree):
    xa, ya = (torch.cat(t) for t in zip(*_dm(tree, augment=False, batch_size=5).train_dataloader()))
    xb, yb = (torch.cat(t) for t in zip(*_dm(tree, augment=False, batch_size=5, loader="device").train_dataloader()))
    assert xa.shape == xb.shape == (10, 3, 64, 64)  # 14 train images, batches of 5, drop_last
    # Both loaders draw a random 10 of the 14; the images they share must match to float rounding.
    dist = torch.cdist(xb.flatten(1), xa.flatten(1))
    pairs = (dist < 1e-3).nonzero().tolist()
    assert len(pairs) >= 6 and all(torch.allclose(xb[i], xa[j], atol=1e-5) and yb[i] == ya[j] for i, j in pairs)
    full = _dm(tree, augment=False)
    full.setup()
    everything = torch.stack([full.data_train[i][0] for i in range(len(full.data_train))])
    assert (torch.cdist(xb.flatten(1), everything.flatten(1)).min(1).values < 1e-3).all()


def _coded_tree(root, n):
    """One class of ``n`` identical images whose pixels say where they are: R = 4x + 2, G = 4y + 2
    (lossless PNG, so a crop's offset and flip can be read back from any output)."""
    info = write_fake_tiny_imagenet(root, classes=1, per_class=n, val_per_class=1, seed=2)
    y, x = np.mgrid[0:64, 0:64]
    coded = np.stack([4 * x + 2, 4 * y + 2, np.full_like(x, 200)], -1).astype(np.uint8)
    for path in glob.glob(os.path.join(info["folder"], "train", "*", "images", "*")):
        os.remove(path)
        Image.fromarray(coded, "RGB").save(os.path.splitext(path)[0] + ".png", "PNG")
    return info, coded


def _offsets_and_flips(x, dm):
    """Crop offsets (0..8 in the padded image) and flips of normalized outputs of the coded image."""
    mean, std = torch.tensor(dm.mean).view(1, 3, 1, 1), torch.tensor(dm.std).view(1, 3, 1, 1)
    px = torch.round((x * std + mean) * 255).long()
    r_a, r_b, g = px[:, 0, 32, 32], px[:, 0, 32, 33], px[:, 1, 32, 32]
    flip = r_b < r_a
    oy = (g - 2) // 4 - 28
    ox = torch.where(flip, (r_a - 2) // 4 - 27, (r_a - 2) // 4 - 28)
    return oy, ox, flip, px


def test_device_augmentation_has_the_torch_paths_statistics(tmp_path):
    info, coded = _coded_tree(tmp_path, 40)
    torch_dm = TinyImageNetDataModule(root=info["folder"], batch_size=40, val_size=0, num_workers=0)
    device_dm = TinyImageNetDataModule(root=info["folder"], batch_size=40, val_size=0, num_workers=0, loader="device")
    torch_dm.setup()
    draws = 1200
    # The torch path: the real per-sample transform, with the per-sample seeds the EpochSampler hands out.
    xa = torch.stack([torch_dm.data_train[(0, seed)][0] for seed in range(draws)])
    loader = device_dm.train_dataloader()
    xb = torch.cat([x for _ in range(draws // 40) for x, _ in loader])
    assert xb.shape == xa.shape == (draws, 3, 64, 64)
    stats = [_offsets_and_flips(x, torch_dm) for x in (xa, xb)]
    for oy, ox, flip, _ in stats:
        assert oy.min() == ox.min() == 0 and oy.max() == ox.max() == 8
        for offsets in (oy, ox):
            freq = torch.bincount(offsets, minlength=9).float() / draws
            assert (freq - 1 / 9).abs().max() < 0.04  # uniform over 0..8 (std of a bin ~0.009)
        assert abs(flip.float().mean() - 0.5) < 0.05
        joint = torch.bincount(oy * 9 + ox, minlength=81).float() / draws
        assert (joint - 1 / 81).abs().max() < 0.02  # offsets independent
    # Per-position mean and spread of the pixels agree (a z-test per position, 6 sigma).
    pa, pb = stats[0][3].float(), stats[1][3].float()
    se = (pa.var(0) / draws + pb.var(0) / draws).sqrt()
    assert ((pa.mean(0) - pb.mean(0)).abs() <= 6 * se + 1e-6).all()
    # And every output is an exact crop of the zero-padded image, possibly flipped.
    padded = np.pad(coded, ((4, 4), (4, 4), (0, 0)))
    for (oy, ox, flip, px) in stats:
        for k in range(0, draws, 97):
            crop = torch.from_numpy(padded[oy[k]:oy[k] + 64, ox[k]:ox[k] + 64]).permute(2, 0, 1).long()
            assert torch.equal(px[k], crop.flip(-1) if flip[k] else crop)


# ------------------------------------------------------------------ training on it, a whole job, the benchmark
def test_lightning_fit_on_the_tiny_imagenet_device_path(tree):
    import lightning as L

    from tgp.distill import DistillationLoss
    from tgp.lit import ClassifierModule
    from tgp.models import build_model

    dm = _dm(tree, loader="device")
    module = ClassifierModule(build_model("resnet20", num_classes=200, width=4), DistillationLoss(kd_weight=0.0),
                              epochs=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 14 // 4 and "train/val/acc" in trainer.callback_metrics
    result = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert 0.0 <= next(v for k, v in result.items() if k.endswith("acc")) <= 1.0


@pytest.mark.slow
def test_smoke_job_with_the_device_loader(tmp_path):
    info = write_fake_tiny_imagenet(tmp_path / "data", classes=4, per_class=12, val_per_class=4, seed=3)
    run_cli(["experiment=smoke", "data=tiny_imagenet", f"data.root={tmp_path / 'data'}", "data.loader=device",
             "data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false", "data.batch_size=8",
             "data.val_size=8", "data.limit_train=null", "data.limit_test=null"], tmp_path)
    row = read_json(tmp_path / "run" / "metrics.json")
    assert row["dataset"] == "tiny_imagenet" and row["status"] == "ok"
    for key in ("top1_teacher", "top1_dense_student", "top1_pruned", "top1_last", "top1_best_val"):
        assert 0.0 <= row[key] <= 1.0
    assert os.path.isfile(os.path.join(info["folder"], ".tgp_cache", "train.json"))
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "loader: device" in config and "cache: true" in config


def test_bench_reports_the_three_paths(tmp_path):
    from tgp.bench.data import tiny_imagenet_throughput

    info = write_fake_tiny_imagenet(tmp_path, classes=2, per_class=40, val_per_class=2)
    result = tiny_imagenet_throughput(info["folder"], batch=16, workers=0, device="cpu", epochs=1)
    for key in ("jpeg_loader_img_s", "cache_torch_img_s", "cache_device_img_s", "cache_build_s",
                "cache_device_over_jpeg", "cache_torch_over_jpeg"):
        assert result[key] > 0, key
    assert result["images"] == 80 and result["device"] == "cpu"
    assert not os.path.exists(os.path.join(info["folder"], ".tgp_cache"))  # the bench leaves the tree as it was
