"""A text job through the real CLI: one offline W&B run with every stage's curves, Hugging Face's load
report in run.log and not on the console (unless verbose=true); and (slow) exact resume of a text stage
preempted with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, read_json, run_cli
from test_resume import max_abs_diff, metric_rows, run_interrupted
from test_text_pipeline import text_smoke
from test_wandb import history_keys, read_wandb_records, summary_of


def test_text_job_logs_to_wandb_offline_and_keeps_hugging_face_off_the_console(roleswap, tmp_path):
    from tgp.models import build_model

    # A local "pretrained" checkpoint whose head has 3 outputs: loading it for the 2-class task re-initializes
    # the head, and transformers writes its load report about it.
    checkpoint = build_model("bert_tiny", 3, tokenizer=roleswap["tokenizer"]).save_pretrained(str(tmp_path / "ckpt"))
    args = [*text_smoke(roleswap), "method=sdp", "model=bert_base", "~model.config", f"model.pretrained={checkpoint}",
            f"model.tokenizer={roleswap['tokenizer']}", "logger=wandb", "name=textwb"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env["HOME"] = str(tmp_path / "home")  # no credentials: offline
    cmd = [sys.executable, "-m", "tgp.run", *args, f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run",
           "progress_bar=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    console = proc.stdout + proc.stderr
    assert "LOAD REPORT" not in console and "Loading weights" not in console and "sdp on roleswap" in console
    assert "LOAD REPORT" in (tmp_path / "run" / "run.log").read_text()  # kept, in the job's log

    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    records = read_wandb_records(runs[0])
    assert {"dense/val/score", "dense/val/accuracy", "retrain/val/score", "retrain/train/cc", "retrain/sparsity"} <= \
        history_keys(records)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    summary = summary_of(records)
    assert summary["score_best_val"] == pytest.approx(metrics["score_best_val"]) and summary["score_name"] == "acc"

    again = run_cli([*args[:-2], "logger=none", "verbose=true"], tmp_path, env={"HOME": str(tmp_path / "home")})
    assert "LOAD REPORT" in again.stdout + again.stderr  # verbose=true: on the console


# -- exact resume --------------------------------------------------------------------------------------
def resume_args(roleswap) -> list[str]:
    """SDP on the tiny BERT, 4 epochs of gradual pruning (the mask changes at every epoch start)."""
    return [*(a for a in text_smoke(roleswap) if a != "logger=none"), "logger=csv", "method=sdp", "retrain.epochs=4",
            "trainer.limit_train_batches=3", "trainer.deterministic=true"]


@pytest.mark.slow
def test_text_stage_preempted_with_sigterm_then_rerun_equals_uninterrupted(roleswap, tmp_path):
    args = resume_args(roleswap)
    straight = tmp_path / "straight"
    straight.mkdir()
    run_cli(args, straight)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    rc, out = run_interrupted(args, resumed, "retrain", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, out[-3000:]
    assert read_json(resumed / "run" / "retrain" / "attempts.json")[-1]["status"] == "preempted"
    rerun = run_cli(args, resumed)
    assert "stage retrain: resuming from last.ckpt" in rerun.stdout + rerun.stderr

    a = torch.load(straight / "run" / "student_sparse.pt", weights_only=True)
    b = torch.load(resumed / "run" / "student_sparse.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), max_abs_diff(a, b)
    ma, mb = torch.load(straight / "run" / "mask.pt"), torch.load(resumed / "run" / "mask.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    ra, rb = (read_json(d / "run" / "retrain" / "result.json") for d in (straight, resumed))
    for key in ("score_last", "score_best_val", "metrics_best_val", "val_acc_best", "best_epoch", "train_flops"):
        assert ra[key] == rb[key], key
    assert json.dumps(read_json(straight / "run" / "metrics.json")["metrics_last"]) == \
        json.dumps(read_json(resumed / "run" / "metrics.json")["metrics_last"])

    def rows(d):  # every epoch once, as uninterrupted (the dense copy's score is logged once per fit)
        return [{k: v for k, v in r.items() if not k.endswith("/teacher_score")}
                for r in metric_rows(d / "run" / "retrain" / "metrics.csv")]

    assert rows(resumed) == rows(straight)
    assert sorted(int(r["epoch"]) for r in rows(resumed) if r.get("retrain/val/score")) == [0, 1, 2, 3]
