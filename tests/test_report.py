"""tgp-report on hand-made job folders (no training): aggregation, failed/missing jobs, references, plots."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tgp.report.aggregate import aggregate, find_jobs, load_references
from tgp.report.cli import main as report_main
from tgp.report.cli import run_report

ROOT = Path(__file__).resolve().parents[1]


def _job(root: Path, name: str, **row) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    base = {"method": "tgp", "dataset": "digits", "model": "resnet20", "seed": 0, "retrain_kd": True,
            "target_sparsity": 0.5, "measured_sparsity": 0.5, "top1_best_val": 0.9, "top1_last": 0.88,
            "epochs_total": 3, "seconds_total": 10.0, "status": "ok"}
    base.update(row)
    (folder / "metrics.json").write_text(json.dumps(base))
    return folder


def _failed(root: Path, name: str, text: str, **settings) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    cfg = {"method": {"name": settings.get("method", "snip")}, "model": {"name": "resnet20"},
           "data": {"_target_": "tgp.data.DigitsDataModule"}, "seed": settings.get("seed", 0),
           "retrain": {"kd": settings.get("kd", False)}, "pruning": {"sparsity": settings.get("sparsity", 0.5)}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "error.txt").write_text(text)
    return folder


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweeps" / "demo"
    for seed, (best, last) in enumerate([(0.90, 0.88), (0.80, 0.86), (0.70, 0.84)]):
        _job(root, f"tgp-s0.5-seed{seed}", seed=seed, top1_best_val=best, top1_last=last)
        _job(root, f"tgp-s0.9-seed{seed}", seed=seed, target_sparsity=0.9, measured_sparsity=0.9,
             top1_best_val=best - 0.1, top1_last=last - 0.1)
        _job(root, f"tgp-s0.75-seed{seed}", seed=seed, target_sparsity=0.75, measured_sparsity=0.75,
             top1_best_val=best - 0.05, top1_last=last - 0.05)
        _job(root, f"mag-s0.5-seed{seed}", method="magnitude", retrain_kd=False, seed=seed, top1_best_val=0.5,
             seconds_total=4.0)
    _job(root, "mag-s0.9-seed0", method="magnitude", retrain_kd=False, target_sparsity=0.9, top1_best_val=0.4)
    _failed(root, "snip-s0.5-seed0", "tgp: error: method.name='snip': this method is not implemented yet.\nmore\n")
    _failed(root, "tgp-s1.5-seed0", "Traceback (most recent call last):\n  File x\nValueError: sparsity 1.5 > 1\n",
            method="tgp", kd=True, sparsity=1.5)
    (root / "incomplete-job" / ".hydra").mkdir(parents=True)
    # a stage folder linked into a job (like the stage store): never walked into
    (root / "tgp-s0.5-seed0" / "prune").symlink_to(root / "mag-s0.5-seed0", target_is_directory=True)
    (root / ".submitit" / "123").mkdir(parents=True)
    return root


def test_find_jobs_sorts_ok_failed_incomplete_missing(sweep):
    jobs = find_jobs(sweep)
    assert len(jobs.ok) == 13
    assert {r["error"] for r in jobs.failed} == {
        "tgp: error: method.name='snip': this method is not implemented yet.", "ValueError: sparsity 1.5 > 1"}
    assert [Path(r["run_dir"]).name for r in jobs.incomplete] == ["incomplete-job"]
    missing = {(r["method"], r["target_sparsity"], r["seed"]) for r in jobs.missing}
    assert ("magnitude", 0.9, 1) in missing and ("magnitude", 0.75, 2) in missing
    assert not any(m == "tgp" and s in (0.5, 0.75, 0.9) for m, s, _ in missing)


def test_aggregate_mean_std_over_seeds(sweep):
    groups = {(g["method"], g["target_sparsity"], g["retrain_kd"]): g for g in aggregate(find_jobs(sweep).ok)}
    g = groups[("tgp", 0.5, True)]
    assert g["n"] == 3
    assert g["top1_best_val_mean"] == pytest.approx(0.8)
    assert g["top1_best_val_std"] == pytest.approx(statistics.stdev([0.9, 0.8, 0.7]))
    assert g["top1_last_mean"] == pytest.approx(0.86)
    assert groups[("magnitude", 0.9, False)]["top1_best_val_std"] is None  # one seed: no std, shown as the mean alone


def test_report_files_table_plots_and_stdout(sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_main([str(sweep), "--out", str(out), "--references", "none"]) == 0
    stdout = capsys.readouterr().out
    assert "| tgp | digits | resnet20 | 50.00 | yes | 80.00 ± 10.00 | 86.00 ± 2.00 |" in stdout
    assert "13 done, 2 failed, 1 incomplete" in stdout
    md = (out / "report.md").read_text()
    assert "## Failed jobs" in md and "this method is not implemented yet" in md and "ValueError: sparsity 1.5" in md
    assert "## Missing jobs" in md
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    by_dir = {Path(r["run_dir"]).name: r for r in rows}
    assert float(by_dir["tgp-s0.9-seed1"]["top1_best_val"]) == pytest.approx(0.7)
    assert by_dir["snip-s0.5-seed0"]["status"] == "failed"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["acc_vs_sparsity_digits_resnet20.png", "cost_digits_resnet20.png", "radar_digits_resnet20.png"]
    assert all((out / p).stat().st_size > 5000 for p in pngs)


def test_report_tolerates_an_empty_folder(tmp_path, capsys):
    assert report_main([str(tmp_path), "--references", "none"]) == 0
    assert "(no finished job)" in capsys.readouterr().out
    assert report_main([str(tmp_path / "nope")]) == 2


def test_references_need_a_number_and_a_citation(sweep, tmp_path, caplog):
    refs = tmp_path / "refs"
    refs.mkdir()
    entry = {"method": "tgp", "dataset": "digits", "model": "resnet20", "citation": {"arxiv": "0000.00000", "table": "T9"}}
    (refs / "made_up_for_the_test.yaml").write_text(yaml.safe_dump({"source": "testsrc", "entries": [
        {**entry, "sparsity": 0.5, "top1": 95.0},
        {**entry, "sparsity": 0.75, "top1": 0.9},
        {**entry, "sparsity": 0.9, "top1": None},
        {**entry, "sparsity": 0.9, "top1": 80.0, "citation": {"arxiv": "0000.00000", "table": None}},
    ]}))
    loaded = load_references(refs)
    assert [(r["sparsity"], r["top1"]) for r in loaded] == [(0.5, 0.95), (0.75, 0.9)]
    assert "no citation" in caplog.text
    res = run_report(sweep, tmp_path / "rep", refs)
    assert "testsrc" in (tmp_path / "rep" / "report.md").read_text()
    assert len(res["plots"]) == 3


def test_shipped_reference_files_hold_no_uncited_number():
    files = sorted((ROOT / "experiments" / "reference").glob("*.yaml"))
    assert {f.stem for f in files} >= {"alim2025_tgp", "chen2024_epsd", "hossain2022_colt", "epg"}
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert doc["entries"], f
        for e in doc["entries"]:
            assert {"method", "dataset", "model", "sparsity", "top1", "citation"} <= set(e), (f, e)
            assert {"arxiv", "table"} <= set(e["citation"]), (f, e)
            if e["top1"] is not None:  # a number only with its source
                assert e["citation"]["arxiv"] and e["citation"]["table"], (f, e)
    assert (ROOT / "experiments" / "reference" / "README.md").exists()


def test_python_m_tgp_report(sweep, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tgp.report", str(sweep), "--out", str(tmp_path / "r"), "--no-plots"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| magnitude | digits | resnet20 | 50.00 | no | 50.00 ± 0.00 |" in proc.stdout


def test_reproduce_table2_dry_run_grid():
    proc = subprocess.run([sys.executable, "experiments/reproduce_table2.py", "--smoke", "0", "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "630 jobs" in proc.stdout  # 3 datasets x 10 sparsities x 3 seeds x (tgp KD/CE + 5 baselines)
    assert "GPU-hours" in proc.stdout and "ASSUMPTIONS" in proc.stdout
    for ds in ("cifar10", "cifar100", "tiny_imagenet"):
        assert ds in proc.stdout
