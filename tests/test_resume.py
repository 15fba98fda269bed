"""Exact resume: a stage killed (kill -9) or preempted (SIGTERM) mid-training and re-run with the
same command ends with the same weights as a run that was never interrupted, and its metrics.csv,
seconds and attempts account for every epoch and attempt exactly once. Real CLI runs, CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, read_json, run_cli

# Smoke run with enough epochs in every stage to interrupt one in the middle; deterministic
# algorithms pinned (CPU kernels are deterministic already, this makes any that is not raise).
BASE = ["experiment=smoke", "trainer.limit_train_batches=3", "trainer.deterministic=true",
        "teacher.epochs=4", "retrain.epochs=4"]


def _cmd(args: list[str], tmp: Path) -> list[str]:
    return [sys.executable, "-m", "tgp.run", *args, f"paths.log_dir={tmp}", f"hydra.run.dir={tmp}/run",
            "progress_bar=false"]


def run_interrupted(args: list[str], tmp: Path, stage: str, sig: int, min_epoch: int = 1,
                    timeout: float = 240) -> tuple[int, str]:
    """Start the CLI, send ``sig`` once ``stage`` has finished ``min_epoch`` epochs (its attempts.json,
    ticked after last.ckpt is written, says so); return the exit code and the output."""
    out = tmp / "interrupted.log"
    attempts = tmp / "run" / stage / "attempts.json"
    with open(out, "w") as f:
        proc = subprocess.Popen(_cmd(args, tmp), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "WANDB_MODE": "offline"})
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    entry = json.loads(attempts.read_text())[-1]
                except (OSError, ValueError, IndexError):
                    entry = {}
                if entry.get("status") == "running" and entry.get("epoch", 0) >= min_epoch:
                    proc.send_signal(sig)
                    break
                time.sleep(0.005)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = out.read_text()
    assert not (tmp / "run" / stage / "result.json").exists(), f"{stage} finished before the signal:\n{text[-3000:]}"
    return rc, text


def metric_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def max_abs_diff(a: dict, b: dict) -> float:
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def assert_resumed(uninterrupted: Path, resumed: Path, stage: str, epochs: int, weights: str) -> dict:
    """``weights`` (a state_dict file in the run dir) bit-identical; the stage's accuracies, metrics.csv,
    seconds and attempts as an uninterrupted run's."""
    a = torch.load(uninterrupted / "run" / weights, map_location="cpu", weights_only=True)
    b = torch.load(resumed / "run" / weights, map_location="cpu", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed weights differ (max abs diff {max_abs_diff(a, b)})"
    ra, rb = read_json(uninterrupted / "run" / stage / "result.json"), read_json(resumed / "run" / stage / "result.json")
    for k in ("top1_last", "top1_best_val", "val_acc_best"):
        assert ra[k] == rb[k], k

    assert len(rb["attempts"]) >= 2
    assert rb["attempts"][0]["status"] in ("killed", "preempted")
    assert rb["attempts"][-1]["status"] == "done"
    assert rb["seconds"] == pytest.approx(sum(e["seconds"] for e in rb["attempts"]))
    assert rb["attempts"][0]["seconds"] > 0  # ticked at each epoch end before the kill

    # Every epoch exactly once: one validation row and one training row per epoch, the same numbers
    # as uninterrupted. (The teacher's accuracy is logged once per fit, so once more after a resume.)
    def rows(run: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.endswith("/teacher_acc")}
                for r in metric_rows(run / "run" / stage / "metrics.csv")]

    got = rows(resumed)
    val = sorted(int(r["epoch"]) for r in got if r.get(f"{stage}/val/acc"))
    train = sorted(int(r["epoch"]) for r in got if r.get(f"{stage}/train/loss"))
    assert val == list(range(epochs)) and train == list(range(epochs)), (val, train)
    assert got == rows(uninterrupted)
    return {"max_abs_diff": max_abs_diff(a, b), "top1": (ra["top1_last"], rb["top1_last"])}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run_cli(BASE, tmp)
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("stage, weights, extra", [
    ("retrain", "student_sparse.pt", []),
    ("teacher", "teacher/net.pt", ["stop_after=teacher"]),  # the later stages add nothing here
])
def test_kill_9_then_rerun_equals_uninterrupted(stage, weights, extra, uninterrupted, tmp_path):
    rc, out = run_interrupted([*BASE, *extra], tmp_path, stage, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    ckpt = torch.load(tmp_path / "run" / stage / "last.ckpt", map_location="cpu", weights_only=False)
    assert 1 <= ckpt["epoch"] + 1 < 4  # killed with a mid-stage last.ckpt ("epoch": the last one finished)
    rerun = run_cli([*BASE, *extra], tmp_path)
    assert f"stage {stage}: resuming from last.ckpt at epoch {ckpt['epoch'] + 1}" in rerun.stdout + rerun.stderr
    print(stage, assert_resumed(uninterrupted, tmp_path, stage, 4, weights))


@pytest.mark.slow
def test_sigterm_preempts_then_rerun_equals_uninterrupted(uninterrupted, tmp_path):
    rc, out = run_interrupted(BASE, tmp_path, "retrain", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, out[-3000:]
    assert "stage retrain preempted at epoch" in out and "re-run the same command to resume" in out
    assert read_json(tmp_path / "run" / "retrain" / "attempts.json")[-1]["status"] == "preempted"
    run_cli(BASE, tmp_path)
    print("sigterm", assert_resumed(uninterrupted, tmp_path, "retrain", 4, "student_sparse.pt"))
