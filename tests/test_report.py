"""tgp-report on hand-made job folders (no training): aggregation, failed/missing jobs, references, plots."""

from __future__ import annotations

import csv
import math
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tgp.report.aggregate import aggregate
from tgp.report.jobs import find_jobs
from tgp.report.references import load_references
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
    assert "| tgp | yes | digits | resnet20 | 50.00 | 50.00 | — | 80.00 ± 10.00 | [55.16, 104.84] | reference | 86.00 ± 2.00 |" \
        in stdout
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


def test_report_with_nothing_to_report_exits_2_and_writes_nothing(tmp_path, capsys):
    assert report_main([str(tmp_path), "--references", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tgp-report: error: nothing to report in ") and "no job folder at all" in err, err
    assert not list(tmp_path.iterdir())  # no empty report.md / report.csv
    _failed(tmp_path, "snip-s0.5-seed0", "tgp: error: method.name='snip': this method is not implemented yet.\n")
    assert report_main([str(tmp_path), "--references", "none"]) == 2
    out, err = capsys.readouterr()
    assert "no finished job (0 done, 1 failed" in err and "failed: snip" in out, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snip-s0.5-seed0"]
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
    assert "| magnitude | no | digits | resnet20 | 50.00 | 50.00 | — | 50.00 ± 0.00 | [50.00, 50.00] | " in proc.stdout


def test_reproduce_table2_dry_run_grid():
    proc = subprocess.run([sys.executable, "experiments/reproduce_table2.py", "--smoke", "0", "--dry-run",
                           "--bench", "/nonexistent/bench.json"],  # the stated assumptions, whatever this machine measured
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "630 jobs" in proc.stdout  # 3 datasets x 10 sparsities x 3 seeds x (tgp KD/CE + 5 baselines)
    assert "GPU-hours" in proc.stdout and "ASSUMPTIONS" in proc.stdout
    for ds in ("cifar10", "cifar100", "tiny_imagenet"):
        assert ds in proc.stdout


# -- statistics, teacher/dense rows, widths, sanity variants, cost, plots (synthetic rich sweep) ---
TGP = {0.5: [0.80, 0.78, 0.82], 0.9: [0.70, 0.66, 0.71]}
MAG = {0.5: [0.75, 0.74, 0.78], 0.9: [0.69, 0.68, 0.70]}
SHUFFLE = {0.5: [0.79, 0.80, 0.80], 0.9: [0.60, 0.61, 0.59]}
TEACHER, DENSE = [0.95, 0.94, 0.96], [0.92, 0.91, 0.93]
LAYERS = ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight", "fc.weight")
STAGE_FLOPS = {"teacher": 100.0, "kd_pretrain": 50.0, "prune": 1.0, "retrain": 20.0}


def _rich_job(root: Path, method: str, seed: int, sparsity: float, acc: float, sanity=None, width=8) -> Path:
    name = f"{method}{'-' + sanity if sanity else ''}-s{sparsity}-seed{seed}"
    folder = _job(root, name, method=method, sanity=sanity, dataset="cifar10", model="resnet18", teacher="resnet18",
                  uses_teacher=True, dense_stage="kd_pretrain", seed=seed, target_sparsity=sparsity, measured_sparsity=sparsity,
                  effective_sparsity=sparsity + 0.01, top1_best_val=acc, top1_last=acc - 0.01,
                  top1_teacher=TEACHER[seed], top1_dense_student=DENSE[seed], cost_device="cpu",
                  # teacher and kd_pretrain are shared by every job of a seed; prune and retrain are the job's own
                  stage_keys={"teacher": f"T{seed}", "kd_pretrain": f"K{seed}", "prune": f"P{name}",
                              "retrain": f"R{name}"},
                  **{f"train_flops_{k}": v for k, v in STAGE_FLOPS.items()},
                  **{f"seconds_{k}": v / 10 for k, v in STAGE_FLOPS.items()},
                  **{f"device_{k}": "cpu" for k in STAGE_FLOPS},
                  cost_flops_own=21.0, cost_flops_shared=150.0, seconds_total=17.1)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "resnet18", "width": width},
                                                         "teacher": {"net": {"name": "resnet18", "width": 16}}}))
    (folder / "prune").mkdir()
    density = {"tgp": [0.9, 0.5, 0.2, 0.6], "magnitude": [0.7, 0.5, 0.3, 0.5]}[method]
    (folder / "prune" / "sparsity_report.json").write_text(json.dumps({"target_sparsity": sparsity, "layers": {
        n: {"total": 1000, "kept": int(1000 * d * (1 - sparsity) / 0.5), "sparsity": 0} for n, d in zip(LAYERS, density)}}))
    return folder


