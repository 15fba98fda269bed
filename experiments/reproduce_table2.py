#!/usr/bin/env python
"""Reproduce the paper's main comparison (Table 2): ResNet-18 students on CIFAR-10, CIFAR-100 and
Tiny ImageNet, both sparsity ladders, TGP (retrained with and without KD) against EPSD, COLT, IMP,
magnitude and SNIP, three seeds.

    python experiments/reproduce_table2.py --smoke 0      # the real grid (GPUs, datasets on disk)
    python experiments/reproduce_table2.py --smoke 1      # same code, digits data, reduced grid, CPU minutes
    make reproduce-table2 [SMOKE=1]

It prints the grid and a GPU-hours estimate, runs one Hydra multirun per (dataset, method group)
through ``python -m tgp.run -m ...`` (a failing job — e.g. a method not implemented yet — is
recorded in its folder and the sweep goes on), then writes the report (tgp-report) into
``outputs/reproduce_table2/`` (``outputs/reproduce_table2_smoke/`` for --smoke 1; ``--log-dir`` moves
both, ``--out`` the report alone), never into the source tree. Each sweep's progress line is the
command it runs, ready to paste. Run it again to resume: finished jobs are skipped, interrupted
ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = {  # dataset → experiment file (conf/experiment/)
    "cifar10": "cifar10_resnet18",
    "cifar100": "cifar100_resnet18",
    "tiny_imagenet": "tiny_imagenet_resnet18",
}


def table2_methods() -> tuple[str, ...]:
    """The methods of the paper's Table 2, from the method registry (``MethodSpec.in_table2``), TGP first."""
    from tgp.methods import load_all

    names = sorted(n for n, spec in load_all().items() if spec.in_table2)
    return tuple(sorted(names, key=lambda n: n != "tgp"))


METHODS = table2_methods()
LADDERS = ("ladder_a", "ladder_b")
SEEDS = (0, 1, 2)

# ASSUMPTION for the estimate only (not measured here): seconds per epoch of a ResNet-18 student on
# one A100/H100-class GPU, bf16, batch 128, including validation. Teachers and KD epochs scale it.
SECONDS_PER_EPOCH = {"cifar10": 12.0, "cifar100": 12.0, "tiny_imagenet": 75.0, "digits": 0.5}
TEACHER_FACTOR = {"resnet18": 1.0, "resnet34": 1.9, "resnet50": 2.6}  # assumption: relative cost per epoch
KD_FACTOR = 1.5  # assumption: a KD epoch = student forward/backward + teacher forward
JOB_OVERHEAD_S = {"digits": 8.0}  # seconds per job besides training (start-up, data, evaluation): ~8 s measured on 2 CPU cores
ITERATIVE = {"imp", "colt"}  # assumption: 20 % of the remaining weights per round, one retraining per round

# --smoke 1: the same code path on the bundled digits data, a cut-down grid.
SMOKE = {"experiment": "smoke", "datasets": ("digits",), "ladders": ("ladder_a",), "seeds": (0,),
         "methods": METHODS}


def ladder_values(name: str) -> list[float]:
    doc = yaml.safe_load((ROOT / "conf" / "sweep" / f"{name}.yaml").read_text())
    return [float(v) for v in str(doc["hydra"]["sweeper"]["params"]["pruning.sparsity"]).split(",")]


def experiment_budget(experiment: str) -> dict:
    """Epochs per stage and teacher architecture of an experiment file (defaults from conf/)."""
    doc = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()) or {}
    teacher = "resnet18"
    for d in doc.get("defaults") or []:
        if isinstance(d, dict) and "override /teacher" in d:
            teacher = d["override /teacher"]
    return {
        "teacher_epochs": int((doc.get("teacher") or {}).get("epochs", 0)),
        "kd_epochs": int((doc.get("kd_pretrain") or {}).get("epochs", 0)),
        "retrain_epochs": int((doc.get("retrain") or {}).get("epochs", 0)),
        "teacher": teacher,
    }


def rounds(method: str, sparsity: float) -> int:
    if method not in ITERATIVE:
        return 1
    return max(1, math.ceil(math.log(1 - sparsity) / math.log(0.8) - 1e-9))


