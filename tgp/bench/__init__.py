"""Benchmarks (``make bench``): what a recipe costs on this device, measured, with ratios from one run.

For each recipe (an experiment file: dataset, student, teacher, batch, precision, data path) it
times, on the current device (see :mod:`tgp.bench.steps` for how each is taken):

=================  =======================================================================
model              the student's forward + backward + SGD step on a resident batch (the ceiling)
dense / kd         the dense CE step / the KD-pretraining step (teacher forward + α·CA-KLD + (1−α)·CE)
masked / masked_kd the sparse retraining step (MaskEnforcer) without / with KD
teacher            the teacher stage's CE step
eval               the forward of validation and test (student, teacher)
data               the recipe's training data path alone, images delivered on the device
epoch              one whole epoch through Lightning (data path + validation), after a warm one
prune              the prune stage's teacher-guided scores + the global threshold
=================  =======================================================================

Text recipes (a text datamodule, e.g. ``experiment=demo_text``) are timed on their own token batches in
tokens per second, with the data path's padding (:mod:`tgp.bench.text`), into the same file.

Ratios: ``epoch / model`` (images/s of a whole epoch over the model alone; goal ≥ 0.85 on a GPU)
and ``masked / dense`` step (goal ≤ 1.05). From these it derives each stage's seconds per epoch
at the recipe's full dataset size, which ``experiments/reproduce_table2.py`` reads instead of
assumed figures. Results are merged into ``outputs/bench/<device>.json`` (one file per device
name, one entry per recipe and mode; ``--out`` elsewhere).

    python -m tgp.bench                                   # the Table 2 recipes and the text demo's, eager (+ compiled on a GPU)
    python -m tgp.bench --recipes demo_text               # the tiny BERT on roleswap (tokens/s, padding)
    python -m tgp.bench --recipes cifar10_resnet18 --batch 512 --compile both
    python -m tgp.bench --recipes smoke --steps 2         # seconds, on the bundled digits recipe
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shlex
import statistics
import sys
import warnings
from pathlib import Path

import torch

from tgp.bench.recipes import TABLE2_RECIPES, Recipe, compose_experiment, load_recipe
from tgp.bench.steps import STEP_KINDS, Bench, median_of
from tgp.bench.text import is_text, measure_text, print_text_table
from tgp.errors import TGPError
from tgp.io import atomic_save_json, read_json
from tgp.resources import config_dir

GOAL_EPOCH_OVER_MODEL = 0.85  # on a GPU
# The text recipes of a default run: the offline demo's tiny BERT on a CPU, BERT-base on GLUE on a GPU (where its
# experiment file, data and checkpoint are there; a default recipe that cannot run is skipped with a note).
TEXT_RECIPES = {"cpu": ("demo_text",), "cuda": ("glue_bert_base",)}
GOAL_MASKED_OVER_DENSE = 1.05


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def default_path(device_label: str, root: str | Path = "outputs") -> Path:
    """``outputs/bench/<device>.json``: the file ``reproduce_table2.py`` looks for on this device."""
    return Path(root) / "bench" / (re.sub(r"[^a-z0-9]+", "_", device_label.lower()).strip("_") + ".json")


def measure(recipe: Recipe, device: torch.device, *, compile_mode: str | None, steps: int, warmup: int,
            repeats: int, epoch_batches: int | None, data_images: int, log=print) -> dict:
    """All figures of ``recipe`` on ``device`` in one mode (eager or compiled)."""
    bench = Bench(recipe, device, compile_mode=compile_mode)
    b = recipe.batch
    fig: dict = {}
    log(f"  {recipe.name} [{'compiled ' + compile_mode if compile_mode else 'eager'}]: model and steps", end="", flush=True)
    # Repeats are the outer loop, so drift (clock, temperature, other processes) hits every kind
    # alike; a ratio is the median of the per-repeat ratios of neighbouring timings.
    times: dict[str, list[float]] = {k: [] for k in ("model", *STEP_KINDS)}
    for _ in range(repeats):
        times["model"].append(bench.model_step_s(steps, warmup))
        for kind in STEP_KINDS:
            times[kind].append(bench.step_s(kind, steps, warmup))
    for kind, ts in times.items():
        fig[f"{kind}_step_s"] = statistics.median(ts)
    fig["masked_over_dense"] = statistics.median(m / d for m, d in zip(times["masked"], times["dense"]))
    fig["masked_kd_over_kd"] = statistics.median(m / d for m, d in zip(times["masked_kd"], times["kd"]))
    log(", eval", end="", flush=True)
    fig["eval_img_s"] = recipe.eval_batch / median_of(lambda: bench.eval_s(bench.student, steps, warmup), repeats)
    fig["teacher_eval_img_s"] = recipe.eval_batch / median_of(lambda: bench.eval_s(bench.teacher, steps, warmup), repeats)
    log(", data", end="", flush=True)
    fig["data_img_s"] = bench.data_img_s(min(data_images, recipe.n_train))
    log(", epoch", end="", flush=True)
    n_epoch = recipe.n_train if epoch_batches is None else min(recipe.n_train, epoch_batches * b)
    n_val = max(recipe.eval_batch, round(n_epoch * recipe.n_val / max(recipe.n_train, 1)))
    fig["epoch"] = bench.epoch(n_epoch, n_val)
    log(", prune", flush=True)
    score_batches = int(recipe.cfg.pruning.score_batches)
    fig["prune_s"] = bench.prune_s(score_batches)
    fig["score_batches"] = score_batches
    return derive(recipe, fig)


def derive(recipe: Recipe, fig: dict) -> dict:
    """Images/s, the two ratios and each stage's seconds per epoch at the recipe's full size.

    A stage's epoch is ``n_batches · (step + o) + n_val / eval`` where ``o`` is what the measured
    epoch spent per batch beyond the dense step (data path, Lightning's loop, callbacks): the same
    data path feeds every stage, so it is added, not scaled."""
    b = recipe.batch
    ep = fig["epoch"]
    batches = ep["train_images"] / b
    overhead = max(0.0, ep["train_s"] / batches - fig["dense_step_s"])
    n_batches = recipe.n_train // b  # drop_last on the training loader
    student_val = recipe.n_val / fig["eval_img_s"]
    steps = {"teacher": "teacher", "kd_pretrain": "kd", "dense": "dense", "retrain_kd": "masked_kd", "retrain_ce": "masked"}
    fig["stage_epoch_s"] = {
        stage: n_batches * (fig[f"{kind}_step_s"] + overhead)
        + (recipe.n_val / fig["teacher_eval_img_s"] if stage == "teacher" else student_val)
        for stage, kind in steps.items()
    }
    fig["test_eval_s"] = recipe.n_test / fig["eval_img_s"]
    fig["overhead_per_batch_s"] = overhead
    fig["model_img_s"] = b / fig["model_step_s"]
    for kind in STEP_KINDS:
        fig[f"{kind}_img_s"] = b / fig[f"{kind}_step_s"]
    fig["epoch_over_model"] = ep["img_s"] / fig["model_img_s"]
    return fig


def recipe_header(recipe: Recipe, device: torch.device) -> dict:
    return {
        "dataset": recipe.dataset, "student": recipe.student, "teacher": recipe.teacher, "batch": recipe.batch,
        "eval_batch": recipe.eval_batch, "image": recipe.image, "classes": recipe.classes,
        "precision": recipe.precision(device), "channels_last": recipe.channels_last(device), "loader": recipe.loader,
        "n_train": recipe.n_train, "n_val": recipe.n_val, "n_test": recipe.n_test, "sizes_from": recipe.sizes_from,
        "compile_in_recipe": bool(recipe.cfg.get("compile", False)), "modes": {},
    }


def print_table(doc: dict, names: list[str]) -> None:
    rows = []
    for name in names:
        entry = doc["recipes"][name]
        if entry.get("modality") == "text":
            continue
        for mode, f in entry["modes"].items():
            rows.append((f"{name} b{entry['batch']}", mode, f"{f['model_img_s']:,.0f}", f"{f['dense_img_s']:,.0f}",
                         f"{1e3 * f['masked_step_s']:.1f}/{1e3 * f['dense_step_s']:.1f} = {f['masked_over_dense']:.3f}",
                         f"{1e3 * f['masked_kd_step_s']:.1f}/{1e3 * f['kd_step_s']:.1f} = {f['masked_kd_over_kd']:.3f}",
                         f"{f['data_img_s']:,.0f}", f"{f['epoch']['img_s']:,.0f}", f"{f['epoch_over_model']:.2f}",
                         f"{f['prune_s']:.2f}"))
    head = ("recipe", "mode", "model img/s", "dense step img/s", "masked/dense ms", "masked+KD/KD ms",
            "data img/s", "epoch img/s", "epoch/model", "prune s")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"device {doc['device']} (torch {doc['torch']})")
    if not rows:  # text recipes only (their own table follows)
        return
    for r in [head, *rows]:
        print("  " + "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"  goals: epoch/model >= {GOAL_EPOCH_OVER_MODEL} on a GPU, masked/dense <= {GOAL_MASKED_OVER_DENSE}")


def main(argv=None) -> dict:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(prog="python -m tgp.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=None, help="comma list of experiment names (default: the Table 2 recipes "
                    "and the text recipe of this device kind)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's on a GPU, 16 on a CPU)")
    ap.add_argument("--compile", choices=("eager", "compiled", "both"), default="both" if cuda else "eager")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode: default | reduce-overhead | max-autotune (default: the recipe's compile_mode)")
    ap.add_argument("--steps", type=int, default=30 if cuda else 3, help="timed steps per figure")
    ap.add_argument("--warmup", type=int, default=5 if cuda else 1)
    ap.add_argument("--repeats", type=int, default=3, help="median over this many timings (interleaved)")
    ap.add_argument("--epoch-batches", type=int, default=None if cuda else 4,
                    help="batches of the timed epoch (default: the whole training split on a GPU, 4 on a CPU)")
    ap.add_argument("--data-images", type=int, default=20_000 if cuda else 256)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--out", default=None, help="JSON file (default: outputs/bench/<device>.json, merged)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override for every recipe, e.g. data.loader=torch (repeatable)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    known = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    defaults = args.recipes is None
    names = ([*TABLE2_RECIPES, *(n for n in TEXT_RECIPES[device.type] if n in known)] if defaults
             else [n for n in args.recipes.split(",") if n])
    unknown = [n for n in names if n not in known]
    if unknown:  # one paragraph, not Hydra's MissingConfigException traceback
        ap.error(f"--recipes {','.join(unknown)}: no such experiment file (conf/experiment/). "
                 f"Fix: use one or more of {', '.join(known)}.")
    batch = args.batch or (None if device.type == "cuda" else 16)
    label = device_name(device)
    out = Path(args.out) if args.out else default_path(label)
    doc = read_json(out) if out.is_file() else {}
    if doc.get("device") not in (None, label):
        doc = {}  # another device's figures are not merged with these
    doc.update({"schema": 1, "device": label, "device_type": device.type, "torch": torch.__version__,
                "cpu_cores": os.cpu_count()})
    doc.setdefault("recipes", {})
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    modes = {"eager": [None], "compiled": ["c"], "both": [None, "c"]}[args.compile]
    print(f"tgp bench on {label}: {', '.join(names)}", flush=True)
    done = []
    for name in names:
        cfg = compose_experiment(name, args.override)
        try:
            entry = (measure_text_recipe(name, cfg, device, modes, args) if is_text(cfg)
                     else measure_image_recipe(name, device, modes, args, batch))
        except TGPError as e:
            if not defaults:
                ap.exit(2, f"tgp-bench: error: recipe {name}: {e}\n")
            print(f"  {name}: skipped ({e})", flush=True)
            continue
        entry["measured"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        entry["command"] = shlex.join([sys.executable, "-m", "tgp.bench", *(argv if argv is not None else sys.argv[1:])])
        doc["recipes"][name] = entry
        done.append(name)
        atomic_save_json(doc, out)  # after each recipe: an interrupted bench keeps what it measured
    print_table(doc, done)
    print_text_table(doc, done)
    print(f"written: {out}")
    return doc


def _compile_mode(mode, args, cfg) -> str | None:
    return (args.compile_mode or str(cfg.get("compile_mode", None) or "default")) if mode else None


def measure_image_recipe(name: str, device: torch.device, modes, args, batch) -> dict:
    recipe = load_recipe(name, batch=batch, overrides=args.override)
    entry = recipe_header(recipe, device)
    for mode in modes:
        cmode = _compile_mode(mode, args, recipe.cfg)
        fig = measure(recipe, device, compile_mode=cmode, steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                      epoch_batches=args.epoch_batches, data_images=args.data_images)
        entry["modes"]["compiled" if cmode else "eager"] = {"compile_mode": cmode, **fig}
    return entry


def measure_text_recipe(name: str, cfg, device: torch.device, modes, args) -> dict:
    """A text recipe at its own batch size (``--batch`` only when given), on its own data."""
    entry = None
    for mode in modes:
        cmode = _compile_mode(mode, args, cfg)
        header, fig = measure_text(cfg, device, compile_mode=cmode, steps=args.steps, warmup=args.warmup,
                                   repeats=args.repeats, batch=args.batch, name=name)
        entry = entry or header
        entry["modes"]["compiled" if cmode else "eager"] = {"compile_mode": cmode, **fig}
    return entry
