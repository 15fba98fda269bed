"""The console of a job: one line per stage, libraries' INFO lines only with verbose=true, the summary
also in Hydra's job log (run.log), and a job that waits on another's stage lock says so.

The three jobs share one stage store: the first computes the smoke stages, the others reuse them.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

STAGES = ("teacher", "kd_pretrain", "prune", "retrain")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console_store")


@pytest.fixture(scope="module")
def first(tmp_path_factory, store):
    tmp = tmp_path_factory.mktemp("console_first")
    return tmp, run_cli(["experiment=smoke", f"paths.stage_store={store}"], tmp)


def _lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_default_console_is_one_line_per_stage_and_the_summary(first):
    tmp, proc = first
    lines = _lines(proc)
    text = "\n".join(lines)
    assert len(lines) <= 15, text
    for stage in STAGES:
        assert sum(f"stage {stage}: done in " in line for line in lines) == 1, text
    assert "GPU available" not in text and "train_dataloader" not in text and "running in" not in text, text
    assert text.count("retrained (KD), best val epoch") == 1, text  # the summary, printed once
    log = (tmp / "run" / "run.log").read_text()
    assert "summary" in log and "retrained (KD), best val epoch" in log and "dense teacher" in log
    assert "GPU available" in log and "stage teacher: running in" in log  # the job log keeps the details


def test_verbose_brings_lightnings_lines_back(first, store, tmp_path):
    proc = run_cli(["experiment=smoke", f"paths.stage_store={store}", "verbose=true", "pruning.sparsity=0.5",
                    "stop_after=prune"], tmp_path)
    text = proc.stdout + proc.stderr
    assert "GPU available" in text, text
    assert "stage teacher: reused (computed earlier in " in text and "stage kd_pretrain: reused" in text, text
    assert "stage prune: running in" in text and "stage prune: done in " in text, text


def test_a_job_waiting_on_a_stage_lock_says_so(first, store, tmp_path):
    teacher = next(store.glob("teacher-*"))
    out = tmp_path / "console.txt"
    cmd = [sys.executable, "-m", "tgp.run", "experiment=smoke", f"paths.stage_store={store}", "stop_after=teacher",
           f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", "progress_bar=false"]
    with open(store / f".{teacher.name}.lock", "a") as lock, open(out, "w") as f:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another job" computing the teacher
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "WANDB_MODE": "offline"})
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and "waiting for" not in out.read_text():
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        rc = proc.wait(timeout=120)
    text = out.read_text()
    assert rc == 0, text
    assert f"stage teacher: waiting for another job that is computing it (lock {store / ('.' + teacher.name + '.lock')})" \
        in text, text
    assert "stage teacher: reused after waiting " in text, text