def build_grid(datasets, methods, ladders, seeds, limit: int | None, experiment_of) -> list[dict]:
    """One entry per Hydra multirun: its overrides and the jobs it will create."""
    sparsities = []
    for lad in ladders:
        vals = ladder_values(lad)
        sparsities += vals[:limit] if limit else vals
    sparsities = sorted(set(sparsities))
    groups = []
    if "tgp" in methods:
        groups.append(("tgp", ["tgp"], ["retrain.kd=true,false"], (True, False)))
    baselines = [m for m in methods if m != "tgp"]
    # Our choice: baselines retrain with CE, as in their own recipes; TGP is run both ways.
    with_cfg = [m for m in baselines if (ROOT / "conf" / "method" / f"{m}.yaml").exists()]
    without_cfg = [m for m in baselines if m not in with_cfg]
    if with_cfg:
        groups.append(("baselines", with_cfg, ["retrain.kd=false"], (False,)))
    if without_cfg:
        # No conf/method/<m>.yaml (yet): select it by name on top of the default method config, so
        # each job gets its folder and fails there ("not implemented") instead of stopping the sweep.
        groups.append(("baselines_by_name", without_cfg, ["retrain.kd=false"], (False,)))
    grid = []
    for ds in datasets:
        for tag, ms, extra, kds in groups:
            select = f"method.name={','.join(ms)}" if tag == "baselines_by_name" else f"method={','.join(ms)}"
            overrides = [f"experiment={experiment_of(ds)}", select, *extra,
                         f"pruning.sparsity={','.join(f'{s:g}' for s in sparsities)}",
                         f"seed={','.join(str(s) for s in seeds)}"]
            jobs = [dict(dataset=ds, method=m, retrain_kd=kd, sparsity=s, seed=seed)
                    for m, kd, s, seed in itertools.product(ms, kds, sparsities, seeds)]
            grid.append({"dataset": ds, "tag": tag, "overrides": overrides, "jobs": jobs})
    return grid


JOB_START_S = {"digits": 8.0}  # ASSUMPTION even with a bench file: process start-up, imports, loading the data (~8 s measured on 2 CPU cores for digits)
STAGES = ("teacher", "kd_pretrain", "retrain_kd", "retrain_ce")


def current_device() -> str:
    import torch

    from tgp.bench import device_name

    return device_name(torch.device("cuda")) if torch.cuda.is_available() else "cpu"


def load_bench(path: Path | None) -> dict | None:
    """The bench file (``python -m tgp.bench``) of this device, or None when there is none."""
    if path is None or not path.is_file():
        return None
    from tgp.io import read_json

    return read_json(path)


def per_epoch_figures(ds: str, experiment: str, bench: dict | None) -> dict:
    """Seconds per epoch of each stage kind and a job's own overhead for ``ds``: measured (the
    bench's entry for ``experiment``; compiled when the recipe compiles and that was measured)
    or, without one, the stated assumptions."""
    b = experiment_budget(experiment)
    entry = (bench or {}).get("recipes", {}).get(experiment)
    if entry and entry.get("modes"):
        modes = entry["modes"]
        mode = "compiled" if entry.get("compile_in_recipe") and "compiled" in modes else (
            "eager" if "eager" in modes else next(iter(modes)))
        f = modes[mode]
        start = JOB_START_S.get(ds, 30.0)
        return {"source": "measured", "mode": mode, "measured": entry.get("measured"), "batch": entry.get("batch"),
                **{k: f["stage_epoch_s"][k] for k in STAGES},
                "job_overhead": start + f["prune_s"] + f["test_eval_s"], "job_start": start}
    per_epoch = SECONDS_PER_EPOCH.get(ds, 12.0)
    return {"source": "assumed", "teacher": per_epoch * TEACHER_FACTOR.get(b["teacher"], 2.0),
            "kd_pretrain": per_epoch * KD_FACTOR, "retrain_kd": per_epoch * KD_FACTOR, "retrain_ce": per_epoch,
            "job_overhead": JOB_OVERHEAD_S.get(ds, 60.0)}


