"""The token cache (built once, rebuilt exactly when an input changed, never trusted half-written,
safe with concurrent builders) and the token device loader (the torch path's batches, sharded
like DistributedSampler)."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from tgp.data import TextClassificationDataModule
from tgp.data.text import token_cache
from tgp.data.text.fake_files import write_fake_task
from tgp.data.text.generated import train_wordpiece
from tgp.data.text.token_loader import TokenDeviceLoader


@pytest.fixture
def task(tmp_path, roleswap):
    """A small MNLI copy (train + two dev files) and the generated tokenizer."""
    info = write_fake_task(tmp_path, "mnli", n_train=16, n_dev=5)
    return {**info, "root": str(tmp_path), "tokenizer": roleswap["tokenizer"],
            "cache": os.path.join(info["folder"], ".tgp_cache")}


def _dm(task, **kw):
    kw = {"batch_size": 4, "eval_batch_size": 3, "val_size": 4, "tokenizer": task["tokenizer"], **kw}
    return TextClassificationDataModule("mnli", root=task["root"], **kw)


def _payloads(task, pattern="train.tsv-*.npz"):
    return sorted(glob.glob(os.path.join(task["cache"], pattern)))


def _state(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _batches(loader):
    return [tuple(t.clone() for t in b) for b in loader]


def _same(a, b):
    return len(a) == len(b) > 0 and all(len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y))
                                        for x, y in zip(a, b))


# ------------------------------------------------------------------ built once, rebuilt on change
def test_built_once_and_read_back_unchanged(task):
    first = _dm(task)
    first.setup()
    assert set(first.cache_builds) == {"train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"}
    (npz,) = _payloads(task)
    before = _state(npz)
    again = _dm(task)
    again.setup()
    assert again.cache_builds == {} and _payloads(task) == [npz] and _state(npz) == before
    uncached = _dm(task, cache=False)
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert _same(_batches(getattr(again, name)()), _batches(getattr(uncached, name)())), name


@pytest.mark.parametrize("change", ["touch", "edit"])
def test_changed_file_is_rebuilt(task, change):
    _dm(task).setup()
    (old,) = _payloads(task)
    path = os.path.join(task["folder"], "train.tsv")
    if change == "touch":  # same bytes, new mtime: the key cannot tell an edit from a touch
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:
        with open(path, "a", encoding="utf-8") as f:
            f.write("16\t0\t0n\tslate\t\t\t\t\tthe cat sees\tthe dog\tneutral\tneutral\n")
    dm = _dm(task)
    dm.setup()
    assert set(dm.cache_builds) == {"train.tsv"}  # the dev files untouched, not rebuilt
    (new,) = _payloads(task)
    assert new != old and len(dm.data_train) + len(dm.data_val) == (17 if change == "edit" else 16)


def test_tokenizer_content_and_max_length_are_in_the_key(task, tmp_path):
    _dm(task).setup()
    copy = str(tmp_path / "same_tokenizer_elsewhere")
    shutil.copytree(task["tokenizer"], copy)
    moved = _dm(task, tokenizer=copy)
    moved.setup()
    assert moved.cache_builds == {}  # keyed by content, not by folder
    texts = [e.text_a for e in task["train"]] + ["zebra crossing quickly"] * 3
    other = train_wordpiece(texts, str(tmp_path / "other_tokenizer"), vocab_size=120)
    retok = _dm(task, tokenizer=other)
    retok.setup()
    assert set(retok.cache_builds) == {"train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"}
    shorter = _dm(task, max_length=8)
    shorter.setup()
    assert set(shorter.cache_builds) == {"train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"}
    assert shorter.data_train.source.lengths.max() == 8
    # Each variant keeps its own cache: going back to the first builds nothing.
    back = _dm(task)
    back.setup()
    assert back.cache_builds == {}


# ------------------------------------------------------------------ never trusted half-written
def test_truncated_payload_or_bad_manifest_is_rebuilt(task):
    _dm(task).setup()
    (npz,) = _payloads(task)
    os.truncate(npz, os.path.getsize(npz) // 2)
    dm = _dm(task)
    dm.setup()
    assert set(dm.cache_builds) == {"train.tsv"}
    (manifest,) = glob.glob(os.path.join(task["cache"], "train.tsv-*.json"))
    with open(manifest, "w") as f:
        f.write('{"format": 1, "key": ')  # half a manifest
    dm = _dm(task)
    dm.setup()
    assert set(dm.cache_builds) == {"train.tsv"}
    assert json.load(open(manifest))["rows"] == 16


def test_exception_mid_write_leaves_nothing_trusted(task, monkeypatch):
    real = np.savez

    def failing(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(token_cache.np, "savez", failing)
    from tgp.errors import ConfigError

    with pytest.raises(ConfigError) as info:  # the only folder cannot be written: named, with the way out
        _dm(task, cache_dir=str(os.path.join(task["root"], "cc"))).setup()
    assert "data.cache_dir" in str(info.value) and "\n" not in str(info.value)
    left = sorted(os.listdir(glob.glob(os.path.join(task["root"], "cc", "*"))[0]))
    assert all(name.endswith(".lock") for name in left)  # no payload, no temp file, no manifest
    monkeypatch.setattr(token_cache.np, "savez", real)
    dm = _dm(task, cache_dir=str(os.path.join(task["root"], "cc")))
    dm.setup()
    assert len(dm.cache_builds) == 3


_SLOW_WRITE = """
import os, sys, time
from tgp.data.text import formats, token_cache
from tgp.data.text.tasks import TASKS
from tgp.data.text.tokenizer import load_tokenizer, tokenizer_fingerprint
def slow(f, **arrays):
    f.write(b"PK partial payload")
    f.flush()
    time.sleep(60)
