"""Collect the jobs of a sweep folder and aggregate them over seeds.

A job folder is one with ``metrics.json`` (done; damaged when a file it wrote no longer verifies),
``error.txt`` (failed) or ``.hydra/`` (started, neither: incomplete). Folders are walked without following links (a job's stage folders link
into the shared stage store) and hidden folders (``.submitit``, ``.hydra``) are not entered.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tgp.io import atomic_write_bytes
from tgp.report.stats import LEVEL, is_reference, paired_differences, summarize

log = logging.getLogger("tgp")

#: one row of the report per these (``model`` width-qualified, e.g. ``resnet18-w8``; see :func:`model_label`)
GROUP_KEYS = ("method", "sanity", "dataset", "model", "target_sparsity", "retrain_kd")
CSV_FIRST = ("status", "method", "sanity", "dataset", "model", "model_width", "teacher", "teacher_width", "seed",
             "retrain_kd", "target_sparsity", "measured_sparsity", "effective_sparsity", "top1_best_val", "top1_last",
             "top1_teacher", "top1_dense_student", "epochs_total", "seconds_total", "run_dir", "error")
#: the accuracy columns of the report and which checkpoint each one is
ACCURACY_METRICS = ("top1_best_val", "top1_last")
CHECKPOINTS = {
    "top1_best_val": "test top-1 of the checkpoint from the epoch with the best *validation* accuracy "
                     "(selected on the validation split, never on test)",
    "top1_last": "test top-1 after the last epoch",
    "top1_teacher": "the teacher's test top-1 after the last epoch of its stage",
    "top1_dense_student": "the dense student's test top-1 after the last epoch of its dense stage "
                          "(before pruning; the stage named in the row)",
}


@dataclass
class Jobs:
    ok: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)  # finished, but a file it wrote no longer verifies

    @property
    def all_rows(self) -> list[dict]:
        return [*self.ok, *self.failed, *self.incomplete, *self.damaged]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "(empty error.txt)"


def _error_summary(text: str) -> str:
    """The first line, or for a traceback its last line (the exception)."""
    first = _first_line(text)
    if first.startswith("Traceback"):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else first
    return first


def _read_config(folder: Path, resolved_first: bool = False) -> dict:
    """The job's config: ``<run_dir>/config.yaml`` (resolved, written by the pipeline) or Hydra's
    ``.hydra/config.yaml`` (written at launch); ``{}`` when neither is readable."""
    names = (folder / "config.yaml", folder / ".hydra" / "config.yaml")
    for path in (names if resolved_first else names[::-1]):
        if path.exists():
            try:
                cfg = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                continue
            if isinstance(cfg, dict):
                return cfg
    return {}


def _cfg_get(cfg: dict, *keys, default=None):
    node = cfg
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def _width(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def model_label(name, width) -> str | None:
    """``resnet18`` at width 8 → ``resnet18-w8`` (the width is what tells the tiny and the full model
    apart); the name alone when the width is unknown."""
    if name is None:
        return None
    width = _width(width)
    if width is None or re.search(r"-w\d+$", str(name)):
        return str(name)
    return f"{name}-w{width}"


from tgp.resources import config_dir

CONF_DIR = config_dir()


def standard_width(name) -> int | None:
    """The width of ``conf/model/<name>.yaml`` (the model's standard width, e.g. 64 for resnet18)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    try:
        return _width((yaml.safe_load(path.read_text()) or {}).get("width"))
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def same_model(published: str, model: str) -> bool:
    """Whether a published number for ``published`` (e.g. ``resnet18``, always at its standard width)
    is about our ``model`` (``resnet18`` with unknown width, or ``resnet18-w64``; never ``resnet18-w8``)."""
    return str(model) == str(published) or str(model) == model_label(published, standard_width(published))


def add_widths(row: dict, folder: Path) -> dict:
    """``model_width`` / ``teacher_width`` from the job's config when ``metrics.json`` lacks them."""
    if row.get("model_width") is None or (row.get("teacher") and row.get("teacher_width") is None):
        cfg = _read_config(folder, resolved_first=True)
        if row.get("model_width") is None:
            row["model_width"] = _width(_cfg_get(cfg, "model", "width"))
        if row.get("teacher") and row.get("teacher_width") is None:
            row["teacher_width"] = _width(_cfg_get(cfg, "teacher", "net", "width"))
    return row


def _job_settings(folder: Path) -> dict:
    """What a job was asked to do, from Hydra's ``.hydra/config.yaml`` (for jobs without metrics)."""
    cfg = _read_config(folder)
    if not cfg:
        return {}

    def get(*keys, default=None):
        return _cfg_get(cfg, *keys, default=default)

    target = str(get("data", "_target_", default="") or "")
    dataset = get("data", "name") or target.rsplit(".", 1)[-1].replace("DataModule", "").lower() or None
    dataset = {"tinyimagenet": "tiny_imagenet"}.get(dataset, dataset)
    sparsity = get("pruning", "sparsity")
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        pass
    return {
        "method": get("method", "name"), "dataset": dataset, "model": get("model", "name"),
        "model_width": _width(get("model", "width")), "sanity": get("sanity") or get("pruning", "sanity") or None,
        "seed": get("seed"), "retrain_kd": bool(get("retrain", "kd", default=True)), "target_sparsity": sparsity,
    }


def find_jobs(root: str | Path, verify: dict | None = None) -> Jobs:
    """Every job folder under ``root`` (recursively), sorted into ok / failed / incomplete / damaged.

    A finished job is ``damaged`` when a file it or one of its stages wrote no longer matches its
    record (:func:`tgp.integrity.run_problems`); ``verify`` caches the checked stage folders (shared
    by many jobs) across calls."""
    from tgp.integrity import run_problems

    root = Path(root)
    jobs = Jobs()
    verify = {} if verify is None else verify
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb"
                             and not os.path.islink(os.path.join(dirpath, d)))
        folder = Path(dirpath)
        has_metrics, has_error = "metrics.json" in filenames, "error.txt" in filenames
        is_job = has_metrics or has_error or (folder / ".hydra").is_dir()
        if not is_job:
            continue
        dirnames[:] = []  # a job's subfolders are its stages, not jobs
        error_newer = has_error and (
            not has_metrics or (folder / "error.txt").stat().st_mtime > (folder / "metrics.json").stat().st_mtime)
        if has_metrics and not error_newer:
            problems, _ = run_problems(folder, verify)
            if problems:
                path, reason = problems[0]
                jobs.damaged.append({**_job_settings(folder), "status": "damaged", "error": f"{path}: {reason}",
                                     "run_dir": str(folder)})
                continue
            row = json.loads((folder / "metrics.json").read_text())  # run_problems parsed it
            row.setdefault("status", "ok")
            row["run_dir"] = str(folder)
            jobs.ok.append(add_widths(row, folder))
        elif has_error:
            text = (folder / "error.txt").read_text(errors="replace")
            jobs.failed.append({**_job_settings(folder), "status": "failed", "error": _error_summary(text),
                                "run_dir": str(folder)})
        else:
            jobs.incomplete.append({**_job_settings(folder), "status": "incomplete", "run_dir": str(folder)})
    jobs.missing = expected_but_missing(jobs)
    return jobs


