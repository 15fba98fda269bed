"""Exit codes scripts can rely on (tgp.exits): a sweep runs every job and exits with the worst of their
codes, listing the failed ones last; a full disk is one paragraph, exit 1, with error.txt written and
the attempt marked failed — checked on a real small tmpfs and under a real file-size limit."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, read_json, run_cli
from tgp.exits import worst


def test_a_sweep_exits_with_the_worst_class_of_its_jobs():
    assert worst([]) == worst([0, 0]) == 0
    assert worst([0, 2]) == 2 and worst([2, 1, 2]) == 1  # a crash outranks a setting
    assert worst([1, 143, 2]) == 143  # a signal outranks both: the sweep was stopped, re-run to resume


def _last_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()][-2:]


# The basic launcher's sweep with a failing job: tests/test_sweeps.py (exit code 2, the failed job listed last).


@pytest.mark.slow  # two tgp jobs side by side through submitit (~40 s on 2 cores)
def test_the_node_launcher_reports_a_failed_job_as_failed_and_the_sweep_exits_non_zero(tmp_path):
    proc = run_cli(["-m", "experiment=smoke", "stop_after=teacher", "hydra/launcher=node", "hydra.launcher.devices=cpu",
                    "hydra.launcher.cpu_jobs=2", "pruning.sparsity=1.5,0.5"], tmp_path, check=False,
                   env={"CUDA_VISIBLE_DEVICES": ""})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert "#0 failed after" in log and "#0 finished in" not in log and "#1 finished in" in log
    head, job = _last_lines(proc)
    assert head.startswith("tgp: 1 job of this sweep failed") and job.startswith("  failed [2] #0 ")
    assert "error.txt)" in job


# -- no room to write ------------------------------------------------------------------------------------
def _smoke(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "tgp.run", "experiment=smoke", f"hydra.run.dir={tmp}/run", f"paths.log_dir={tmp}",
            f"paths.stage_store={tmp}/stages", "progress_bar=false"]


def _one_paragraph_and_recorded(proc, run: Path, stages: Path, start: str) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    tgp_lines = [line for line in proc.stderr.splitlines() if line.startswith("tgp: ")]
    assert len(tgp_lines) == 1 and tgp_lines[0].startswith(start), proc.stderr[-3000:]
    assert "Fix: " in tgp_lines[0] and "Traceback" not in proc.stdout + proc.stderr
    assert (run / "error.txt").read_text().strip() == tgp_lines[0]
    attempts = [read_json(p) for p in stages.glob("*/attempts.json")]
    assert attempts and all(a[-1]["status"] in ("failed", "done") for a in attempts)
    assert sum(a[-1]["status"] == "failed" for a in attempts) == 1
    assert not list(stages.glob("*/*.pending")) and not list(stages.glob("*/.*.tmp"))  # half-written files removed


def _private_tmpfs() -> list[str] | None:
    """The ``unshare`` prefix that mounts a tmpfs in a private mount namespace here, or None."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def test_a_full_disk_is_one_paragraph_with_error_txt_and_the_attempt_marked_failed(tmp_path):
    prefix = _private_tmpfs()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -m / -rm)")
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    # 400 kB: room for the config and the logs, not for the teacher's first checkpoint (~600 kB).
    script = (f"mount -t tmpfs -o size=400k tmpfs {disk} && "
              f"{' '.join(_smoke(disk))}; code=$?; cp -a {disk} {copy}; exit $code")
    proc = subprocess.run([*prefix, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "offline"})
    _one_paragraph_and_recorded(proc, copy / "run", copy / "stages", "tgp: error: no space left on the device holding ")
    assert " bytes are free there." in proc.stderr


def test_a_file_size_limit_is_one_paragraph_too(tmp_path):
    """RLIMIT_FSIZE: Python ignores SIGXFSZ, so a write past the limit fails with EFBIG."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run(_smoke(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit,
                          env={**os.environ, "WANDB_MODE": "offline"})
    _one_paragraph_and_recorded(proc, tmp_path / "run", tmp_path / "stages",
                                "tgp: error: a file is larger than this process may write (ulimit -f: 300,000 bytes)")
