"""The jobs of a sweep folder: finding and reading job folders, sorted into done, failed, incomplete
and (in the grid seen, with no folder) missing; and the CSV of their rows.

A job folder is one with ``metrics.json`` (done), ``error.txt`` (failed) or ``.hydra/`` (started,
neither: incomplete). Folders are walked without following links (a job's stage folders link
into the shared stage store) and hidden folders (``.submitit``, ``.hydra``) are not entered.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tgp.data import dataset_name
from tgp.io import atomic_write_bytes
from tgp.report.references import as_width, model_label
from tgp.report.scores import DENSE_METHOD

CSV_FIRST = ("status", "method", "sanity", "dataset", "model", "model_width", "teacher", "teacher_width", "seed",
             "retrain_kd", "target_sparsity", "measured_sparsity", "effective_sparsity", "top1_best_val", "top1_last",
             "top1_teacher", "top1_dense_student", "epochs_total", "seconds_total", "run_dir", "error")


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


#: method settings that make a named ablation of a method: (method, setting, value) → the report's method name
ABLATIONS = {("sdp", "cc_weight", 0.0): "sdp (λ=0)"}


def ablation_name(method, method_cfg) -> str | None:
    """The report's name of a method run as one of its :data:`ABLATIONS` (``sdp`` with
    ``method.cc_weight=0``: ``sdp (λ=0)``, plain gradual magnitude pruning), else None."""
    if not isinstance(method_cfg, dict):
        return None
    for (name, setting, value), label in ABLATIONS.items():
        try:
            if method == name and float(method_cfg.get(setting)) == value:
                return label
        except (TypeError, ValueError):
            continue
    return None


def add_ablation(row: dict, folder: Path) -> dict:
    """``row["method"]`` renamed to its ablation's name (:func:`ablation_name`) from the job's config, for
    rows written before the metrics row recorded the method's ``variant`` (which the report reads instead)."""
    if "variant" not in row and any(row.get("method") == name for name, _, _ in ABLATIONS):
        label = ablation_name(row["method"], _cfg_get(_read_config(folder, resolved_first=True), "method"))
        if label:
            row["method"] = label
    return row


def add_widths(row: dict, folder: Path) -> dict:
    """``model_width`` / ``teacher_width`` from the job's config when ``metrics.json`` lacks them."""
    if row.get("model_width") is None or (row.get("teacher") and row.get("teacher_width") is None):
        cfg = _read_config(folder, resolved_first=True)
        if row.get("model_width") is None:
            row["model_width"] = as_width(_cfg_get(cfg, "model", "width"))
        if row.get("teacher") and row.get("teacher_width") is None:
            row["teacher_width"] = as_width(_cfg_get(cfg, "teacher", "net", "width"))
    return row


def _job_settings(folder: Path) -> dict:
    """What a job was asked to do, from Hydra's ``.hydra/config.yaml`` (for jobs without metrics); its
    ``dataset`` is the one the run's metrics row would name (:func:`tgp.data.dataset_name`)."""
    cfg = _read_config(folder)
    if not cfg:
        return {}

    def get(*keys, default=None):
        return _cfg_get(cfg, *keys, default=default)

    sparsity = get("pruning", "sparsity")
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        pass
    method = get("method", "name")
    return {
        "method": ablation_name(method, get("method")) or method, "dataset": dataset_name(get("data")), "model": get("model", "name"),
        "model_width": as_width(get("model", "width")), "sanity": get("sanity") or get("pruning", "sanity") or None,
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
            jobs.ok.append(add_ablation(add_widths(row, folder), folder))
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
    at every target sparsity and seed seen there; the dense comparison method (``method=dense``, no
    pruning) only at its own sparsity 0, and the other methods not at that one.
    """
    seen = defaultdict(lambda: {"variants": set(), "sparsities": set(), "seeds": set(), "have": set()})
    for r in jobs.all_rows:
        if r.get("method") is None or r.get("target_sparsity") is None:
            continue
        dense = r["method"] == DENSE_METHOD
        g = seen[(r.get("dataset"), model_label(r.get("model"), r.get("model_width")), dense)]
        variant = (r["method"], bool(r.get("retrain_kd")), r.get("sanity") or None)
        g["variants"].add(variant)
        g["sparsities"].add(r["target_sparsity"])
        g["seeds"].add(r.get("seed"))
        g["have"].add((*variant, r["target_sparsity"], r.get("seed")))
    missing = []
    for (dataset, model, _), g in sorted(seen.items(), key=lambda kv: str(kv[0])):
        for method, kd, sanity in sorted(g["variants"], key=str):
            for s in sorted(g["sparsities"], key=lambda x: (not isinstance(x, (int, float)), x if isinstance(x, (int, float)) else 0, str(x))):
                for seed in sorted(g["seeds"], key=str):
                    if (method, kd, sanity, s, seed) not in g["have"]:
                        missing.append({"method": method, "sanity": sanity, "dataset": dataset, "model": model,
                                        "retrain_kd": kd, "target_sparsity": s, "seed": seed, "status": "missing"})
    return missing


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
