"""Collect the jobs of a sweep folder and aggregate them over seeds.

A job folder is one with ``metrics.json`` (done), ``error.txt`` (failed) or ``.hydra/`` (started,
neither: incomplete). Folders are walked without following links (a job's stage folders link
into the shared stage store) and hidden folders (``.submitit``, ``.hydra``) are not entered.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tgp.io import atomic_write_bytes

log = logging.getLogger("tgp")

GROUP_KEYS = ("method", "dataset", "model", "target_sparsity", "retrain_kd")
CSV_FIRST = ("status", "method", "dataset", "model", "teacher", "seed", "retrain_kd", "target_sparsity",
             "measured_sparsity", "top1_best_val", "top1_last", "epochs_total", "seconds_total", "run_dir", "error")


@dataclass
class Jobs:
    ok: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)

    @property
    def all_rows(self) -> list[dict]:
        return [*self.ok, *self.failed, *self.incomplete]


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


def _job_settings(folder: Path) -> dict:
    """What a job was asked to do, from Hydra's ``.hydra/config.yaml`` (for jobs without metrics)."""
    path = folder / ".hydra" / "config.yaml"
    if not path.exists():
        path = folder / "config.yaml"
    if not path.exists():
        return {}
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}

    def get(*keys, default=None):
        node = cfg
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

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
        "seed": get("seed"), "retrain_kd": bool(get("retrain", "kd", default=True)), "target_sparsity": sparsity,
    }


def find_jobs(root: str | Path) -> Jobs:
    """Every job folder under ``root`` (recursively), sorted into ok / failed / incomplete."""
    root = Path(root)
    jobs = Jobs()
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
            try:
                row = json.loads((folder / "metrics.json").read_text())
            except (OSError, json.JSONDecodeError) as e:
                row = {**_job_settings(folder), "status": "failed", "error": f"unreadable metrics.json ({e})"}
                row["run_dir"] = str(folder)
                jobs.failed.append(row)
                continue
            row.setdefault("status", "ok")
            row["run_dir"] = str(folder)
            jobs.ok.append(row)
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
        g = seen[(r.get("dataset"), r.get("model"))]
        g["variants"].add((r["method"], bool(r.get("retrain_kd"))))
        g["sparsities"].add(r["target_sparsity"])
        g["seeds"].add(r.get("seed"))
        g["have"].add((r["method"], bool(r.get("retrain_kd")), r["target_sparsity"], r.get("seed")))
    missing = []
    for (dataset, model), g in sorted(seen.items(), key=lambda kv: str(kv[0])):
        for method, kd in sorted(g["variants"], key=str):
            for s in sorted(g["sparsities"], key=lambda x: (not isinstance(x, (int, float)), x if isinstance(x, (int, float)) else 0, str(x))):
                for seed in sorted(g["seeds"], key=str):
                    if (method, kd, s, seed) not in g["have"]:
                        missing.append({"method": method, "dataset": dataset, "model": model, "retrain_kd": kd,
                                        "target_sparsity": s, "seed": seed, "status": "missing"})
    return missing


def _mean_std(values) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)  # no spread from one seed


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (method, dataset, model, target_sparsity, retrain_kd): mean ± std over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in GROUP_KEYS)].append(r)
    out = []
    for key, rs in groups.items():
        g = dict(zip(GROUP_KEYS, key))
        for metric in ("top1_best_val", "top1_last", "measured_sparsity", "epochs_total", "seconds_total"):
            g[f"{metric}_mean"], g[f"{metric}_std"] = _mean_std(r.get(metric) for r in rs)
        g["n"] = len(rs)
        g["seeds"] = sorted({r.get("seed") for r in rs}, key=str)
        out.append(g)
    out.sort(key=lambda g: (str(g["dataset"]), str(g["model"]), str(g["method"]), not g["retrain_kd"],
                            g["target_sparsity"] if isinstance(g["target_sparsity"], (int, float)) else 0))
    return out


def variant_label(method: str, retrain_kd: bool) -> str:
    """``tgp (KD)`` / ``tgp (CE)`` for methods with a teacher (retraining with or without KD are two
    variants); other methods by name alone."""
    from tgp.methods import load_all

    spec = load_all().get(method)
    if spec is not None and spec.uses_teacher:
        return f"{method} ({'KD' if retrain_kd else 'CE'})"
    return method


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


def markdown_table(groups: list[dict]) -> str:
    header = ["method", "dataset", "model", "target sparsity %", "retrain KD", "top-1 best-val %", "top-1 last %",
              "measured sparsity %", "epochs", "seconds", "n seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for g in groups:
        ts = g["target_sparsity"]
        cells = [
            str(g["method"]), str(g["dataset"]), str(g["model"]),
            f"{100 * ts:.2f}" if isinstance(ts, (int, float)) else str(ts), "yes" if g["retrain_kd"] else "no",
            _pct(g["top1_best_val_mean"], g["top1_best_val_std"]), _pct(g["top1_last_mean"], g["top1_last_std"]),
            _pct(g["measured_sparsity_mean"]),
            "—" if g["epochs_total_mean"] is None else f"{g['epochs_total_mean']:.0f}",
            "—" if g["seconds_total_mean"] is None else f"{g['seconds_total_mean']:.1f}",
            str(g["n"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(r: dict) -> str:
    s = r.get("target_sparsity")
    return (f"{r.get('method')} / {r.get('dataset')} / {r.get('model')} / sparsity {s} / "
            f"{'KD' if r.get('retrain_kd') else 'CE'} retrain / seed {r.get('seed')}")


def markdown_report(root: Path, jobs: Jobs, groups: list[dict], refs: list[dict], plots: list[Path]) -> str:
    out = [f"# tgp report: {root}", "",
           f"{len(jobs.ok)} jobs done, {len(jobs.failed)} failed, {len(jobs.incomplete)} incomplete, "
           f"{len(jobs.missing)} missing. Top-1 on the test split, mean ± std over seeds.", "",
           markdown_table(groups) if groups else "_no finished job_", ""]
    if refs:
        out += ["## Published reference numbers (drawn dashed in the plots)", "",
                "| source | method | dataset | model | sparsity % | top-1 % | arXiv | table |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['source']} | {r['method']} | {r['dataset']} | {r['model']} | {100 * r['sparsity']:.2f} | "
                f"{100 * r['top1']:.2f} | {r['arxiv']} | {r['table']} |" for r in refs]
        out.append("")
    out += ["## Failed jobs", ""]
    out += [f"- {_describe(r)}: `{r.get('error')}` ({r.get('run_dir')})" for r in jobs.failed] or ["none"]
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