@pytest.fixture
def rich_sweep(tmp_path):
    root = tmp_path / "sweeps" / "rich"
    for sparsity in (0.5, 0.9):
        for seed in range(3):
            _rich_job(root, "tgp", seed, sparsity, TGP[sparsity][seed])
            _rich_job(root, "magnitude", seed, sparsity, MAG[sparsity][seed])
            _rich_job(root, "tgp", seed, sparsity, SHUFFLE[sparsity][seed], sanity="layer_shuffle")
    return root


def _table_rows(md: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| method") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 17:  # the main table (the cost table has fewer columns)
                rows[(cells[0], cells[4])] = cells
    return rows


def test_report_table_ci_paired_difference_teacher_dense_and_widths(rich_sweep, tmp_path):
    from scipy import stats as sps

    res = run_report(rich_sweep, tmp_path / "rep", references="none")
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = _table_rows(md)
    # width-qualified model names, from each job's config.yaml
    assert {r[3] for r in rows.values()} == {"resnet18-w8"}
    # the teacher and the dense student as rows of their own, each seed once (18 jobs share 3 values)
    teacher = rows[("teacher resnet18-w16", "0 (dense)")]
    assert teacher[10] == f"{100 * statistics.fmean(TEACHER):.2f} ± {100 * statistics.stdev(TEACHER):.2f}"
    assert teacher[-1] == "3" and teacher[7] == "—"  # the teacher has no best-val number: its last epoch
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(DENSE), scale=sps.sem(DENSE))
    assert rows[("dense student (kd_pretrain)", "0 (dense)")][11] == f"[{100 * lo:.2f}, {100 * hi:.2f}]"
    # CI of a method row (Student t over 3 seeds) and effective sparsity beside the nominal one
    tgp = rows[("tgp", "50.00")]
    lo, hi = sps.t.interval(0.95, 2, loc=0.8, scale=sps.sem(TGP[0.5]))
    assert tgp[7] == "80.00 ± 2.00" and tgp[8] == f"[{100 * lo:.2f}, {100 * hi:.2f}]"
    assert (tgp[5], tgp[6], tgp[9]) == ("50.00", "51.00", "reference")
    # paired differences vs tgp: magnitude@0.5 significantly worse (marked), the shuffle not (no mark)
    diffs = [m - t for m, t in zip(MAG[0.5], TGP[0.5])]
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(diffs), scale=sps.sem(diffs))
    assert hi < 0
    assert rows[("magnitude", "50.00")][9] == f"{100 * statistics.fmean(diffs):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] *" \
        .replace("-", "−")
    shuffle = rows[("tgp + layer_shuffle", "50.00")][9]
    assert not shuffle.endswith("*") and shuffle.startswith("−0.33 [")
    assert rows[("tgp + layer_shuffle", "90.00")][9].endswith("*")  # the shuffle loses at 90 %
    groups = [g for g in res["groups"] if g["kind"] == "method"]
    for g in groups:  # the mark exactly when the interval excludes 0
        if not g["is_reference"]:
            assert (g["diff_top1_best_val_mark"] == "*") == (g["diff_top1_best_val_lo"] > 0 or g["diff_top1_best_val_hi"] < 0)
    # the sanity row sits right after the method it checks
    order = [k for k in rows if k[1] == "50.00"]
    assert order == [("tgp", "50.00"), ("tgp + layer_shuffle", "50.00"), ("magnitude", "50.00")]
    # which checkpoint each accuracy column is
    assert "best *validation* accuracy" in md and "after the last epoch" in md
    assert tgp[-3].endswith("(cpu)")  # seconds with the device


