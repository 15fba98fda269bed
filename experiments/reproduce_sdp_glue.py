#!/usr/bin/env python
"""Reproduce SDP's comparison on Transformers (O'Neill et al., arXiv 2109.15014): BERT-base on the 8
GLUE tasks and XLM-R base on XNLI and PAWS-X (trained on English, evaluated on every language), pruned
by SDP, by SDP without its cross-correlation term (λ = 0: gradual magnitude pruning), by one-shot
magnitude, IMP, TGP (retrained with and without KD) and CE-gradient pruning, at 50 / 70 / 90 %, against
dense models fine-tuned for the same budget (bert_small, distilbert, bert_base; xlmr_base), three seeds.

    python experiments/reproduce_sdp_glue.py --dry-run     # the grid and the GPU-hours estimate only
    python experiments/reproduce_sdp_glue.py --smoke 0     # the real grid (GPUs, GLUE/XGLUE under data/)
    python experiments/reproduce_sdp_glue.py --smoke 1     # same code: tiny files of every task, tiny models, CPU
    make reproduce-sdp-glue [SMOKE=1]

``--smoke 1`` first writes the data (tiny files in every task's official format and the generated
task's tokenizer, under the report folder's ``data/``), then runs the whole grid with one seed at one
sparsity. Each (benchmark, method group) is one Hydra multirun (``python -m tgp.run -m ...``; a failing
job is recorded in its folder and the sweep goes on), then the report (tgp-report, paired differences
against sdp: the GLUE score, every task's official metrics, XGLUE's languages, score vs nonzero
parameters) goes to ``outputs/reproduce_sdp_glue/`` (``..._smoke/``; ``--log-dir`` moves both, ``--out``
the report alone), never into the source tree. Run it again to resume: finished jobs are skipped.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from reproduce_table2 import (add_run_arguments, comma_list, current_device, load_bench,  # noqa: E402
                              run_grid_and_report)

# benchmark → its experiment files, tasks and dense comparison models (SDP's abstract: a smaller dense
# Transformer with as many nonzero parameters, a distilled one about 6x larger; the dense base model)
BENCHMARKS = {
    "glue": {"experiment": "glue_bert_base", "smoke": "glue_smoke", "name": "sdp_glue",
             "tasks": ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"),
             "dense": ("bert_small", "distilbert", "bert_base"), "smoke_dense": ("bert_tiny",)},
    "xglue": {"experiment": "xglue_xlmr_base", "smoke": "xglue_smoke", "name": "sdp_xglue",
              "tasks": ("xnli", "pawsx"), "dense": ("xlmr_base",), "smoke_dense": ("xlmr_tiny",)},
}
# method key → (the multirun's method selection, its extra overrides, the retrain.kd values it runs)
METHODS = {
    "sdp": ("sdp", [], (False,)),
    "sdp_lambda0": ("sdp", ["method.cc_weight=0"], (False,)),  # the ablation: gradual magnitude pruning alone
    "magnitude": ("magnitude", [], (False,)),
    "imp": ("imp", [], (False,)),
    "tgp": ("tgp", [], (True, False)),  # the paper reports TGP retrained with and without KD
    "ce_grad": ("ce_grad", [], (False,)),
    "dense": ("dense", ["pruning.sparsity=0"], (False,)),  # no pruning: the comparison models, sparsity 0
}
ONE_GROUP = ("sdp", "magnitude", "imp", "ce_grad")  # plain methods, CE retraining: one multirun together
SEEDS = (0, 1, 2)
SMOKE = {"seeds": (0,), "sparsities": (0.5,)}
REFERENCE = "sdp"

# Official split sizes (train, evaluation examples over every evaluation set) for the estimate:
# GLUE dev sets (MNLI: matched + mismatched), XGLUE dev sets over all languages.
SIZES = {"cola": (8_551, 1_043), "sst2": (67_349, 872), "mrpc": (3_668, 408), "qqp": (363_846, 40_430),
         "stsb": (5_749, 1_500), "mnli": (392_702, 19_647), "qnli": (104_743, 5_463), "rte": (2_490, 277),
         "xnli": (392_702, 15 * 2_490), "pawsx": (49_401, 4 * 2_000)}
# ASSUMPTIONS for the estimate only (not measured here): training examples/s of a dense fine-tuning step on
# one H100-class GPU, bf16, batch 32, max_length 128 with per-batch padding; evaluation 5x faster; a KD or
# SDP step (a second, frozen forward) 1.35x a plain one; a masked step 1.05x; start-up, loading and the
# test evaluation 60 s per job; IMP's rounds (20 % each) shared by every sparsity of a (task, seed).
TRAIN_EX_S = {"bert_base": 1000.0, "xlmr_base": 850.0, "distilbert": 2000.0, "bert_small": 5000.0,
              "bert_tiny": 20000.0, "xlmr_tiny": 20000.0}
EVAL_FACTOR, KD_FACTOR, MASK_FACTOR, JOB_OVERHEAD_S = 5.0, 1.35, 1.05, 60.0
SMOKE_JOB_S = 15.0  # ASSUMPTION for --smoke 1: seconds per tiny job on 2 CPU cores (to be measured once text runs)
STAGE_FACTOR = {"teacher": 1.0, "dense": 1.0, "kd_pretrain": KD_FACTOR, "retrain_kd": KD_FACTOR * MASK_FACTOR,
                "retrain_ce": MASK_FACTOR, "sdp": KD_FACTOR * MASK_FACTOR}


def text_sparsities() -> list[float]:
    doc = yaml.safe_load((ROOT / "conf" / "sweep" / "text_sparsity.yaml").read_text())
    return [float(v) for v in str(doc["hydra"]["sweeper"]["params"]["pruning.sparsity"]).split(",")]


def recipe(experiment: str) -> dict:
    """Epochs per stage, the validation fraction and the model of an experiment file."""
    doc = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()) or {}
    model = next((d["override /model"] for d in doc.get("defaults") or [] if isinstance(d, dict)
                  and "override /model" in d), None)
    return {"teacher": int(doc["teacher"]["epochs"]), "dense": int(doc["kd_pretrain"]["epochs"]),
            "retrain": int(doc["retrain"]["epochs"]), "val": float((doc.get("data") or {}).get("val_size", 0.1)),
            "model": model}


def _groups(methods: list[str]) -> list[tuple[str, list[str], list[str], tuple]]:
    """(tag, method keys, overrides, kds) per multirun: the plain methods together, the others alone."""
    plain = [m for m in ONE_GROUP if m in methods]
    out = [("baselines", plain, [], (False,))] if plain else []
    for m in methods:
        if m not in plain:
            out.append((m, [m], list(METHODS[m][1]), METHODS[m][2]))
    return out


def _select(keys: list[str]) -> str:
    """``method=a,b`` (``method.name=`` for a method without a config file yet: each job then fails in its
    own folder, naming it, instead of the whole sweep refusing to start)."""
    names = list(dict.fromkeys(METHODS[k][0] for k in keys))
    if all((ROOT / "conf" / "method" / f"{n}.yaml").exists() for n in names):
        return f"method={','.join(names)}"
    return f"method.name={','.join(names)}"


def build_grid(benchmarks, methods, sparsities, seeds, smoke: bool, tasks=None) -> list[dict]:
    """One entry per Hydra multirun: its benchmark, tag, overrides and the jobs it will create
    (``tasks``: only these of each benchmark's tasks; a benchmark left with none is left out)."""
    grid = []
    for bench in benchmarks:
        b = dict(BENCHMARKS[bench])
        b["tasks"] = tuple(t for t in b["tasks"] if tasks is None or t in tasks)
        if not b["tasks"]:
            continue
        experiment = b["smoke" if smoke else "experiment"]
        model = recipe(experiment)["model"]
        for tag, keys, extra, kds in _groups(methods):
            dense = tag == "dense"
            models = b["smoke_dense" if smoke else "dense"] if dense else (model,)
            levels = (0.0,) if dense else tuple(sparsities)
            overrides = [f"experiment={experiment}", _select(keys), *extra, f"data.task={','.join(b['tasks'])}",
                         f"retrain.kd={','.join(str(k).lower() for k in kds)}",
                         f"seed={','.join(str(s) for s in seeds)}"]
            if dense:
                overrides.insert(2, f"model={','.join(models)}")
            else:
                overrides.insert(2, f"pruning.sparsity={','.join(f'{s:g}' for s in levels)}")
            jobs = [dict(benchmark=bench, task=t, method=k, model=mdl, retrain_kd=kd, sparsity=s, seed=seed)
                    for t, k, mdl, kd, s, seed in itertools.product(b["tasks"], keys, models, kds, levels, seeds)]
            grid.append({"benchmark": bench, "tag": tag, "experiment": experiment, "overrides": overrides, "jobs": jobs})
    return grid


def imp_rounds(sparsity: float, rate: float = 0.2) -> int:
    return max(1, math.ceil(math.log(1 - sparsity) / math.log(1 - rate) - 1e-9))


def seconds_per_epoch(task: str, model: str, stage: str, experiment: str, bench: dict | None) -> tuple[float, str]:
    """One epoch of ``stage`` on ``task`` (training on the train part, validation on the rest): from the
    bench entry of ``experiment`` (per training example, scaled to the task and the model) when there is
    one, else from the stated assumptions. Returns (seconds, "measured" | "assumed")."""
    n_train, _ = SIZES[task]
    val = recipe(experiment)["val"]
    entry = ((bench or {}).get("recipes") or {}).get(experiment)
    base = recipe(experiment)["model"]
    scale = TRAIN_EX_S.get(base, 1000.0) / TRAIN_EX_S.get(model, 1000.0)  # other models: by the assumed ratio
    if entry and entry.get("modes") and entry.get("n_train"):
        figs = next(iter(entry["modes"].values()))
        kind = {"sdp": "retrain_kd"}.get(stage, stage)
        per_example = figs["stage_epoch_s"].get(kind, figs["stage_epoch_s"].get("dense")) / entry["n_train"]
        return per_example * n_train * scale, "measured"
    train = n_train * (1 - val) / TRAIN_EX_S.get(model, 1000.0) * STAGE_FACTOR[stage]
    return train + n_train * val / (EVAL_FACTOR * TRAIN_EX_S.get(model, 1000.0)), "assumed"


def estimate_hours(grid, bench: dict | None = None) -> tuple[float, set]:
    """Device-hours of the grid: the shared stages once per (task, seed) — the teacher and KD pretraining
    (tgp, ce_grad, magnitude), SDP's dense fine-tuning (sdp and its λ = 0 ablation), IMP's dense training
    and rounds up to its largest sparsity — plus every job's own stage and overhead."""
    total, seen, sources = 0.0, set(), set()
    imp_max: dict = {}
    for e in grid:
        for j in e["jobs"]:
            if j["method"] == "imp":
                key = (e["experiment"], j["task"], j["seed"])
                imp_max[key] = max(imp_max.get(key, 0), imp_rounds(j["sparsity"]))

    def epoch(e, j, stage, model=None):
        s, src = seconds_per_epoch(j["task"], model or j["model"], stage, e["experiment"], bench)
        sources.add(src)
        return s

    for e in grid:
        r = recipe(e["experiment"])
        for j in e["jobs"]:
            shared = (e["experiment"], j["task"], j["seed"])
            n_test = SIZES[j["task"]][1] / (EVAL_FACTOR * TRAIN_EX_S.get(j["model"], 1000.0))
            total += JOB_OVERHEAD_S + n_test
            m = j["method"]
            if m in ("tgp", "ce_grad", "magnitude") and (shared, "kd") not in seen:
                seen.add((shared, "kd"))
                total += r["teacher"] * epoch(e, j, "teacher") + r["dense"] * epoch(e, j, "kd_pretrain")
            if m in ("sdp", "sdp_lambda0") and (shared, "dense") not in seen:
                seen.add((shared, "dense"))
                total += r["dense"] * epoch(e, j, "dense")
            if m == "imp" and (shared, "imp") not in seen:
                seen.add((shared, "imp"))
                total += r["dense"] * epoch(e, j, "dense") * imp_max[shared]  # dense + rounds before the last
            if m == "dense":
                total += (r["dense"] + r["retrain"]) * epoch(e, j, "dense")  # the same total budget, dense
            elif m in ("sdp", "sdp_lambda0"):
                total += r["retrain"] * epoch(e, j, "sdp")
            else:
                total += r["retrain"] * epoch(e, j, "retrain_kd" if j["retrain_kd"] else "retrain_ce")
    return total / 3600, sources


def print_grid(grid, hours: float, sources: set, smoke: bool, bench_path: Path | None, device: str) -> None:
    """The multiruns, their jobs and the estimate, saying which figures were measured and which assumed."""
    n = sum(len(e["jobs"]) for e in grid)
    print(f"SDP GLUE/XGLUE grid ({'smoke: tiny files, tiny models' if smoke else 'full'}): {n} jobs in {len(grid)} sweeps")
    for e in grid:
        jobs = e["jobs"]
        both = {j["method"] for j in jobs if j["retrain_kd"]}  # methods run with and without KD retraining
        methods = sorted({j["method"] + ((" (KD)" if j["retrain_kd"] else " (CE)") if j["method"] in both else "")
                          for j in jobs})
        models = sorted({j["model"] for j in jobs})
        sps = sorted({j["sparsity"] for j in jobs})
        print(f"  {e['benchmark']:<6} {', '.join(methods):<40} {', '.join(models):<30} tasks "
              f"{','.join(sorted({j['task'] for j in jobs}))}  sparsities {', '.join(f'{100 * s:.4g}%' for s in sps)}  "
              f"seeds {sorted({j['seed'] for j in jobs})}  ({len(jobs)} jobs)")
    if smoke:
        print(f"Estimate: {n * SMOKE_JOB_S / 3600:.2f} CPU-hours (smoke), ASSUMING {SMOKE_JOB_S:.0f} s per tiny job on "
              "2 CPU cores (not measured yet).", flush=True)
        return
    unit = "GPU-hours"
    if sources == {"measured"}:
        print(f"Estimate: {hours:.1f} {unit} on one {device}, from the seconds per epoch MEASURED there by "
              f"`python -m tgp.bench` ({bench_path}), scaled per training example to each task's size. Still "
              f"assumed: {JOB_OVERHEAD_S:.0f} s per job, IMP rounds shared across sparsities, the other models' speed "
              f"relative to the measured one {TRAIN_EX_S}.")
    else:
        where = "partly " if "measured" in sources else ""
        print(f"Estimate: {hours:.1f} {unit} on one H100-class GPU, {where}from ASSUMPTIONS (no text recipe of this grid "
              f"in {bench_path}; `python -m tgp.bench` on the device measures them): training examples/s {TRAIN_EX_S}, "
              f"evaluation {EVAL_FACTOR:g}x faster, a KD/SDP step {KD_FACTOR}x and a masked step {MASK_FACTOR}x a plain "
              f"one, {JOB_OVERHEAD_S:.0f} s per job, IMP rounds shared across sparsities; stages shared per (task, seed).",
              flush=True)


def write_smoke_data(data_dir: Path) -> None:
    """Tiny files in every GLUE and XGLUE task's official format and the generated task's tokenizer
    (the tiny models' ``model.tokenizer``: ``<data>/glue_data/RoleSwap/tokenizer``)."""
    from tgp.data.text.fake_files import write_fake_glue, write_fake_xglue
    from tgp.data.text.generated import write_roleswap

    write_fake_glue(data_dir, n_train=24, n_dev=8)
    write_fake_xglue(data_dir, n_train=24, n_dev=8)
    write_roleswap(data_dir, n_train=400, n_dev=40)
    print(f"smoke data: every task's files and the tokenizer under {data_dir}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", type=int, choices=(0, 1), default=0, help="1: tiny files, tiny models, one seed, CPU")
    p.add_argument("--benchmarks", default=None, help=f"comma list (default: {','.join(BENCHMARKS)})")
    p.add_argument("--methods", default=None, help=f"comma list (default: {','.join(METHODS)})")
    p.add_argument("--tasks", default=None, help="comma list: only these tasks (default: every task of each benchmark)")
    p.add_argument("--sparsities", default=None, help="comma list (default: conf/sweep/text_sparsity.yaml; smoke: 0.5)")
    p.add_argument("--seeds", default=None, help="comma list (default: 0,1,2; smoke: 0)")
    add_run_arguments(p, "reproduce_sdp_glue", "data.loader=device")
    args = p.parse_args(argv)

    smoke = bool(args.smoke)
    split = comma_list
    benchmarks = split(args.benchmarks) if args.benchmarks else list(BENCHMARKS)
    methods = split(args.methods) if args.methods else list(METHODS)
    tasks = split(args.tasks) if args.tasks else None
    all_tasks = [t for b in BENCHMARKS.values() for t in b["tasks"]]
    for what, given, known in (("--benchmarks", benchmarks, BENCHMARKS), ("--methods", methods, METHODS),
                               ("--tasks", tasks or [], all_tasks)):
        unknown = [x for x in given if x not in known]
        if unknown:
            p.error(f"{what} {','.join(unknown)}: not known here; use any of {','.join(known)}.")
    sparsities = ([float(s) for s in split(args.sparsities)] if args.sparsities
                  else list(SMOKE["sparsities"] if smoke else text_sparsities()))
    seeds = [int(s) for s in split(args.seeds)] if args.seeds else list(SMOKE["seeds"] if smoke else SEEDS)

    grid = build_grid(benchmarks, methods, sparsities, seeds, smoke, tasks)
    from tgp.bench import default_path

    device = current_device()
    bench_path = Path(args.bench) if args.bench else default_path(device)
    hours, sources = estimate_hours(grid, load_bench(bench_path))
    print_grid(grid, hours, sources, smoke, bench_path, device)
    log_dir = Path(args.log_dir or "outputs")
    out = Path(args.out) if args.out else log_dir / ("reproduce_sdp_glue_smoke" if smoke else "reproduce_sdp_glue")
    print(f"Report: {out / 'report.md'} (paired differences against {REFERENCE})", flush=True)
    if args.dry_run:
        return 0

    common = [f"paths.log_dir={log_dir.resolve()}", "progress_bar=false", *args.overrides]
    if smoke:
        data_dir = (out / "data").resolve()
        write_smoke_data(data_dir)
        common.insert(0, f"paths.data_dir={data_dir}")
    if args.wandb:
        common.append("logger=wandb")
    def sweep_of(entry):
        entry["dataset"] = entry["benchmark"]  # run_sweep names its log after it
        return BENCHMARKS[entry["benchmark"]]["name"] + ("_smoke" if smoke else ""), common

    return run_grid_and_report(grid, sweep_of, out, log_dir, args.timeout,
                               ["--reference", REFERENCE] + (["--wandb"] if args.wandb else []))


if __name__ == "__main__":
    sys.exit(main())