def expected_but_missing(jobs: Jobs) -> list[dict]:
    """Cells of the grid seen in this folder with no job folder at all.

    The grid is inferred: within each (dataset, model), every (method, retrain_kd) seen is expected
    at every target sparsity and seed seen there.
    """
    seen = defaultdict(lambda: {"variants": set(), "sparsities": set(), "seeds": set(), "have": set()})
    for r in jobs.all_rows:
        if r.get("method") is None or r.get("target_sparsity") is None:
            continue
        g = seen[(r.get("dataset"), model_label(r.get("model"), r.get("model_width")))]
        variant = (r["method"], bool(r.get("retrain_kd")), r.get("sanity") or None)
        g["variants"].add(variant)
        g["sparsities"].add(r["target_sparsity"])
        g["seeds"].add(r.get("seed"))
        g["have"].add((*variant, r["target_sparsity"], r.get("seed")))
    missing = []
    for (dataset, model), g in sorted(seen.items(), key=lambda kv: str(kv[0])):
        for method, kd, sanity in sorted(g["variants"], key=str):
            for s in sorted(g["sparsities"], key=lambda x: (not isinstance(x, (int, float)), x if isinstance(x, (int, float)) else 0, str(x))):
                for seed in sorted(g["seeds"], key=str):
                    if (method, kd, sanity, s, seed) not in g["have"]:
                        missing.append({"method": method, "sanity": sanity, "dataset": dataset, "model": model,
                                        "retrain_kd": kd, "target_sparsity": s, "seed": seed, "status": "missing"})
    return missing


