"""What each GPU-check part left behind, read back into the record, and the markdown summary."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

#: the figures of a bench mode the record keeps (the whole bench file stays beside it)
BENCH_FIELDS = ("model_img_s", "dense_img_s", "kd_img_s", "masked_over_dense", "masked_kd_over_kd", "data_img_s",
                "epoch_over_model", "prune_s")
JOB_FIELDS = ("top1_teacher", "top1_dense_student", "top1_pruned", "top1_best_val", "top1_last", "measured_sparsity",
              "seconds_teacher", "seconds_kd_pretrain", "seconds_prune", "seconds_retrain", "seconds_total",
              "device_retrain", "per_rank_batch")


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "failed": failed}


def read_result(name: str, rc: int, c, log: Path) -> tuple[dict | None, str, str | None]:
    """``(result, status, reason)`` of part ``name`` that exited with ``rc``."""
    if name == "gpu_tests":
        xml = c.folder / "gpu_tests.xml"
        if not xml.is_file():
            return None, "failed", f"exit {rc}, no JUnit file: {_last_line(log)}"
        res = _junit(xml)
        if rc == 0 and res["tests"] and res["skipped"] == res["tests"]:
            cuda = (c.record.get("env") or {}).get("cuda_available")
            return res, "skipped", "skipped: no CUDA" if not cuda else "every GPU test skipped itself"
        if rc == 0:
            return res, "ok", None
        return res, "failed", f"exit {rc}: {res['failures']} failed, {res['errors']} errors: {', '.join(res['failed'][:5])}"
    if rc != 0:
        return None, "failed", f"exit {rc}: {_last_line(log)}"
    if name == "env":
        result = json.loads((c.work / "env.json").read_text())
        c.record["env"] = result
        return result, "ok", None
    if name.startswith("bench_"):
        doc = json.loads((c.folder / f"{name}.json").read_text())
        (recipe, entry), = doc["recipes"].items()
        mode, figures = next(iter(entry["modes"].items()))
        return ({"recipe": recipe, "mode": mode, "batch": entry["batch"], "precision": entry["precision"],
                 "loader": entry["loader"], **{k: figures.get(k) for k in BENCH_FIELDS},
                 "epoch_img_s": figures["epoch"]["img_s"]}, "ok", None)
    if name == "fake_cifar":
        return json.loads((c.folder / "fake_cifar.json").read_text()), "ok", None
    if name == "job":
        metrics = c.work / "job" / "metrics.json"
        if not metrics.is_file():
            return None, "failed", f"exit 0 but no metrics.json: {_last_line(log)}"
        shutil.copy(metrics, c.folder / "job_metrics.json")
        row = json.loads(metrics.read_text())
        return {k: row.get(k) for k in JOB_FIELDS}, "ok", None
    if name == "table2":
        text = log.read_text().split("\n", 1)[1]  # past the command line
        return {"output": text.strip()}, "ok", None
    raise ValueError(f"unknown part {name}")


# -- markdown ------------------------------------------------------------------------------------
def _num(x, fmt="{:,.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def bench_rows(doc: dict) -> list[str]:
    rows = ["| recipe | mode | batch | precision | model img/s | dense step img/s | epoch img/s | epoch/model | "
            "masked/dense | prune s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in doc["parts"].items():
        r = e.get("result") if name.startswith("bench_") else None
        if r:
            rows.append(f"| {r['recipe']} | {r['mode']} | {r['batch']} | {r['precision']} | {_num(r['model_img_s'])} | "
                        f"{_num(r['dense_img_s'])} | {_num(r['epoch_img_s'])} | {_num(r['epoch_over_model'], '{:.2f}')} | "
                        f"{_num(r['masked_over_dense'], '{:.3f}')} | {_num(r['prune_s'], '{:.2f}')} |")
    return rows if len(rows) > 2 else []


def markdown(doc: dict, brief: bool = False) -> str:
    """The summary: each part's status and time; with ``brief=False`` the versions, tests, bench
    figures, job and the Table 2 estimate as well."""
    parts = doc["parts"]
    lines = [f"# GPU check: {doc.get('device') or 'unknown device'} ({doc['mode']})", "",
             f"Started {doc['started']}, {doc.get('seconds', 0):.0f} s in all (deadline {doc['deadline_s']:.0f} s).", "",
             "| part | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    for name, e in parts.items():
        note = e.get("reason") or e.get("note") or ""
        lines.append(f"| {name} | {e['status']} | {_num(e.get('seconds'), '{:.1f}')} | {_num(e.get('budget_s'))} | "
                     f"{str(note).replace('|', '/')} |")
    if brief:
        return "\n".join(lines)
    env = (parts.get("env") or {}).get("result")
    if env:
        v = env["versions"]
        lines += ["", "## Environment", "",
                  f"- device: {env['device']}" + (f", compute capability {env.get('capability')}, "
                                                  f"{env.get('memory_gib')} GiB, bf16 {env.get('bf16')}"
                                                  if env.get("cuda_available") else ""),
                  f"- driver {env.get('driver') or '—'}, CUDA (torch) {env.get('torch_cuda') or '—'}, "
                  f"cuDNN {env.get('cudnn') or '—'}",
                  f"- Python {env['python']}, torch {v.get('torch')}, torchvision {v.get('torchvision')}, lightning "
                  f"{v.get('lightning')}, torchmetrics {v.get('torchmetrics')}, triton {v.get('triton') or '—'}, "
                  f"hydra-core {v.get('hydra-core')}, PyYAML {v.get('PyYAML')}",
                  f"- parts ran with {parts['deps'].get('python')} ({parts['deps'].get('how')}"
                  + (f"; installed from the wheelhouse: {', '.join(parts['deps']['installed'])}"
                     if parts["deps"].get("installed") else "") + ")"]
    tests = (parts.get("gpu_tests") or {}).get("result")
    if tests:
        lines += ["", "## GPU tests", "", f"{tests['tests']} tests: {tests['failures']} failed, {tests['errors']} "
                  f"errors, {tests['skipped']} skipped" + (f" ({', '.join(tests['failed'])})" if tests["failed"] else "")]
    bench = bench_rows(doc)
    if bench:
        lines += ["", "## Bench (short timings; the files are beside this one)", "", *bench]
    job = (parts.get("job") or {}).get("result")
    if job:
        fmt = lambda k: _num(job.get(k), "{:.4f}")  # noqa: E731
        lines += ["", "## One-epoch-per-stage TGP job (cifar10_resnet18, generated images, device loader)", "",
                  f"- top-1: teacher {fmt('top1_teacher')}, dense student {fmt('top1_dense_student')}, pruned "
                  f"{fmt('top1_pruned')}, best-val {fmt('top1_best_val')}, last {fmt('top1_last')} (chance: 0.1 on "
                  "random images); measured sparsity " + fmt("measured_sparsity"),
                  "- seconds: " + ", ".join(f"{k[8:]} {_num(job.get(k), '{:.1f}')}" for k in JOB_FIELDS
                                            if k.startswith("seconds_"))]
    table2 = (parts.get("table2") or {}).get("result")
    if table2:
        lines += ["", "## Table 2 estimate (reproduce_table2.py --dry-run with these bench figures)", "", "```",
                  table2["output"], "```"]
    return "\n".join(lines) + "\n"
