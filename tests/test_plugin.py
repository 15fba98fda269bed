"""Adding a dataset or a model family touches only its own files: a new modality (tabular vectors scored
by balanced accuracy) and an MLP family, defined in tests/helpers/plugin.py and nowhere in tgp, run the
pipeline's methods with exact masks; and what a datamodule must provide is exactly the base class's
abstract hooks."""

from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import compose_cfg
from tgp.data.base import ClassificationDataModule
from tgp.pipeline import run_pipeline

PLUGIN_DATA = {"_target_": "helpers.plugin.TabularBlobs", "features": 8, "n": 256, "seed": "${seed}",
               "batch_size": 32, "val_size": 48, "split_seed": "${seed}"}
PLUGIN_MODEL = {"_target_": "helpers.plugin.tiny_mlp", "name": "tiny_mlp", "width": 32}


def plugin_cfg(method: str, tmp_path, *extra: str):
    cfg = compose_cfg(["experiment=smoke", f"method={method}", "pruning.sparsity=0.8", "logger=none", *extra], tmp_path)
    with open_dict(cfg):  # the config files a new dataset and model family would bring, written inline
        cfg.data = OmegaConf.create(PLUGIN_DATA)
        cfg.model = OmegaConf.create(PLUGIN_MODEL)
        cfg.teacher.net = OmegaConf.create({**PLUGIN_MODEL, "width": 64})
    return cfg


@pytest.mark.parametrize("method, extra", [("tgp", ()), ("sdp", ()), ("imp", ("method.rate=0.6",)),
                                           ("colt", ("method.rate=0.6",)), ("dense", ())])
def test_a_dataset_and_a_model_family_defined_outside_tgp_run_every_stage(method, extra, tmp_path):
    row = run_pipeline(plugin_cfg(method, tmp_path, *extra), tmp_path / "run")
    assert row["dataset"] == "blobs" and row["score_name"] == "bal_acc" and row["top1_last"] is None
    assert row["metrics_last"].keys() == {"bal_acc"} and row["score_last"] == row["metrics_last"]["bal_acc"]
    assert row["val_acc_best"] is not None  # model selection read the plug-in's own score (val/score)
    mask, state = torch.load(tmp_path / "run" / "mask.pt"), torch.load(tmp_path / "run" / "student_sparse.pt")
    total = sum(m.numel() for m in mask.values())
    pruned = sum(int((~m).sum()) for m in mask.values())
    assert pruned == (round(0.8 * total) if method != "dense" else 0) and row["target_sparsity"] == (
        0.8 if method != "dense" else 0.0)
    assert all(bool((state[n][~m] == 0).all()) for n, m in mask.items())


def test_refusals_follow_what_the_plugin_says_of_itself(tmp_path):
    from tgp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^method='epsd': EPSD.*tabular data.*Fix: use a method that runs on blobs: "
                                          r"ce_grad, colt, dense, imp, magnitude, random, sdp, snip, tgp\.$"):
        run_pipeline(plugin_cfg("epsd", tmp_path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _abstract_hooks(cls) -> set[str]:
    """The hooks of ``cls`` whose base implementation only raises NotImplementedError."""
    out = set()
    for name, member in inspect.getmembers(cls):
        fn = getattr(member, "__func__", member)
        if callable(fn) and getattr(fn, "__qualname__", "").startswith(cls.__name__ + "."):
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):
                continue
            body = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith(("\"", "'", "def", "@"))]
            if body and body[-1] == "raise NotImplementedError" and not any("return" in ln for ln in body):
                out.add(name)
    return out


def test_a_datamodule_must_provide_exactly_the_base_classs_abstract_hooks():
    from helpers.plugin import TabularBlobs

    required = _abstract_hooks(ClassificationDataModule) - {"_device_loader"}  # the device path is optional
    assert required == {"_load_raw", "_subset", "example_input", "model_kwargs"}
    own = {n for n in vars(TabularBlobs) if callable(vars(TabularBlobs)[n]) or isinstance(vars(TabularBlobs)[n], property)}
    assert required <= own  # ... and what it adds beyond them is optional: its scoring
    assert own - required - {"__init__"} == {"scoring"}
