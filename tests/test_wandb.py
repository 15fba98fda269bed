"""W&B: offline without a key, one run per job, summary + finish also on failure, the report's run.

Runs are read back with wandb's own reader of ``.wandb`` transaction logs (``wandb leet inspect
--json``, wandb 0.31), no network involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stage_store(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "tgp_shared_stage_store"


def read_wandb_records(run_dir: Path) -> list[dict]:
    files = list(Path(run_dir).glob("run-*.wandb"))
    assert len(files) == 1, files
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]


def history_keys(records) -> set[str]:
    return {k for r in records if r["type"] == "history" for k in r["history"]["item"]}


def summary_of(records) -> dict:
    out = {}
    for r in records:
        if r["type"] == "summary":
            out.update(r["summary"].get("update") or {})
    return out


def clean_env(monkeypatch, home: Path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))


def test_offline_without_credentials(monkeypatch, tmp_path):
    from tgp.logging_wandb import ensure_wandb_mode, has_wandb_credentials

    clean_env(monkeypatch, tmp_path)
    assert not has_wandb_credentials()
    assert ensure_wandb_mode() == "offline" and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's choice wins
    assert ensure_wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert ensure_wandb_mode() == "online" and "WANDB_MODE" not in os.environ


def test_run_id_is_stable_per_run_dir(tmp_path):
    from tgp.logging_wandb import run_id_for

    assert run_id_for(tmp_path / "a") == run_id_for(tmp_path / "a") != run_id_for(tmp_path / "b")


def test_one_offline_run_per_job_with_history_summary_and_finish(tmp_path, stage_store):
    """A 2-job sweep with logger=wandb and no API key: the good job's run holds the metrics of all
    its stages, its metrics.json row and sparsity report as summary; the failing job's run is
    finished too, with exit code 1. The command never asks for a login."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc: no credentials
    cmd = [sys.executable, "-m", "tgp.run", "-m", "experiment=smoke", "logger=wandb", "name=wb",
           "pruning.sparsity=0.7,1.5", f"paths.log_dir={tmp_path}", f"paths.stage_store={stage_store}", "progress_bar=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr[-4000:]  # the failing job's class (a setting), after both jobs ran
    assert "wandb sync" in proc.stdout + proc.stderr
    jobs = {("1.5" in p.name): p for p in (tmp_path / "sweeps" / "wb").iterdir() if p.is_dir()}
    good, bad = jobs[False], jobs[True]

    runs = list((good / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # one run for all stages of the job
    records = read_wandb_records(runs[0])
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "tgp" and run["run_group"] == "wb" and run["job_type"] == "tgp"
    assert run["display_name"] == good.name
    keys = history_keys(records)
    assert {"prune/val/acc", "retrain/val/acc", "retrain/train/loss"} <= keys, keys
    summary = summary_of(records)
    metrics = json.loads((good / "metrics.json").read_text())
    assert summary["top1_best_val"] == pytest.approx(metrics["top1_best_val"])
    assert summary["measured_sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["sparsity_report/prunable/sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["status"] == "ok"
    assert next(r["exit"] for r in records if r["type"] == "exit").get("exit_code", 0) == 0

    bad_runs = list((bad / "wandb").glob("offline-run-*"))
    assert len(bad_runs) == 1
    bad_records = read_wandb_records(bad_runs[0])
    assert summary_of(bad_records)["status"] == "failed"
    assert next(r["exit"] for r in bad_records if r["type"] == "exit")["exit_code"] == 1


def test_report_logs_a_comparison_run(tmp_path, monkeypatch):
    from tgp.report.cli import run_report

    clean_env(monkeypatch, tmp_path / "home")
    sweep = tmp_path / "sweeps" / "cmp"
    for i, (method, s, acc) in enumerate([("tgp", 0.5, 0.9), ("tgp", 0.9, 0.8), ("magnitude", 0.5, 0.7),
                                          ("magnitude", 0.9, 0.5)]):
        d = sweep / f"job{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "method": method, "dataset": "digits", "model": "resnet20", "seed": 0, "retrain_kd": True,
            "target_sparsity": s, "measured_sparsity": s, "top1_best_val": acc, "top1_last": acc,
            "epochs_total": 3, "seconds_total": 1.0, "status": "ok"}))
    res = run_report(sweep, tmp_path / "rep", references="none", wandb=True)
    assert res["wandb_dir"]
    records = read_wandb_records(Path(res["wandb_dir"]))
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["job_type"] == "report" and run["run_group"] == "cmp"
    logged = {k.split(".")[0] for k in history_keys(records)}  # tables are logged as <key>._type, ...
    assert {"comparison", "references", "acc_vs_sparsity/digits/resnet20_table"} <= logged, logged
    assert {"plots/acc_vs_sparsity_digits_resnet20", "plots/cost_digits_resnet20"} <= logged, logged


def test_a_job_whose_stages_were_reused_still_logs_their_curves(tmp_path):
    """In a sweep the teacher and the KD-pretrained student are computed once: the second job reuses
    them, yet its W&B run holds their per-epoch curves (replayed from each stage's metrics.csv, with
    the rows' own epoch and step) and marks them ``<stage>/reused`` 1; the prune stage it computed is
    marked 0. The console stays quiet: no W&B banner, one sync line per job."""
    import csv

    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path / "home")}
    env.pop("WANDB_SILENT", None)
    cmd = [sys.executable, "-m", "tgp.run", "-m", "experiment=smoke", "logger=wandb", "name=wbreuse", "stop_after=prune",
           # A store of its own: which stages the second job reuses must not depend on other tests.
           "pruning.sparsity=0.7,0.8", f"paths.log_dir={tmp_path}", f"paths.stage_store={tmp_path}/stages",
           "progress_bar=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    console = proc.stdout + proc.stderr
    assert console.count("wandb sync") == 2 and "Tracking run with wandb" not in console, console
    job = next(p for p in (tmp_path / "sweeps" / "wbreuse").iterdir() if p.is_dir() and "-s0.8-" in p.name)
    records = read_wandb_records(next((job / "wandb").glob("offline-run-*")))
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    for stage in ("teacher", "kd_pretrain"):
        with open(job / stage / "metrics.csv", newline="") as f:
            expected = [{k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")}
                        for row in csv.DictReader(f)]
        replayed = [{k: v for k, v in item.items() if k.startswith(f"{stage}/") and k != f"{stage}/epoch"}
                    for item in history if f"{stage}/epoch" in item]
        assert len(replayed) == len(expected) > 0, (stage, replayed, expected)
        for got, want in zip(replayed, expected):
            assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k]) for k in want), (got, want)
        assert all("trainer/global_step" in item for item in history if f"{stage}/epoch" in item)
    assert "prune/val/acc" in history_keys(records)  # computed by this job, logged live
    summary = summary_of(records)
    assert summary["teacher/reused"] == 1 and summary["kd_pretrain/reused"] == 1 and summary["prune/reused"] == 0
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"].get("update") or {})
    assert sorted(config.get("reused_stages") or []) == ["kd_pretrain", "teacher"], config.get("reused_stages")
