"""Hydra multirun sweeps end to end: job folders, failing jobs, re-runs, the report on them, DDP traps.

The tests share one stage store per session (``paths.stage_store``): the smoke teacher and KD
student are trained once, later sweeps reuse them (stage keys ignore devices and strategy).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tgp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stage_store(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "tgp_shared_stage_store"


def tgp_run(args, log_dir: Path, store: Path, timeout=600, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tgp.run", *args, f"paths.log_dir={log_dir}", f"paths.stage_store={store}",
           "progress_bar=false"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_MODE": "offline", **(env or {})})


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, stage_store):
    """A 2-job sweep, and a sweep whose second job fails (sparsity 1.5)."""
    log_dir = tmp_path_factory.mktemp("sweeps")
    two = tgp_run(["-m", "experiment=smoke", "name=two", "pruning.sparsity=0.5,0.9"], log_dir, stage_store)
    failing = tgp_run(["-m", "experiment=smoke", "name=failing", "pruning.sparsity=0.5,1.5"], log_dir, stage_store)
    return {"log_dir": log_dir, "two": two, "failing": failing}


def test_two_job_sweep_gives_two_job_folders(sweeps):
    proc = sweeps["two"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = sweeps["log_dir"] / "sweeps" / "two"
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    rows = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert sorted(r["target_sparsity"] for r in rows) == [0.5, 0.9]
    assert all(r["status"] == "ok" and r["measured_sparsity"] == pytest.approx(r["target_sparsity"], abs=1e-3) for r in rows)
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == ["multirun.yaml"]
    assert sorted(p.name for p in sweeps["log_dir"].iterdir()) == ["sweeps"]  # stages live in the shared store


def test_failing_job_is_recorded_and_the_sweep_goes_on(sweeps):
    proc = sweeps["failing"]
    assert proc.returncode == 2, proc.stderr[-4000:]  # after every job ran: the failed job's class (a setting)
    jobs = {("1.5" in j.name): j for j in job_dirs(sweeps["log_dir"] / "sweeps" / "failing")}
    assert len(jobs) == 2
    bad, good = jobs[True], jobs[False]
    assert proc.stderr.rstrip().splitlines()[-1].startswith("  failed [2] #") and str(bad / "error.txt") in proc.stderr
    # in the sweep's own process the failure is a record, not an exception Hydra would print with a hint
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Error executing job" not in proc.stderr
    assert (good / "metrics.json").exists() and not (good / "error.txt").exists()
    assert (bad / "error.txt").exists() and not (bad / "metrics.json").exists()
    assert "pruning.sparsity" in (bad / "error.txt").read_text()


def test_report_on_sweep_folders_matches_metrics(sweeps, tmp_path):
    from tgp.report.cli import run_report

    res = run_report([sweeps["log_dir"] / "sweeps"], tmp_path, references="none")
    with open(tmp_path / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 3 done + 1 failed
    for r in rows:
        if r["status"] == "ok":
            m = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
            for key in ("top1_best_val", "top1_last", "measured_sparsity", "seconds_total"):
                assert float(r[key]) == pytest.approx(m[key]), key
            assert int(r["epochs_total"]) == m["epochs_total"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "1.5" in failed[0]["run_dir"]
    md = (tmp_path / "report.md").read_text()
    assert "## Failed jobs" in md and "pruning.sparsity" in md
    methods = [g for g in res["groups"] if g["kind"] == "method"]
    assert len(methods) == 2  # 0.5 (two jobs) and 0.9
    assert {g["n"] for g in methods} == {2, 1}
    # the teacher and the dense student are rows of their own, each trained once (shared by the jobs)
    assert {g["kind"] for g in res["groups"]} == {"method", "teacher", "dense"}


def test_rerun_skips_finished_jobs(sweeps, stage_store):
    sweep = sweeps["log_dir"] / "sweeps" / "two"
    before = {j.name: (j / "metrics.json").stat().st_mtime_ns for j in job_dirs(sweep)}
    proc = tgp_run(["-m", "experiment=smoke", "name=two", "pruning.sparsity=0.5,0.9"], sweeps["log_dir"], stage_store)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("job done already") == 2
    assert {j.name: (j / "metrics.json").stat().st_mtime_ns for j in job_dirs(sweep)} == before


def test_ddp_strategy_under_multirun_is_a_clear_error(tmp_path, stage_store):
    proc = tgp_run(["-m", "experiment=smoke", "++trainer.strategy=ddp", "trainer.devices=2", "pruning.sparsity=0.5,0.9"],
                   tmp_path, stage_store, timeout=120)
    assert proc.returncode == 2
    assert "trainer.strategy='ddp'" in proc.stderr and "ddp_spawn" in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize("trainer, bad", [
    ({"strategy": "ddp", "devices": 2}, "trainer.strategy"),
    ({"strategy": "ddp_find_unused_parameters_true", "devices": 2}, "trainer.strategy"),
    ({"strategy": "fsdp", "devices": 2}, "trainer.strategy"),
    ({"strategy": "auto", "devices": 2, "accelerator": "cpu"}, "trainer.devices"),  # auto picks `ddp` for 2 devices
    ({"strategy": "auto", "devices": [0, 1], "accelerator": "gpu"}, "trainer.devices"),
    ({"strategy": "ddp_spawn", "devices": 2}, None),
    ({"strategy": "auto", "devices": 1}, None),
    ({"strategy": "ddp_notebook", "devices": 2}, None),
])
def test_check_launch(trainer, bad, monkeypatch):
    from tgp.run import check_launch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    cfg = OmegaConf.create({"trainer": trainer})
    if bad:
        with pytest.raises(ConfigError, match=rf"^{bad}="):
            check_launch(cfg)
    else:
        check_launch(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")  # ranks started by torchrun: each would run the whole job
    with pytest.raises(ConfigError, match="launcher"):
        check_launch(cfg)


def test_sweep_ladders_compose():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tgp.naming import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        a = compose("config", overrides=["sweep=ladder_a"], return_hydra_config=True)
        b = compose("config", overrides=["sweep=ladder_b"], return_hydra_config=True)
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert a.hydra.sweeper.params["pruning.sparsity"] == "0.5,0.75,0.9,0.94,0.98"
    ladder_b = [round(1 - 0.8 ** k, 4) for k in (2, 4, 7, 10, 13)]
    assert [float(x) for x in b.hydra.sweeper.params["pruning.sparsity"].split(",")] == ladder_b
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.tasks_per_node == 1


@pytest.mark.slow
def test_reproduce_table2_cut_down(tmp_path, stage_store):
    """The smoke grid through the real script: 1 sparsity, tgp (KD and CE) + magnitude + an unknown method.
    The report goes under the log folder (never into the source tree); progress lines are runnable commands."""
    out = tmp_path / "logs" / "reproduce_table2_smoke"  # the default --out under --log-dir
    cmd = [sys.executable, "experiments/reproduce_table2.py", "--smoke", "1", "--methods", "tgp,magnitude,notamethod",
           "--limit", "1", "--log-dir", str(tmp_path / "logs"), f"paths.stage_store={stage_store}"]
    source_tree = sorted((ROOT / "experiments").rglob("*"))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "offline"})
    # every sweep ran and the report was written, and the script still fails: one of its jobs did
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "wrote " in proc.stdout and "ended with exit 2" in proc.stdout
    assert "4 jobs in 3 sweeps" in proc.stdout and "CPU-hours" in proc.stdout
    progress = [line[2:] for line in proc.stdout.splitlines() if line.startswith("$ ")]
    assert len(progress) == 3 and all(shlex.split(c)[:4] == [sys.executable, "-m", "tgp.run", "-m"] for c in progress)
    assert sorted((ROOT / "experiments").rglob("*")) == source_tree
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    status = {(r["method"], r["retrain_kd"]): r["status"] for r in rows}
    assert status == {("tgp", "True"): "ok", ("tgp", "False"): "ok", ("magnitude", "False"): "ok",
                      ("notamethod", "False"): "failed"}
    assert "notamethod" in (out / "report.md").read_text()
    # re-running resumes: every job is skipped
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "WANDB_MODE": "offline"})
    assert again.returncode == 2  # the unknown method is refused again; the finished jobs are skipped
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert logs.count("job done already") == 3


@pytest.mark.slow
def test_ddp_sim_multirun_two_jobs_identical_masks(tmp_path, stage_store):
    """trainer=ddp_sim (ddp_spawn, 2 CPU processes) under -m, with W&B: 2 job folders, equal masks on
    both ranks, one W&B run per job, nothing stray."""
    proc = tgp_run(["-m", "experiment=smoke", "trainer=ddp_sim", "logger=wandb", "name=ddp",
                    "pruning.sparsity=0.6,0.8"], tmp_path, stage_store, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == ["ddp"]
    jobs = job_dirs(tmp_path / "sweeps" / "ddp")
    assert len(jobs) == 2
    for j in jobs:
        assert (j / "metrics.json").exists(), list(j.iterdir())
        report = json.loads((j / "prune" / "sparsity_report.json").read_text())
        assert report["world_size"] == 2
        assert len(report["mask_digests"]) == 2 and len(set(report["mask_digests"])) == 1
        runs = list((j / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs  # the spawned workers attached to the job's run
    assert not (ROOT / "multirun").exists()


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path, stage_store):
    proc = tgp_run(["-m", "experiment=smoke", "hydra/launcher=submitit_local", "name=submitit",
                    "hydra.launcher.timeout_min=10", "pruning.sparsity=0.55,0.85"], tmp_path, stage_store, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = job_dirs(tmp_path / "sweeps" / "submitit")
    assert len(jobs) == 2
    assert all((j / "metrics.json").exists() for j in jobs)
    # A job refused in submitit's own process fails the sweep in this one: exit code, last lines, error.txt.
    proc = tgp_run(["-m", "experiment=smoke", "hydra/launcher=submitit_local", "name=submitit_refused",
                    "hydra.launcher.timeout_min=10", "pruning.sparsity=0.55,0.85", "data.num_workers=-1"],
                   tmp_path, stage_store, timeout=900)
    assert proc.returncode == 2, proc.stderr[-4000:]
    last = proc.stderr.strip().splitlines()
    failed = [line for line in last if line.startswith("  failed [2] ")]
    assert any(line.startswith("tgp: 2 jobs of this sweep failed") for line in last) and len(failed) == 2, last[-6:]
    assert all("error.txt" in line and "data.num_workers=-1" in line for line in failed), failed