def estimate_hours(grid, experiment_of, bench: dict | None = None) -> tuple[float, dict]:
    """Device-hours and the per-epoch figures used per dataset: teacher and KD pretraining once per
    (dataset, seed) (shared stage store), plus every job's own overhead and retraining (times the
    rounds of iterative methods)."""
    total = 0.0
    seen = set()
    used = {}
    for entry in grid:
        ds = entry["dataset"]
        b = experiment_budget(experiment_of(ds))
        f = used.setdefault(ds, per_epoch_figures(ds, experiment_of(ds), bench))
        for job in entry["jobs"]:
            if (ds, job["seed"]) not in seen:
                seen.add((ds, job["seed"]))
                total += b["teacher_epochs"] * f["teacher"] + b["kd_epochs"] * f["kd_pretrain"]
            retrain = f["retrain_kd"] if job["retrain_kd"] else f["retrain_ce"]
            total += f["job_overhead"] + b["retrain_epochs"] * retrain * rounds(job["method"], job["sparsity"])
    return total / 3600, used


def print_grid(grid, hours: float, smoke: bool, used: dict | None = None, bench: dict | None = None,
               bench_path: Path | None = None) -> None:
    n = sum(len(e["jobs"]) for e in grid)
    print(f"Table 2 grid ({'smoke: digits, reduced' if smoke else 'full'}): {n} jobs in {len(grid)} sweeps")
    for e in grid:
        methods = sorted({j["method"] + ("" if j["retrain_kd"] else " (CE)") for j in e["jobs"]})
        sps = sorted({j["sparsity"] for j in e["jobs"]})
        seeds = sorted({j["seed"] for j in e["jobs"]})
        print(f"  {e['dataset']:<14} {', '.join(methods):<52} sparsities {', '.join(f'{100 * s:.4g}%' for s in sps)}"
              f"  seeds {seeds}  ({len(e['jobs'])} jobs)")
    used = used or {}
    measured = {ds: f for ds, f in used.items() if f["source"] == "measured"}
    assumed = [ds for ds, f in used.items() if f["source"] != "measured"]
    if measured:
        print(f"Estimate: {hours:.2f} device-hours on one {bench['device']} (this machine's device), from figures "
              f"MEASURED there by `python -m tgp.bench` ({bench_path}). Seconds per epoch:")
        for ds, f in measured.items():
            print(f"  {ds:<14} teacher {f['teacher']:.1f}, KD pretraining {f['kd_pretrain']:.1f}, retraining with KD "
                  f"{f['retrain_kd']:.1f} / CE {f['retrain_ce']:.1f}; + {f['job_overhead']:.1f} s per job "
                  f"({f['mode']}, batch {f['batch']}, measured {f['measured']})")
        print(f"  Still assumed: {next(iter(measured.values()))['job_start']:.0f} s start-up per job; IMP/COLT one "
              "retraining per 20 % round; teacher and KD pretraining shared per (dataset, seed).", flush=True)
    if assumed or not used:
        unit = "CPU-hours (digits smoke)" if smoke else "GPU-hours on one A100/H100-class GPU"
        where = f" for {', '.join(assumed)}" if measured else ""
        lead = "  The rest:" if measured else f"Estimate: {hours:.2f} {unit}."
        print(f"{lead} ASSUMPTIONS (not measured{where}; `python -m tgp.bench` on the device measures them): "
              f"seconds per student epoch {SECONDS_PER_EPOCH}, teacher epoch factor {TEACHER_FACTOR}, KD epoch factor "
              f"{KD_FACTOR}, {JOB_OVERHEAD_S.get(grid[0]['dataset'] if grid else '', 60.0):.0f} s overhead per job, "
              "IMP/COLT one retraining per 20 % round; teacher and KD pretraining shared per (dataset, seed).", flush=True)


