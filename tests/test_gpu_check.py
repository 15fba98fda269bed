"""python -m tgp.gpu_check: the dry mode runs every part on the CPU and records each with a status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tgp.gpu_check import Check, Part, plan, run_part
from tgp.gpu_check.wheelhouse import DISTRIBUTIONS, pins

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"deps", "env", "gpu_tests", "bench_cifar10_resnet18_eager", "bench_cifar10_resnet18_compiled",
         "bench_tiny_imagenet_resnet18_eager", "bench_tiny_imagenet_resnet18_compiled", "fake_cifar", "job", "table2"}


@pytest.mark.slow  # 2-5 min on 2 shared cores: every part starts its own Python with torch and Lightning
def test_cpu_dry_runs_every_part_and_records_its_status(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tgp.gpu_check", "--cpu-dry", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "cpu_dry.json").read_text())
    assert doc["mode"] == "cpu-dry" and doc["device"] == "cpu"
    assert set(doc["parts"]) == PARTS == {"deps", *(p.name for p in plan(dry=True))}
    status = {name: e["status"] for name, e in doc["parts"].items()}
    assert status == {**{n: "ok" for n in PARTS}, "gpu_tests": "skipped"}, status
    tests = doc["parts"]["gpu_tests"]
    assert tests["reason"] == "skipped: no CUDA" and tests["result"]["tests"] >= 2
    for name in PARTS - {"deps"}:
        assert doc["parts"][name]["seconds"] <= doc["parts"][name]["timeout_s"] + 1
    bench = doc["parts"]["bench_tiny_imagenet_resnet18_compiled"]["result"]
    assert (bench["recipe"], bench["mode"], bench["batch"]) == ("tiny_imagenet_resnet18", "compiled", 4)
    job = doc["parts"]["job"]["result"]
    assert 0 <= job["top1_last"] <= 1 and job["measured_sparsity"] > 0.5 and job["seconds_total"] > 0
    assert doc["parts"]["fake_cifar"]["result"]["n_train"] == 256
    assert "Estimate:" in doc["parts"]["table2"]["result"]["output"]
    merged = json.loads((out / "cpu_dry" / "bench.json").read_text())
    assert set(merged["recipes"]["cifar10_resnet18"]["modes"]) == {"eager", "compiled"}
    md = (out / "cpu_dry.md").read_text()
    assert "| job | ok |" in md and "## Table 2 estimate" in md and "| cifar10_resnet18 | compiled | 4 |" in md


def test_a_part_past_its_budget_is_stopped_and_recorded(tmp_path):
    c = Check(out=tmp_path, work=tmp_path, dry=True, python=sys.executable, record={"pythonpath": []})
    start = time.monotonic()
    entry = run_part(Part("env", 0.5, 0.5), c, timeout=0.5)  # importing torch alone takes longer
    assert entry["status"] == "timeout" and entry["exit_code"] is None and "0.5 s budget" in entry["reason"]
    assert time.monotonic() - start < 5 and Path(entry["log"]).is_file()


def test_the_wheelhouse_is_pinned_by_the_constraints():
    versions = pins(ROOT / "constraints.txt")
    assert set(versions) == set(DISTRIBUTIONS) and all(versions.values())


@pytest.mark.parametrize("args,expected", [(["CPU_DRY=1"], " -m tgp.gpu_check --cpu-dry"),
                                           (["ARGS=--cpu-dry"], " -m tgp.gpu_check  --cpu-dry"),
                                           ([], " -m tgp.gpu_check  \n")])
def test_make_gpu_check_passes_the_dry_flag(args, expected):
    dry = subprocess.run(["make", "-n", "gpu-check", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and expected in dry.stdout + "\n", dry.stdout


def test_a_python_without_pip_installs_the_wheelhouse_by_unpacking_it(tmp_path):
    """A pure wheel written in the wheel format (package, .dist-info, a .data/purelib module, a script)
    unpacks into the target folder as pip --target would lay it out, and imports from there."""
    import subprocess
    import sys
    import zipfile

    from tgp.gpu_check.deps import unpack_wheels

    house = tmp_path / "wheelhouse"
    house.mkdir()
    with zipfile.ZipFile(house / "tiny_pkg-1.2.0-py3-none-any.whl", "w") as whl:
        whl.writestr("tiny_pkg/__init__.py", "VALUE = 42\n")
        whl.writestr("tiny_pkg-1.2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 1.2.0\n")
        whl.writestr("tiny_pkg-1.2.0.data/purelib/tiny_extra.py", "NAME = 'extra'\n")
        whl.writestr("tiny_pkg-1.2.0.data/scripts/tiny", "#!/bin/sh\n")
    (house / "requirements.txt").write_text("tiny-pkg==1.2.0\n")
    target = tmp_path / "deps"
    assert unpack_wheels(house, house / "requirements.txt", target) == (0, "")
    assert sorted(p.name for p in target.iterdir()) == ["tiny_extra.py", "tiny_pkg", "tiny_pkg-1.2.0.dist-info"]
    out = subprocess.run([sys.executable, "-c", "import tiny_pkg, tiny_extra; print(tiny_pkg.VALUE, tiny_extra.NAME)"],
                         env={"PYTHONPATH": str(target)}, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["42", "extra"]
    (house / "requirements.txt").write_text("tiny-pkg==9.9\n")  # a pin the wheelhouse does not hold
    code, why = unpack_wheels(house, house / "requirements.txt", target)
    assert code == 1 and "no wheel for tiny-pkg==9.9" in why