def test_report_cost_counts_a_shared_stage_once(rich_sweep, tmp_path):
    pytest.importorskip("tgp.report.cost")
    res = run_report(rich_sweep, tmp_path / "rep", references="none", plots=False)
    costs = {c["label"]: c for c in res["costs"]}
    # per seed, tgp (KD) used the teacher and kd_pretrain once (shared by its 2 sparsities and by the
    # other methods) and its own prune + retrain at 2 sparsities
    assert costs["tgp (KD)"]["flops"] == pytest.approx(100 + 50 + 2 * (1 + 20))
    assert costs["tgp (KD)"]["flops_exclusive"] == pytest.approx(2 * (1 + 20))
    assert costs["tgp (KD) + layer_shuffle"]["flops"] == pytest.approx(192)
    sweep = costs["whole sweep (all seeds), each stage once"]
    assert sweep["flops"] == pytest.approx(3 * 150 + 18 * 21)  # not 18 x 171 (per job)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Training cost per method" in md and "| tgp (KD) | cifar10 | resnet18-w8 | 3 | 6 | 6 | 192 | 42 | 100 |" in md
    assert "| whole sweep (all seeds), each stage once |" in md and "| 828 |" in md
    rows = _table_rows(md)
    assert rows[("tgp", "50.00")][13] == "171"  # one job alone: own + shared