def run_sweep(entry, common: list[str], log_dir: Path, timeout: float | None) -> int:
    cmd = [sys.executable, "-m", "tgp.run", "-m", *entry["overrides"], *common]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{entry['dataset']}_{entry['tag']}.log"
    env = dict(os.environ)
    env.setdefault("WANDB_SILENT", "true")
    print(f"$ {shlex.join(cmd)}\n  (log: {log_path})", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    print(f"  exit {rc} after {time.perf_counter() - start:.0f} s", flush=True)
    return rc


def comma_list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def add_run_arguments(p: argparse.ArgumentParser, report: str, override_example: str) -> None:
    """The options every reproduction script shares: where runs and the report go, dry run, W&B, the
    per-sweep timeout, the bench file of the estimate, and Hydra overrides for every job."""
    p.add_argument("--log-dir", default=None, help="paths.log_dir of the runs (default: outputs)")
    p.add_argument("--out", default=None, help=f"report folder (default: <log-dir>/{report}[_smoke])")
    p.add_argument("--dry-run", action="store_true", help="print the grid and the estimate, run nothing")
    p.add_argument("--wandb", action="store_true", help="log the runs and the comparison to W&B (offline without a key)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per sweep before it is stopped")
    p.add_argument("--bench", default=None,
                   help="bench JSON of the device (default: outputs/bench/<this device>.json when it exists)")
    p.add_argument("overrides", nargs="*", help=f"extra Hydra overrides for every job, e.g. {override_example}")


def run_grid_and_report(grid, sweep_of, out: Path, log_dir: Path, timeout: float | None,
                        report_args: list[str]) -> int:
    """Run each grid entry's multirun (``sweep_of(entry) -> (sweep name, its overrides)``), then one
    report over the sweep folders into ``out``. Returns the worst exit code of the sweeps and the report
    (:func:`tgp.exits.worst`): a failed job fails the script after everything ran, and nothing to report is 2."""
    from tgp.exits import SETTING, worst
    from tgp.report.cli import main as report_main

    codes, sweeps = [], []
    for entry in grid:
        name, common = sweep_of(entry)
        rc = run_sweep(entry, [f"name={name}", *common], out / "logs", timeout)
        codes.append(rc)
        if rc != 0:
            print(f"  the sweep for {entry['dataset']} / {entry['tag']} ended with exit {rc} (a job failed, or the "
                  "sweep was stopped): its log lists the failed jobs; finished jobs are kept and the report lists "
                  "the rest; this script exits non-zero at the end", flush=True)
        folder = log_dir / "sweeps" / name
        if folder not in sweeps:
            sweeps.append(folder)
    existing = [str(s) for s in sweeps if s.is_dir()]
    if not existing:
        print("no sweep folder was created: nothing to report", file=sys.stderr)
        return worst([*codes, SETTING])
    return worst([*codes, report_main([*existing, "--out", str(out), *report_args])])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", type=int, choices=(0, 1), default=0, help="1: digits data, reduced grid, CPU minutes")
    p.add_argument("--methods", default=None, help=f"comma list (default: {','.join(METHODS)})")
    p.add_argument("--datasets", default=None, help=f"comma list (default: {','.join(DATASETS)}; smoke: digits)")
    p.add_argument("--ladders", default=None, help="comma list of conf/sweep files (default: ladder_a,ladder_b; smoke: ladder_a)")
    p.add_argument("--seeds", default=None, help="comma list (default: 0,1,2; smoke: 0)")
    p.add_argument("--limit", type=int, default=None, help="keep the first N sparsities of each ladder")
    add_run_arguments(p, "reproduce_table2", "trainer=ddp")
    args = p.parse_args(argv)

    smoke = bool(args.smoke)
    split = comma_list
    datasets = split(args.datasets) if args.datasets else list(SMOKE["datasets"] if smoke else DATASETS)
    methods = split(args.methods) if args.methods else list(METHODS)
    ladders = split(args.ladders) if args.ladders else list(SMOKE["ladders"] if smoke else LADDERS)
    seeds = [int(s) for s in split(args.seeds)] if args.seeds else list(SMOKE["seeds"] if smoke else SEEDS)
    experiment_of = (lambda ds: SMOKE["experiment"]) if smoke else (lambda ds: DATASETS[ds])

    grid = build_grid(datasets, methods, ladders, seeds, args.limit, experiment_of)
    from tgp.bench import default_path

    bench_path = Path(args.bench) if args.bench else default_path(current_device())
    bench = load_bench(bench_path)
    hours, used = estimate_hours(grid, experiment_of, bench)
    print_grid(grid, hours, smoke, used, bench, bench_path)
    if args.dry_run:
        return 0

    log_dir = Path(args.log_dir or "outputs")
    # Under the log folder (outputs/ by default, ignored by git), never into the source tree.
    out = Path(args.out) if args.out else log_dir / ("reproduce_table2_smoke" if smoke else "reproduce_table2")
    sweep_name = "table2_smoke" if smoke else None
    def sweep_of(entry):
        common = [f"paths.log_dir={log_dir.resolve()}", "progress_bar=false", *args.overrides]
        return sweep_name or f"table2_{entry['dataset']}", common + (["logger=wandb"] if args.wandb else [])

    return run_grid_and_report(grid, sweep_of, out, log_dir, args.timeout, ["--wandb"] if args.wandb else [])


if __name__ == "__main__":
    sys.exit(main())