# -- aggregation ---------------------------------------------------------------------------------
AUTO = "auto"
#: per-job numbers summarized over seeds in every method row (besides the accuracies)
OTHER_METRICS = ("measured_sparsity", "effective_sparsity", "effective_sparsity_dense", "flops_nonzero",
                 "flops_effective", "top1_teacher", "top1_dense_student", "epochs_total", "seconds_total",
                 "cost_flops", "student_epochs_equiv")
KIND_ORDER = {"teacher": 0, "dense": 1, "method": 2}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def job_cost_flops(row: dict) -> float | None:
    """One job's training FLOPs as if it ran alone: its own stages plus the shared ones it used
    (None when not recorded or when a stage it used is unmeasured)."""
    own, shared = _number(row.get("cost_flops_own")), _number(row.get("cost_flops_shared"))
    return None if own is None or shared is None else own + shared


def job_device(row: dict) -> str | None:
    """The device the job's seconds were measured on."""
    return row.get("cost_device") or row.get("device") or None


def normalize(row: dict) -> dict:
    """A copy of a metrics row as the report groups it: width-qualified model (and teacher) names,
    ``sanity`` None unless set, ``cost_flops`` per job."""
    r = dict(row)
    r["model"] = model_label(row.get("model"), row.get("model_width"))
    if row.get("teacher"):
        r["teacher"] = model_label(row.get("teacher"), row.get("teacher_width"))
    r["sanity"] = row.get("sanity") or None
    r["cost_flops"] = job_cost_flops(row)
    return r


def default_reference(rows: list[dict]) -> str | None:
    """``tgp`` when the rows hold tgp runs (the paper's method), else None (no paired differences)."""
    return "tgp" if any(r.get("method") == "tgp" and not r.get("sanity") for r in rows) else None


def _dense_stage(row: dict) -> str | None:
    if row.get("dense_stage"):
        return str(row["dense_stage"])
    from tgp.methods import load_all

    spec = load_all().get(row.get("method"))
    return spec.dense_stage if spec is not None else None


def _summary_fields(g: dict, metric: str, values, ci: bool) -> None:
    s = summarize(values)
    g[f"{metric}_mean"], g[f"{metric}_std"] = s.mean, s.std
    if ci:
        g[f"{metric}_lo"], g[f"{metric}_hi"], g[f"{metric}_n"] = s.lo, s.hi, s.n


def _per_seed_mean(rows: list[dict], field: str) -> list[float]:
    """One value per seed (a shared stage's accuracy occurs in every job of that seed: counted once)."""
    by_seed: dict = defaultdict(list)
    for r in rows:
        v = _number(r.get(field))
        if v is not None:
            by_seed[r.get("seed")].append(v)
    return [math.fsum(v) / len(v) for _, v in sorted(by_seed.items(), key=lambda kv: str(kv[0]))]


def _baseline_rows(rows: list[dict]) -> list[dict]:
    """The teacher and the dense student(s) as rows of their own, per (dataset, model): their
    accuracy (last epoch of their stage) over seeds, each seed counted once."""
    out = []
    teachers, dense = defaultdict(list), defaultdict(list)
    for r in rows:
        if r.get("top1_teacher") is not None:
            teachers[(r.get("dataset"), r.get("model"), r.get("teacher"))].append(r)
        if r.get("top1_dense_student") is not None:
            dense[(r.get("dataset"), r.get("model"), _dense_stage(r))].append(r)
    for kind, table, metric in (("teacher", teachers, "top1_teacher"), ("dense", dense, "top1_dense_student")):
        for (dataset, model, what), rs in table.items():
            vals = _per_seed_mean(rs, metric)
            label = (f"teacher {what or '?'}" if kind == "teacher"
                     else f"dense student ({what})" if what else "dense student")
            g = {"kind": kind, "method": label, "label": label, "variant": label, "sanity": None, "dataset": dataset,
                 "model": model, "teacher": what if kind == "teacher" else None,
                 "dense_stage": what if kind == "dense" else None, "target_sparsity": 0.0, "retrain_kd": None,
                 "n": len(vals), "seeds": sorted({r.get("seed") for r in rs}, key=str), "reference": None}
            _summary_fields(g, "top1_last", vals, ci=True)  # the last epoch of its stage
            _summary_fields(g, "top1_best_val", [], ci=True)  # not recorded for these stages
            for m in OTHER_METRICS:
                g[f"{m}_mean"] = g[f"{m}_std"] = None
            g["measured_sparsity_mean"] = g["effective_sparsity_mean"] = 0.0
            out.append(g)
    return out