def test_report_reference_option_and_plots(rich_sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_main([str(rich_sweep), "--out", str(out), "--references", "none", "--reference", "magnitude"]) == 0
    rows = _table_rows((out / "report.md").read_text())
    assert rows[("magnitude", "50.00")][9] == "reference"
    assert rows[("tgp", "50.00")][9].endswith("*") and rows[("tgp", "50.00")][9].startswith("+4.33")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["acc_vs_flops_cifar10_resnet18-w8.png", "acc_vs_sparsity_cifar10_resnet18-w8.png",
                    "cost_cifar10_resnet18-w8.png", "layer_density_cifar10_resnet18-w8_s0.5.png",
                    "layer_density_cifar10_resnet18-w8_s0.9.png"]  # no radar with two sparsities
    assert all((out / p).stat().st_size > 5000 for p in pngs)
    assert report_main([str(rich_sweep), "--out", str(tmp_path / "r2"), "--references", "none", "--no-plots",
                        "--reference", "none"]) == 0
    assert "reference" not in _table_rows((tmp_path / "r2" / "report.md").read_text())[("tgp", "50.00")][9]


def test_plot_helpers_fixed_colours_styles_and_layer_densities(rich_sweep):
    from tgp.report.cli import method_colors
    from tgp.report.plots import _SPARE_COLORS, layer_densities, method_color, pareto_front, style

    colors = method_colors()  # the registry's: one per method, all different
    assert {"tgp", "magnitude", "snip", "epsd", "imp", "colt", "sdp"} <= set(colors)
    assert len(set(colors.values())) == len(colors)
    assert method_color("tgp", colors) == colors["tgp"] == style("tgp", False, "reinit", colors)["color"]
    assert method_color("tgp") == style("tgp", True)["color"] == style("tgp", False, "reinit")["color"]
    # a method the mapping lacks (an old sweep): a fixed spare colour from its name
    assert method_color("some_new_method", colors) == method_color("some_new_method") in _SPARE_COLORS
    assert style("tgp", True)["linestyle"] == "-" and style("tgp", False)["linestyle"] == "--"
    assert style("tgp", True, "layer_shuffle")["marker"] != style("tgp", True)["marker"]
    dens = layer_densities(find_jobs(rich_sweep).ok)
    tgp = dens[("cifar10", "resnet18-w8", 0.5)]["tgp (KD)"]
    assert tgp["layers"] == list(LAYERS) and tgp["density"] == pytest.approx([0.9, 0.5, 0.2, 0.6]) and tgp["n"] == 3
    assert pareto_front([(1, 0.5), (2, 0.4), (3, 0.7), (3, 0.6)]) == [(1, 0.5), (3, 0.7)]


def test_report_wandb_logs_the_intervals_and_plots(rich_sweep, tmp_path, monkeypatch):
    from test_wandb import clean_env, history_keys, read_wandb_records

    clean_env(monkeypatch, tmp_path / "home")
    res = run_report(rich_sweep, tmp_path / "rep", references="none", wandb=True)
    records = read_wandb_records(Path(res["wandb_dir"]))
    logged = {k.split(".")[0] for k in history_keys(records)}
    if res["costs"]:  # with tgp.report.cost
        assert "cost" in logged
    assert {"comparison", "acc_vs_sparsity/cifar10/resnet18-w8_table",
            "plots/acc_vs_sparsity_cifar10_resnet18-w8", "plots/layer_density_cifar10_resnet18-w8_s0_5",
            "plots/acc_vs_flops_cifar10_resnet18-w8"} <= logged, logged
    # the table's columns and rows, read back from the run's files
    table_files = list(Path(res["wandb_dir"]).glob("files/media/table/comparison_*.table.json"))
    assert len(table_files) == 1
    table = json.loads(table_files[0].read_text())
    cols = table["columns"]
    assert {"top1_best_val_ci_lo", "top1_best_val_ci_hi", "diff_top1_best_val_mean", "diff_top1_best_val_mark",
            "effective_sparsity", "train_flops_per_job"} <= set(cols)
    by = {(r[cols.index("method")], r[cols.index("sparsity")]): dict(zip(cols, r)) for r in table["data"]}
    assert by[("magnitude", 0.5)]["diff_top1_best_val_mark"] == "*"
    assert by[("teacher resnet18-w16", 0.0)]["kind"] == "teacher"
    assert by[("tgp", 0.5)]["top1_best_val_ci_lo"] == pytest.approx(
        0.8 - 4.302652729911275 * 0.02 / math.sqrt(3))


def test_rows_without_method_fields_aggregate_as_before_them():
    """Rows written before metrics.json recorded uses_teacher and dense_stage: a row that names a teacher
    is a teacher method (its ±KD variants), its dense student's stage unnamed; a row's own fields win."""
    base = {"dataset": "digits", "model": "resnet20", "seed": 0, "target_sparsity": 0.5, "top1_best_val": 0.9,
            "top1_last": 0.9}
    rows = [{**base, "method": "tgp", "teacher": "resnet20", "retrain_kd": True, "top1_dense_student": 0.95},
            {**base, "method": "snip", "teacher": None, "retrain_kd": False},
            {**base, "method": "sdp", "uses_teacher": False, "dense_stage": "dense", "top1_dense_student": 0.93}]
    groups = aggregate(rows, reference=None)
    assert {g["variant"] for g in groups if g["kind"] == "method"} == {"tgp (KD)", "snip", "sdp"}
    assert {g["label"] for g in groups if g["kind"] == "dense"} == {"dense student", "dense student (dense)"}


def test_the_report_imports_nothing_that_trains(sweep, tmp_path):
    """tgp.report reads rows: a whole report (failed jobs, plots with their colours given) imports none of
    the modules that run methods or train, and the method registry only for the colours."""
    forbidden = ("tgp.methods", "tgp.lit", "tgp.training", "tgp.blocks", "tgp.pipeline")
    code = (f"import sys; from tgp.report.cli import run_report; "
            f"run_report({str(sweep)!r}, {str(tmp_path / 'r')!r}, references='none', colors={{}}); "
            f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png"))  # the plots were drawn


def test_report_shows_the_power_of_every_comparison(sweep, tmp_path, capsys):
    """tgp − magnitude at 50 %: best-val differences −0.4, −0.3, −0.2 (SD 10 pp), last 0, +0.02, +0.04 (SD 2 pp)."""
    from tgp.report.stats import minimum_detectable_difference, seeds_needed

    out = tmp_path / "rep"
    assert report_main([str(sweep), "--out", str(out), "--references", "none", "--no-plots", "--min-effect", "5"]) == 0
    md = (out / "report.md").read_text()
    best, last = (minimum_detectable_difference(sd, 3) for sd in (0.1, 0.02))
    row = (f"| magnitude − tgp | digits | resnet20 | 50.00 | 3 | 10.00 | {100 * best:.2f} | {seeds_needed(0.1, 0.05)} "
           f"| 2.00 | {100 * last:.2f} | {seeds_needed(0.02, 0.05)} |")
    assert row in md and row in capsys.readouterr().out
    assert "best-val: seeds for 5 pp" in md and "**Power** (paired t-test, two-sided α = 0.05, power 0.8" in md
    assert f"{100 * best:.2f}" == "32.64"  # δ* = 5.6535 at n = 3 (exact noncentral t) · 10 pp / √3
    # magnitude at 90 % has one seed: no SD, so no power row
    assert "| magnitude − tgp | digits | resnet20 | 90.00" not in md


def test_min_effect_must_be_positive(sweep, capsys):
    with pytest.raises(SystemExit) as exc:
        report_main([str(sweep), "--min-effect", "0", "--no-plots", "--references", "none"])
    assert exc.value.code == 2 and "--min-effect 0: must be a positive number" in capsys.readouterr().err
