"""lightning-hydra-template conventions: the callbacks, debug and hparams_search groups, extras,
tags, the sweeper's objective and the SLURM launcher without SLURM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF, ROOT, read_json, run_cli
from tgp.errors import ConfigError


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str], tmp_path: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, f"paths.log_dir={tmp_path}"],
                       return_hydra_config=True)


# -- every option of the new groups composes -----------------------------------------------------
def test_every_new_group_option_composes(tmp_path):
    assert _options("callbacks") == ["default", "early_stopping", "lr_monitor", "model_checkpoint", "rich_progress_bar"]
    assert _options("debug") == ["default", "fdr", "limit", "overfit", "profiler"]
    for option in _options("callbacks"):
        cfg = _compose(["experiment=smoke", f"callbacks={option}"], tmp_path)
        assert "callbacks" in cfg
    cfg = _compose(["experiment=smoke"], tmp_path)  # the default: all four, early stopping off
    assert cfg.callbacks.model_checkpoint == {"monitor": "val/acc", "mode": "max"}
    assert cfg.callbacks.early_stopping.enabled is False and cfg.callbacks.lr_monitor.enabled is True
    assert cfg.tags == [] and cfg.extras == {"print_config": False, "ignore_warnings": True}
    expect = {"fdr": ("trainer.fast_dev_run", True), "limit": ("trainer.limit_train_batches", 3),
              "overfit": ("trainer.overfit_batches", 3), "profiler": ("trainer.profiler.filename", "profile"),
              "default": ("name", "debug")}
    from omegaconf import OmegaConf

    for option in _options("debug"):
        cfg = _compose(["experiment=smoke", f"debug={option}"], tmp_path)
        key, value = expect[option]
        assert OmegaConf.select(cfg, key) == value, option
        assert cfg.paths.stage_store is None and cfg.extras.ignore_warnings is False
    cfg = _compose(["experiment=smoke", "hparams_search=tgp_optuna"], tmp_path)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode).endswith("MULTIRUN")
    assert set(cfg.hydra.sweeper.params) == {"distill.kd_weight", "distill.temperature", "retrain.lr"}
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.method.name == "tgp"


def test_config_callbacks_follow_the_group(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, RichProgressBar

    from tgp.training import StageLearningRateMonitor, config_callbacks

    cfg = _compose(["experiment=smoke", "progress_bar=true"], tmp_path)
    kinds = [type(c) for c in config_callbacks(cfg, "retrain", early_stopping=True)]
    assert kinds == [StageLearningRateMonitor, RichProgressBar]  # early stopping off by default
    cfg = _compose(["experiment=smoke", "callbacks.early_stopping.enabled=true", "callbacks.early_stopping.patience=1",
                    "callbacks.lr_monitor.enabled=false", "progress_bar=false"], tmp_path)
    (stop,) = config_callbacks(cfg, "retrain", early_stopping=True)
    assert isinstance(stop, EarlyStopping) and stop.monitor == "retrain/val/acc" and stop.patience == 1
    assert config_callbacks(cfg, "warmup", early_stopping=False) == []  # only fitted stages stop early


def test_objective_is_validation_accuracy():
    from tgp.run import objective

    assert objective({"val_acc_best": 0.75, "top1_best_val": 0.5, "top1_last": 0.4}) == 0.75
    assert objective({"top1_best_val": 0.5}) is None  # no validation: a failed trial, never a test number


# -- debug=limit end to end, with extras.print_config, tags and the checkpoint settings ---------------
def test_debug_limit_end_to_end(tmp_path):
    proc = run_cli(["experiment=smoke", "debug=limit", "extras.print_config=true", "tags=[ablation,v2]",
                    "callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min"], tmp_path)
    out = proc.stdout
    assert "CONFIG" in out and "callbacks" in out and "model_checkpoint" in out  # the rich tree
    run = tmp_path / "run"
    row = read_json(run / "metrics.json")
    assert row["tags"] == ["ablation", "v2"]
    assert row["epochs_teacher"] == row["epochs_kd_pretrain"] == row["epochs_retrain"] == 1
    assert row["stages_skipped"] == [] and (run / "teacher" / "best.ckpt").exists()  # debug: stages in the run folder
    state = torch.load(run / "retrain" / "best.ckpt", map_location="cpu", weights_only=False)
    (key,) = [k for k in state["callbacks"] if k.startswith("ModelCheckpoint")]
    assert "'monitor': 'retrain/val/loss'" in key and "'mode': 'min'" in key
    header = (run / "retrain" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert any(c.startswith("retrain/train/lr-") for c in header)


# -- Optuna: 2 trials on the validation accuracy, sharing the teacher -------------------------------
@pytest.mark.slow
def test_optuna_two_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    run_cli(["-m", "hparams_search=tgp_optuna", "experiment=smoke", "hydra.sweeper.n_trials=2"], tmp_path)
    sweep = tmp_path / "sweeps" / "optuna_tgp"
    rows = sorted((read_json(p) for p in sweep.glob("*/metrics.json")), key=lambda r: r["seconds_total"], reverse=True)
    assert len(rows) == 2
    assert "teacher" in rows[1]["stages_skipped"] or "teacher" in rows[0]["stages_skipped"]
    assert sum("teacher" in r["stages_skipped"] for r in rows) == 1  # trained once, reused once
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"distill.kd_weight", "distill.temperature", "retrain.lr"}
    assert result["best_value"] == pytest.approx(max(r["val_acc_best"] for r in rows))


# -- a SLURM launcher where SLURM is absent ------------------------------------------------------------
def test_slurm_launcher_without_slurm(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    empty = tmp_path / "bin"
    empty.mkdir()
    import subprocess

    cmd = [sys.executable, "-m", "tgp.run", "-m", "hydra/launcher=slurm", "experiment=smoke", "seed=0,1",
           f"paths.log_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": str(empty), "WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tgp: error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "hydra/launcher='slurm'" in lines[0] and "sbatch and srun" in lines[0]
    assert "hydra/launcher=submitit_local" in lines[0] and " Fix: " in lines[0]
    assert not (tmp_path / "sweeps").exists()
    # With SLURM's commands on the PATH the same command line passes.
    from tgp.run import precheck

    for name in ("sbatch", "srun"):
        (empty / name).write_text("#!/bin/sh\n")
        (empty / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.chdir(tmp_path)
    precheck(["-m", "hydra/launcher=slurm", "experiment=smoke", "seed=0,1"], cluster=True)
    (empty / "srun").unlink()
    with pytest.raises(ConfigError, match="SLURM's srun is not on the PATH"):
        precheck(["-m", "hydra/launcher=slurm", "experiment=smoke", "seed=0,1"], cluster=True)