def aggregate(rows: list[dict], reference: str | None = AUTO) -> list[dict]:
    """The report's rows, from the metrics rows of finished jobs.

    * ``kind="method"``: one per (method, sanity, dataset, model, target_sparsity, retrain_kd):
      ``<metric>_mean/_std`` over seeds, and for the accuracies the 95 % CI ``_lo/_hi`` and ``_n``
      (see :mod:`tgp.report.stats`); with a ``reference`` method, ``diff_<metric>_mean/_lo/_hi/_n``
      and ``diff_<metric>_mark`` (``*`` when the CI excludes 0), the paired difference to the
      reference's run of the same cell and seed (in accuracy units, positive = better than it).
    * ``kind="teacher"`` / ``kind="dense"``: the teacher and the dense student per (dataset, model),
      sparsity 0, their last-epoch accuracy over seeds in ``top1_last_*``.

    ``reference="auto"``: ``tgp`` when present; None: no differences.
    """
    rows = [normalize(r) for r in rows]
    if reference == AUTO:
        reference = default_reference(rows)
    if reference is not None and not any(is_reference(r, reference) for r in rows):
        log.warning("reference method %r has no finished job here: no paired differences", reference)
        reference = None
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in GROUP_KEYS)].append(r)
    diffs = {m: paired_differences(rows, reference, m, GROUP_KEYS) for m in ACCURACY_METRICS} if reference else {}
    out = []
    for key, rs in groups.items():
        g = dict(zip(GROUP_KEYS, key))
        g["kind"] = "method"
        g["label"] = method_label(g["method"], g["sanity"])
        g["variant"] = variant_label(g["method"], g["retrain_kd"], g["sanity"])
        g["teacher"] = next((r["teacher"] for r in rs if r.get("teacher")), None)
        for metric in ACCURACY_METRICS:
            _summary_fields(g, metric, [r.get(metric) for r in rs], ci=True)
        for metric in OTHER_METRICS:
            _summary_fields(g, metric, [r.get(metric) for r in rs], ci=False)
        g["n"] = len(rs)
        g["seeds"] = sorted({r.get("seed") for r in rs}, key=str)
        devices = sorted({str(job_device(r)) for r in rs if job_device(r)})
        g["device"] = ", ".join(devices) or None
        g["reference"] = reference
        g["is_reference"] = reference is not None and is_reference(g, reference)
        for metric, by_group in diffs.items():
            d = by_group.get(key)
            g[f"diff_{metric}_mean"] = d.mean if d else None
            g[f"diff_{metric}_lo"] = d.lo if d else None
            g[f"diff_{metric}_hi"] = d.hi if d else None
            g[f"diff_{metric}_n"] = d.n if d else 0
            g[f"diff_{metric}_mark"] = d.mark if d else ""
        out.append(g)
    out += _baseline_rows(rows)

    def order(g):
        ts = g["target_sparsity"] if isinstance(g["target_sparsity"], (int, float)) else float("inf")
        return (str(g["dataset"]), str(g["model"]), KIND_ORDER[g["kind"]], ts, g["retrain_kd"] is False,
                g["method"] != reference, str(g["method"]), str(g["sanity"] or ""), str(g.get("label")))

    out.sort(key=order)
    return out


def method_rows(groups: list[dict]) -> list[dict]:
    return [g for g in groups if g.get("kind", "method") == "method"]


def method_label(method, sanity=None) -> str:
    """``tgp``; a sanity check of it: ``tgp + layer_shuffle``."""
    return f"{method} + {sanity}" if sanity else str(method)