token_cache.np.savez = slow
folder, tok_dir, cache = sys.argv[1:4]
task, tok = TASKS["mnli"], load_tokenizer(tok_dir)
fp, path = tokenizer_fingerprint(tok), os.path.join(folder, "train.tsv")
token_cache.cached_tokenized_file(path, folder, lambda: formats.read_examples(path, task.train_layout, "mnli"), task,
                                  tok, fp, 128, [cache], name=f"train.tsv-{fp[:10]}-L128", dataset="mnli")
"""


def test_killed_build_is_not_trusted_and_the_next_run_rebuilds(task):
    # The child runs the DataModule's cache call (same name and folder) without importing Lightning.
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, task["folder"], task["tokenizer"], task["cache"]],
                            cwd=ROOT)
    deadline = time.time() + 90
    try:
        while not glob.glob(os.path.join(task["cache"], ".train.tsv-*.tmp")):
            assert proc.poll() is None and time.time() < deadline, "the build ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert glob.glob(os.path.join(task["cache"], ".train.tsv-*.tmp")) and not _payloads(task)
    dm = _dm(task)
    dm.setup()
    assert set(dm.cache_builds) == {"train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"}
    assert not glob.glob(os.path.join(task["cache"], "*.tmp"))  # the dead build's temp file removed


def _build_in_child(task, barrier, results):
    real = token_cache.tokenize_examples

    def slow(*args, **kw):  # a build that lasts, so the second process surely finds the first at work
        time.sleep(1.0)
        return real(*args, **kw)

    token_cache.tokenize_examples = slow  # in this forked child only
    barrier.wait()
    dm = _dm(task)
    dm.setup()
    results.put((tuple(sorted(dm.cache_builds)), _payloads(task)))


def test_two_processes_building_at_once_both_end_with_the_valid_cache(task, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(task, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    out = [results.get(timeout=5) for _ in procs]
    built = [b for b, _ in out]
    # Each file built exactly once between the two processes; both read the same payloads.
    assert sorted(name for b in built for name in b) == ["dev_matched.tsv", "dev_mismatched.tsv", "train.tsv"]
    assert out[0][1] == out[1][1] == _payloads(task)
    dm = _dm(task)
    dm.setup()
    assert dm.cache_builds == {}


# ------------------------------------------------------------------ the device path
def test_device_loader_serves_the_torch_path_batches(task):
    torch_dm, device_dm = _dm(task, batch_size=3), _dm(task, batch_size=3, loader="device")
    for epoch in range(2):  # the shuffled training order of two successive epochs
        a, b = _batches(torch_dm.train_dataloader()), _batches(device_dm.train_dataloader())
        assert _same(a, b), epoch
        assert all(len(x) == 3 for x, _ in a)  # drop_last: the split has more than one batch
    for name in ("val_dataloader", "test_dataloader"):
        loader = getattr(device_dm, name)()
        assert isinstance(loader, TokenDeviceLoader)
        assert _same(_batches(getattr(torch_dm, name)()), _batches(loader)), name


def test_device_loader_shards_like_distributed_sampler(task, monkeypatch):
    dm = _dm(task, val_size=0)
    dm.setup()
    split = dm.data_train.compact()
    seen = []
    for rank in range(3):
        monkeypatch.setattr(TokenDeviceLoader, "_rank_world", staticmethod(lambda r=rank: (r, 3)))
        loader = TokenDeviceLoader(split, batch_size=2, pad_id=dm.pad_id, shuffle=True, seed=5, with_index=True)
        batches = list(loader)
        assert len(batches) == len(loader) == 3  # ceil(16 / 3) = 6 rows per rank, 3 batches of 2
        seen += [int(i) for _, _, idx in batches for i in idx]
        for x, y, idx in batches:  # every row as stored, padded to the batch's longest
            for r, i in enumerate(idx.tolist()):
                n = int(split.lengths[i])
                assert x[r, :n].tolist() == split.ids[split.offsets[i]:split.offsets[i + 1]].tolist()
                assert (x[r, n:] == dm.pad_id).all() and int(y[r]) == int(split.labels[i])
    assert sorted(set(seen)) == list(range(16)) and len(seen) == 18  # two rows repeated to even the ranks out
