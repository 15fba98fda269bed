"""``hydra/launcher=node``: a multirun's jobs side by side, one per slot, each seeing only its own
device assignment (GPUs through CUDA_VISIBLE_DEVICES, or CPU cores).

* the slot plan (pure): GPU groups, K jobs per GPU, the launcher's own CUDA_VISIBLE_DEVICES, core
  shares, and the settings it refuses;
* the real launcher on a tiny Hydra app (no tgp pipeline, seconds): at most K jobs at once, distinct
  assignments for jobs that overlap, failures reported without stopping the others, SIGTERM and a
  killed launcher leaving no job behind;
* ``tgp-run`` refusing launcher settings that cannot work (exit 2, one paragraph);
* (slow) a 4-job tgp smoke sweep two at a time on the CPU: every job finished, at most two ran at
  once, overlapping jobs saw different cores, the shared teacher was computed once while the other
  job waited (visible in its run.log and in the launcher's output), and a re-run skips every job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from hydra_plugins.tgp_launcher.slots import SlotError, plan_slots, ranges

ROOT = Path(__file__).resolve().parents[1]
CORES = sorted(os.sched_getaffinity(0))


# -- the slot plan ---------------------------------------------------------------------------------
def test_one_job_per_gpu_by_default():
    slots = plan_slots("auto", gpus=["0", "1", "2", "3"], cores=list(range(16)))
    assert [s.gpus for s in slots] == [("0",), ("1",), ("2",), ("3",)]
    assert [s.cpus for s in slots] == [tuple(range(4 * k, 4 * k + 4)) for k in range(4)]  # disjoint core shares
    assert slots[2].env() == {"TGP_LAUNCHER_SLOT": "2", "CUDA_VISIBLE_DEVICES": "2", "OMP_NUM_THREADS": "4",
                              "MKL_NUM_THREADS": "4"}


def test_gpu_groups_and_jobs_per_gpu():
    slots = plan_slots("auto", gpus_per_job=2, jobs_per_gpu=2, gpus=["0", "1", "2", "3", "4"], cores=[0, 1, 2, 3])
    # GPU 4 is left over (no pair); the first two slots spread over both pairs before any pair gets a second job
    assert [s.gpus for s in slots] == [("0", "1"), ("2", "3"), ("0", "1"), ("2", "3")]
    assert [s.cpus for s in slots] == [(0,), (1,), (2,), (3,)]
    assert slots[0].env()["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_gpu_numbers_are_the_launchers_own():
    # the launcher runs under CUDA_VISIBLE_DEVICES=4,5,6,7: its GPU 1 is physical GPU 5
    slots = plan_slots([1, 3], gpus=["4", "5", "6", "7"], cores=[0], pin_cpus=False)
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["5", "7"]
    assert all(s.cpus == () and "OMP_NUM_THREADS" not in s.env() for s in slots)


def test_cpu_slots():
    slots = plan_slots("auto", gpus=[], cores=[0, 1, 2, 3, 4])  # no GPU: one job per core
    assert [s.cpus for s in slots] == [(0,), (1,), (2,), (3,), (4,)] and all(s.gpus is None for s in slots)
    assert slots[0].env()["CUDA_VISIBLE_DEVICES"] == ""  # CUDA hidden from CPU jobs
    two = plan_slots("cpu", cpu_jobs=2, gpus=["0"], cores=[0, 1, 2, 3, 4])
    assert [s.cpus for s in two] == [(0, 1, 2), (3, 4)]
    assert [s.cpus for s in plan_slots("cpu", cpu_jobs=3, gpus=[], cores=[0, 1])] == [(0,), (1,), (0,)]
    assert two[1].describe() == "slot 1: no GPU, cores 3-4" and ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


@pytest.mark.parametrize("settings, gpus, setting", [
    (dict(devices="auto", gpus_per_job=3), ["0", "1"], "hydra.launcher.gpus_per_job"),
    (dict(devices=[0, 2]), ["0", "1"], "hydra.launcher.devices"),
    (dict(devices=[0, 1]), [], "hydra.launcher.devices"),
    (dict(devices=[0, 0]), ["0", "1"], "hydra.launcher.devices"),
    (dict(devices="gpu"), ["0"], "hydra.launcher.devices"),
    (dict(devices="auto", jobs_per_gpu=0), ["0"], "hydra.launcher.jobs_per_gpu"),
    (dict(devices="cpu", cpu_jobs=0), [], "hydra.launcher.cpu_jobs"),
    (dict(devices="auto", gpus_per_job=2), [], "hydra.launcher.gpus_per_job"),  # no GPU here to give out
])
def test_impossible_slot_settings_are_refused(settings, gpus, setting):
    with pytest.raises(SlotError) as e:
        plan_slots(**settings, gpus=gpus, cores=[0, 1])
    assert e.value.setting == setting and "Fix:" in str(e.value)


# -- the real launcher on a tiny Hydra app -------------------------------------------------------------
APP = '''
import json, os, sys, time
from pathlib import Path
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    started = time.time()
    out = Path(cfg.out)
    (out / f"{cfg.job}.pid").write_text(str(os.getpid()))
    print(f"job {cfg.job} starts", flush=True)
    time.sleep(cfg.sleep)
    if cfg.job == cfg.raise_job:
        raise ValueError(f"job {cfg.job} raised on purpose")
    if cfg.job == cfg.exit_job:
        os._exit(3)
    (out / f"{cfg.job}.json").write_text(json.dumps({
        "job": cfg.job, "slot": os.environ.get("TGP_LAUNCHER_SLOT"),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpus": sorted(os.sched_getaffinity(0)),
        "threads": os.environ.get("OMP_NUM_THREADS"), "start": started, "end": time.time()}))
    return cfg.job

if __name__ == "__main__":
    main()
'''


@pytest.fixture
def app(tmp_path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(
        "defaults:\n  - _self_\n  - override hydra/launcher: node\n"
        f"hydra:\n  searchpath: ['file://{ROOT / 'conf'}']\n  sweep:\n    dir: {tmp_path / 'sweep'}\n"
        f"job: 0\nsleep: 1.0\nraise_job: -1\nexit_job: -1\nout: {tmp_path / 'out'}\n")
    return tmp_path


def start_app(app: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    # Ctrl-C reaches the launcher as it would from a terminal, even when these tests run in a shell's
    # background job (which starts its children with SIGINT ignored, and Python keeps an ignored SIGINT).
    return subprocess.Popen([sys.executable, str(app / "app.py"), "-m", *args], cwd=app, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_app(app: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = start_app(app, *args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def records(app: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (app / "out").glob("*.json")), key=lambda r: r["job"])


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def overlapping_pairs(rows: list[dict], start="start", end="end") -> list[tuple[dict, dict]]:
    return [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:] if a[start] < b[end] and b[start] < a[end]]


@pytest.mark.skipif(len(CORES) < 2, reason="needs 2 cores to give 2 jobs distinct ones")
def test_launcher_runs_k_jobs_at_a_time_each_in_its_own_slot(app):
    proc = run_app(app, "hydra.launcher.devices=cpu", "hydra.launcher.cpu_jobs=2", "job=0,1,2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = records(app)
    assert [r["job"] for r in rows] == [0, 1, 2, 3]
    assert most_at_once([(r["start"], r["end"]) for r in rows]) == 2
    pairs = overlapping_pairs(rows)
    assert pairs, "no two jobs ran at the same time"
    for a, b in pairs:  # jobs running together had distinct device assignments
        assert a["slot"] != b["slot"] and not set(a["cpus"]) & set(b["cpus"])
    shares = {s.cpus for s in plan_slots("cpu", cpu_jobs=2, cores=CORES)}  # the cores split in two
    assert {tuple(r["cpus"]) for r in rows} == shares
    assert all(r["cuda"] == "" and r["threads"] == str(len(r["cpus"])) for r in rows)  # CPU jobs: CUDA hidden
    log = proc.stderr + proc.stdout
    for job in range(4):  # one line per job start and end, and the job's own output relayed with its slot
        assert f"#{job} started in slot" in log and f"#{job} finished in" in log
        assert f"[#{job} slot " in proc.stdout and f"job {job} starts" in proc.stdout
    assert "Job completed successfully" not in proc.stdout + proc.stderr  # submitit's chatter is not relayed
    assert "at most 2 at a time" in log


def test_failed_jobs_are_reported_and_the_others_run(app):
    proc = run_app(app, "hydra.launcher.devices=cpu", "hydra.launcher.cpu_jobs=2", "job=0,1,2,3", "sleep=0.2",
                   "raise_job=1", "exit_job=2")
    assert proc.returncode == 1  # Hydra reports the first failed job once every job has ended
    assert [r["job"] for r in records(app)] == [0, 3]
    log = proc.stderr + proc.stdout
    assert "#1 failed after" in log and "ValueError('job 1 raised on purpose')" in log
    assert "#2 failed after" in log and "ended without a result (killed, or it exited)" in log
    assert "#0 finished in" in log and "#3 finished in" in log
    assert "Error executing job with overrides: ['job=1'" in proc.stderr


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped (its parent reaps it)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_the_launcher_stops_its_jobs(app, how):
    proc = start_app(app, "hydra.launcher.devices=cpu", "hydra.launcher.cpu_jobs=2", "job=0,1,2", "sleep=120")
    try:
        assert wait_for(lambda: len(list((app / "out").glob("*.pid"))) == 2, 60), proc.stderr
        pids = [int(p.read_text()) for p in (app / "out").glob("*.pid")]
        assert all(alive(p) for p in pids)
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_for(lambda: not any(alive(p) for p in pids), 15), [p for p in pids if alive(p)]
    assert not (app / "out" / "2.pid").exists()  # the third job never started
    if how != "SIGKILL":  # the launcher said what it did and exited as the signal asks
        log = out + err
        assert "stopping 2 running jobs (#0, #1)" in log and "Re-run the same command" in log
        assert proc.returncode == (128 + signal.SIGTERM if how == "SIGTERM" else -signal.SIGINT)


# -- tgp-run refuses launcher settings that cannot work ----------------------------------------------------
def test_a_gpu_that_does_not_exist_is_one_paragraph_and_exit_2(tmp_path):
    import torch

    n = torch.cuda.device_count()
    cmd = [sys.executable, "-m", "tgp.run", "-m", "experiment=smoke", "hydra/launcher=node", "pruning.sparsity=0.5,0.9",
           f"hydra.launcher.devices=[{n}]", f"paths.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"tgp: error: hydra.launcher.devices=[{n}]: GPU {n} does not exist")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Fix: " in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "logs").exists()  # refused before Hydra created anything


def node_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tgp.naming import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["experiment=smoke", "hydra/launcher=node", *overrides],
                       return_hydra_config=True)


@pytest.mark.parametrize("overrides, setting", [
    (["trainer=gpu"], None),                                                    # one GPU a job
    (["trainer=ddp", "hydra.launcher.gpus_per_job=2"], None),                   # DDP over each job's 2 GPUs
    (["trainer=gpu", "hydra.launcher.jobs_per_gpu=3"], None),
    (["trainer=cpu"], "trainer.accelerator"),                                   # the GPUs would idle
    (["trainer=ddp"], "trainer"),                                               # DDP over a single GPU
    (["trainer=gpu", "hydra.launcher.gpus_per_job=2"], "trainer.devices"),      # one of the job's 2 GPUs idle
    (["trainer=gpu", "trainer.devices=2"], "trainer.devices"),                  # the job sees 1
    (["trainer=gpu", "hydra.launcher.gpus_per_job=8"], "hydra.launcher.gpus_per_job"),
    (["trainer=gpu", "hydra.launcher.devices=[1,4]"], "hydra.launcher.devices"),
    (["trainer=gpu", "hydra.launcher.devices=cpu"], "trainer.accelerator"),
    (["trainer=cpu", "hydra.launcher.devices=cpu", "hydra.launcher.cpu_jobs=0"], "hydra.launcher.cpu_jobs"),
    (["trainer=ddp_sim", "hydra.launcher.devices=cpu"], None),                  # 2 gloo processes in each CPU job
])
def test_launcher_and_trainer_settings_on_a_4_gpu_machine(overrides, setting):
    from tgp.errors import ConfigError
    from tgp.checks.hardware import check_node_launcher

    cfg = node_cfg(*overrides)
    if setting is None:
        check_node_launcher(cfg, gpus=["0", "1", "2", "3"])
        return
    with pytest.raises(ConfigError) as e:
        check_node_launcher(cfg, gpus=["0", "1", "2", "3"])
    assert e.value.setting == setting and "Fix:" in str(e.value)


# -- (slow) a tgp sweep two at a time on the CPU --------------------------------------------------------------
SWEEP = ["-m", "experiment=smoke", "name=node", "hydra/launcher=node", "hydra.launcher.devices=cpu",
         "hydra.launcher.cpu_jobs=2",
         "teacher.epochs=20",  # a teacher that takes a few seconds: the second job arrives while it is computed
         "pruning.sparsity=0.5,0.6,0.7,0.8", "progress_bar=false"]


def tgp_sweep(tmp: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tgp.run", *SWEEP, f"paths.log_dir={tmp}", f"paths.stage_store={tmp / 'stages'}"]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**env, "WANDB_MODE": "offline"})


@pytest.fixture(scope="module")
def node_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_sweep")
    proc = tgp_sweep(tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = sorted(p for p in (tmp / "sweeps" / "node").iterdir() if p.is_dir() and not p.name.startswith("."))
    return tmp, proc, jobs


@pytest.mark.slow  # 4 smoke jobs, 2 at a time on 2 cores (~45 s), and the re-run (~30 s)
@pytest.mark.skipif(len(CORES) < 2, reason="needs 2 cores to give 2 jobs distinct ones")
def test_tgp_sweep_two_at_a_time_each_job_on_its_own_core(node_sweep):
    tmp, proc, jobs = node_sweep
    rows = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert sorted(r["target_sparsity"] for r in rows) == [0.5, 0.6, 0.7, 0.8]
    for r in rows:  # each job recorded when it ran and what it saw
        r["start"], r["end"] = (datetime.fromisoformat(r[k]).timestamp() for k in ("job_started", "job_finished"))
        assert r["visible_devices"] == "" and r["torch_threads"] == len(r["cpu_affinity"]) >= len(CORES) // 2
    assert most_at_once([(r["start"], r["end"]) for r in rows]) == 2
    pairs = overlapping_pairs(rows)
    assert len(pairs) >= 2  # the first two and the last two at least
    for a, b in pairs:
        assert a["launcher_slot"] != b["launcher_slot"] and a["cpu_affinity"] != b["cpu_affinity"]
    # the shared teacher and KD student were computed once: by one job, the other three reused them
    assert sum("teacher" not in r["stages_skipped"] for r in rows) == 1
    assert sum("kd_pretrain" not in r["stages_skipped"] for r in rows) == 1
    # the job that arrived while the teacher was being computed waited on its lock, and said so in its own
    # run.log and in the launcher's output (relayed with its job number and slot)
    waited = [j for j in jobs if "stage teacher: waiting for another job" in (j / "run.log").read_text()]
    assert len(waited) == 1
    lines = [line for line in proc.stdout.splitlines() if "stage teacher: waiting for another job" in line]
    assert len(lines) == 1 and lines[0].startswith("[#") and " slot " in lines[0].split("]")[0]
    assert (waited[0] / "run.log").read_text().count("stage teacher: reused after waiting") == 1
    # ... naming the job it waited for: the one that computed the teacher
    computed = next(j for j, r in zip(jobs, rows) if "teacher" not in r["stages_skipped"])
    assert f"; held by job {computed.name} (pid " in lines[0]
    assert proc.stdout.count("finished in") + proc.stderr.count("finished in") == 4


@pytest.mark.slow
def test_rerunning_the_sweep_skips_its_finished_jobs(node_sweep):
    tmp, _, jobs = node_sweep
    before = {j.name: (j / "metrics.json").stat().st_mtime_ns for j in jobs}
    proc = tgp_sweep(tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("job done already") == 4
    assert {j.name: (j / "metrics.json").stat().st_mtime_ns for j in jobs} == before