def variant_label(method: str, retrain_kd: bool, sanity: str | None = None) -> str:
    """``tgp (KD)`` / ``tgp (CE)`` for methods with a teacher (retraining with or without KD are two
    variants); other methods by name alone; a sanity check after its method: ``tgp (KD) + reinit``."""
    from tgp.methods import load_all

    spec = load_all().get(method)
    label = f"{method} ({'KD' if retrain_kd else 'CE'})" if spec is not None and spec.uses_teacher else str(method)
    return f"{label} + {sanity}" if sanity else label


# -- training cost per method --------------------------------------------------------------------
COST_BY = ("dataset", "model", "method", "sanity", "retrain_kd")


def _cost_module():
    try:
        from tgp.report import cost
    except ImportError:
        return None
    return cost if hasattr(cost, "cost_by_method") and hasattr(cost, "sweep_total") else None


def method_costs(rows: list[dict]) -> tuple[list[dict], str]:
    """Training cost per method variant (per dataset and model), each stage counted once, from
    ``tgp.report.cost.cost_by_method`` (per seed: the distinct stages the variant's jobs used, summed
    once; then the mean over seeds), plus the whole sweep as the last row (``method`` = None).
    ``([], why)`` when that module or the jobs' cost fields are missing."""
    cost = _cost_module()
    if cost is None:
        return [], "no cost module (tgp.report.cost) in this checkout"
    rows = [normalize(r) for r in rows if r.get("method") is not None]
    if not any(r.get("stage_keys") for r in rows):
        return [], "no job recorded its cost (stage_keys, train_flops_<stage>) in metrics.json"
    out = []
    for c in cost.cost_by_method(rows, by=COST_BY):
        c = dict(c)
        c["label"] = variant_label(c["method"], c["retrain_kd"], c.get("sanity"))
        out.append(c)
    out.append({**cost.sweep_total(rows), "label": "whole sweep (all seeds), each stage once", "method": None, "dataset": None,
                "model": None, "seeds": None})
    return out, ("tgp.report.cost: per seed, every distinct stage (by key) a variant's jobs used, summed once; "
                 "the mean over seeds. A stage shared by several methods (the teacher) is in each of their "
                 "totals in full and once in the sweep total; *exclusive* is the part no other variant used")


# -- reference numbers ---------------------------------------------------------------------------
def load_references(folder: str | Path | None) -> list[dict]:
    """Entries of ``experiments/reference/*.yaml`` that carry a number and a citation.

    Entries with ``top1: null`` are placeholders and skipped; a number without an arXiv id and a
    table is skipped with a warning (we only draw numbers we can point to).
    """
    if folder is None:
        return []
    folder = Path(folder)
    refs = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            log.warning("reference file %s is not valid YAML (%s): skipped", path, e)
            continue
        source = doc.get("source") or path.stem
        for e in doc.get("entries") or []:
            if not isinstance(e, dict) or e.get("top1") is None:
                continue
            cite = e.get("citation") or {}
            if not cite.get("arxiv") or not cite.get("table"):
                log.warning("%s: entry %s has a number but no citation (arxiv + table): skipped", path.name, e)
                continue
            top1 = float(e["top1"])
            refs.append({
                "source": source, "method": str(e["method"]), "dataset": str(e["dataset"]), "model": str(e["model"]),
                "sparsity": float(e["sparsity"]), "top1": top1 / 100 if top1 > 1 else top1,  # percent or fraction
                "arxiv": str(cite["arxiv"]), "table": str(cite["table"]),
            })
    return refs


# -- outputs -------------------------------------------------------------------------------------
def _pct(mean, std=None, digits=2) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.{digits}f}" if std is None else f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _ci(lo, hi, digits=2) -> str:
    return "—" if lo is None else f"[{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def _signed(x, digits=2) -> str:
    return f"{100 * x:+.{digits}f}".replace("-", "−")


def _diff_cell(g: dict, metric: str) -> str:
    """``+1.23 [−0.50, +2.96] *`` (percentage points, paired over matched seeds)."""
    if g.get("kind", "method") != "method" or not g.get("reference"):
        return "—"
    if g.get("is_reference"):
        return "reference"
    n = g.get(f"diff_{metric}_n") or 0
    if n == 0:
        return "— (no matched seed)"
    mean, lo, hi = g[f"diff_{metric}_mean"], g[f"diff_{metric}_lo"], g[f"diff_{metric}_hi"]
    if lo is None:
        return f"{_signed(mean)} (1 pair, no CI)"
    cell = f"{_signed(mean)} [{_signed(lo)}, {_signed(hi)}]"
    if g.get(f"diff_{metric}_mark"):
        cell += f" {g[f'diff_{metric}_mark']}"
    if n < g["n"]:
        cell += f" ({n} pairs)"
    return cell


def _flops(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def _sparsity(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) else ("—" if x is None else str(x))


def markdown_table(groups: list[dict]) -> str:
    """Teacher, dense student and method rows per (dataset, model); see :func:`markdown_report` for
    what each column is."""
    ref = next((g["reference"] for g in groups if g.get("reference")), None)
    vs = f"Δ vs {ref}" if ref else "Δ vs reference"
    header = ["method", "retrain KD", "dataset", "model", "target sparsity %", "measured sparsity %",
              "effective sparsity %", "top-1 best-val % (mean ± std)", "best-val 95 % CI", f"{vs}, best-val (pp, 95 % CI)",
              "top-1 last % (mean ± std)", "last 95 % CI", f"{vs}, last (pp, 95 % CI)", "train FLOPs / job",
              "seconds / job (device)", "epochs / job", "n seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for g in groups:
        kind = g.get("kind", "method")
        secs = g.get("seconds_total_mean")
        secs = "—" if secs is None else f"{secs:.1f}" + (f" ({g['device']})" if g.get("device") else "")
        epochs = g.get("epochs_total_mean")
        cells = [
            g.get("label") or method_label(g["method"], g.get("sanity")),
            "—" if kind != "method" else ("yes" if g["retrain_kd"] else "no"),
            str(g["dataset"]), str(g["model"]),
            "0 (dense)" if kind != "method" else _sparsity(g["target_sparsity"]),
            _sparsity(g.get("measured_sparsity_mean")), _sparsity(g.get("effective_sparsity_mean")),
            _pct(g["top1_best_val_mean"], g["top1_best_val_std"]), _ci(g.get("top1_best_val_lo"), g.get("top1_best_val_hi")),
            _diff_cell(g, "top1_best_val"),
            _pct(g["top1_last_mean"], g["top1_last_std"]), _ci(g.get("top1_last_lo"), g.get("top1_last_hi")),
            _diff_cell(g, "top1_last"),
            _flops(g.get("cost_flops_mean")), secs, "—" if epochs is None else f"{epochs:.0f}", str(g["n"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(costs: list[dict]) -> str:
    header = ["method", "dataset", "model", "seeds", "jobs", "stages", "training FLOPs (each stage once)",
              "exclusive FLOPs", "teacher FLOPs", "seconds (secondary)", "device", "unmeasured stages"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for c in costs:
        secs = c.get("seconds")
        cells = [c.get("label") or str(c.get("method")), str(c.get("dataset") or "—"), str(c.get("model") or "—"),
                 "—" if c.get("seeds") is None else str(c["seeds"]), str(c.get("jobs", "—")),
                 "—" if c.get("stages") is None else f"{c['stages']:g}", _flops(c.get("flops")),
                 _flops(c.get("flops_exclusive")), _flops(c.get("flops_teacher")),
                 "—" if secs is None else f"{secs:.1f}", c.get("seconds_device") or "not recorded",
                 ", ".join(c.get("unmeasured") or []) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(r: dict) -> str:
    s = r.get("target_sparsity")
    model = model_label(r.get("model"), r.get("model_width"))
    return (f"{method_label(r.get('method'), r.get('sanity'))} / {r.get('dataset')} / {model} / sparsity {s} / "
            f"{'KD' if r.get('retrain_kd') else 'CE'} retrain / seed {r.get('seed')}")


def _legend(groups: list[dict]) -> list[str]:
    ref = next((g["reference"] for g in groups if g.get("reference")), None)
    level = f"{100 * LEVEL:.0f} %"
    out = ["**Columns.** Accuracies are test top-1 in %: mean ± sample std over seeds, and the "
           f"{level} confidence interval of the mean, `mean ± t(0.975, n−1)·std/√n` (Student t over seeds; "
           "none from one seed).",
           f"- *best-val*: {CHECKPOINTS['top1_best_val']}.",
           f"- *last*: {CHECKPOINTS['top1_last']}.",
           f"- *teacher* rows: {CHECKPOINTS['top1_teacher']}; *dense student* rows: "
           f"{CHECKPOINTS['top1_dense_student']}. Both in the *last* column, each seed counted once.",
           "- *target sparsity*: the nominal fraction of prunable weights removed; *measured*: read off the "
           "weights; *effective*: also counting weights on no input→output path (Vysogorets & Kempe 2023).",
           "- *train FLOPs / job*: the job's training FLOPs with its shared stages (teacher, dense pretraining) "
           "included, as if it ran alone; the cost per method, each shared stage once, is below. "
           "*seconds / job* is wall time on the device named beside it (secondary: it depends on the hardware)."]
    if ref:
        out.append(f"- *Δ vs {ref}*: paired difference to {ref} in percentage points, over the seeds both ran "
                   "in the same cell (dataset, model, target sparsity, retrain KD): the mean of the per-seed "
                   f"differences and its {level} CI; `*` marks an interval that excludes 0. A sanity-check row "
                   "(`method + variant`) is that method with its score replaced as named; a score that does not "
                   "beat its own layer shuffle only chose per-layer densities.")
    else:
        out.append("- no paired differences (no reference method among the finished jobs; `--reference METHOD`).")
    few = sorted({g["label"] for g in method_rows(groups) if g["n"] < 3})
    if few:
        out.append(f"- fewer than 3 seeds (no claim should rest on these): {', '.join(few)}.")
    return out


def markdown_report(root: Path, jobs: Jobs, groups: list[dict], refs: list[dict], plots: list[Path],
                    costs: tuple[list[dict], str] | None = None) -> str:
    out = [f"# tgp report: {root}", "",
           f"{len(jobs.ok)} jobs done, {len(jobs.failed)} failed, {len(jobs.incomplete)} incomplete, "
           f"{len(jobs.missing)} missing" + (f", {len(jobs.damaged)} damaged." if jobs.damaged else "."), ""]
    if groups:
        out += [markdown_table(groups), "", *_legend(groups), ""]
    else:
        out += ["_no finished job_", ""]
    if costs is None:
        costs = method_costs(jobs.ok)
    cost_rows, source = costs
    out += ["## Training cost per method", ""]
    out += ([cost_table(cost_rows), "", f"Method rows: per seed, mean over seeds; the last row: all seeds. Source: {source}.", ""] if cost_rows
            else [f"_{source}_", ""])
    if refs:
        out += ["## Published reference numbers (drawn dashed in the plots)", "",
                "| source | method | dataset | model | sparsity % | top-1 % | arXiv | table |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['source']} | {r['method']} | {r['dataset']} | {r['model']} | {100 * r['sparsity']:.2f} | "
                f"{100 * r['top1']:.2f} | {r['arxiv']} | {r['table']} |" for r in refs]
        out.append("")
    out += ["## Failed jobs", ""]
    out += [f"- {_describe(r)}: `{r.get('error')}` ({r.get('run_dir')})" for r in jobs.failed] or ["none"]
    out.append("")
    if jobs.damaged:
        out += ["## Damaged jobs (finished, but a file they wrote no longer matches its record; re-run to recompute)", ""]
        out += [f"- {_describe(r)}: `{r.get('error')}` ({r.get('run_dir')})" for r in jobs.damaged]
        out.append("")
    if jobs.incomplete:
        out += ["## Incomplete jobs (started, neither metrics.json nor error.txt: running or killed)", ""]
        out += [f"- {_describe(r)} ({r.get('run_dir')})" for r in jobs.incomplete]
        out.append("")
    if jobs.missing:
        out += ["## Missing jobs (in the grid seen in this folder, no job folder)", ""]
        out += [f"- {_describe(r)}" for r in jobs.missing]
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(out)


def write_csv(rows: list[dict], path: Path) -> None:
    keys = list(CSV_FIRST)
    for r in rows:
        keys += [k for k in r if k not in keys]
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue().encode()))
