"""A sweep's training cost, each stage counted once (from the jobs' rows; :mod:`tgp.measure.cost`
says what one job records and what is counted).

A stage is identified by its key (:func:`stage_costs`, :func:`cost_by_method`, :func:`sweep_total`),
so the teacher and the KD-pretrained student that ten jobs share are one stage. Attribution: a group
(by default a method) is charged in full, once, for every distinct stage any of its jobs used — a
stage shared by several methods (one teacher for ``tgp``, ``ce_grad``, ``magnitude`` and ``random``)
appears in each of their totals, and once in the sweep total, so the methods' totals may add up to
more than the sweep's. ``flops_exclusive`` is the part of a group's total no other group used.
Totals are per seed, then averaged over seeds.
"""

from __future__ import annotations

from collections import defaultdict

from tgp.measure.cost import device_label, sum_or_none


def stage_costs(rows: list[dict]) -> list[dict]:
    """Every distinct stage (by key) of the rows, once: ``stage``, ``key``, ``flops``, ``flops_dense``,
    ``examples``, ``seconds``, ``device``, the ``methods`` that used it and how many ``jobs`` did.
    Rows without ``stage_keys`` (failed jobs, rows written before cost was recorded) are skipped."""
    out: dict[str, dict] = {}
    for row in rows:
        for stage, key in (row.get("stage_keys") or {}).items():
            entry = out.get(key)
            if entry is None:
                entry = out[key] = {
                    "stage": stage, "key": key,
                    "flops": row.get(f"train_flops_{stage}"),
                    "flops_dense": row.get(f"dense_train_flops_{stage}"),
                    "examples": row.get(f"train_examples_{stage}"),
                    "seconds": float(row.get(f"seconds_{stage}") or 0.0),
                    "device": row.get(f"device_{stage}"),
                    "methods": set(), "jobs": 0,
                }
            entry["methods"].add(str(row.get("method")))
            entry["jobs"] += 1
    return [{**e, "methods": sorted(e["methods"])} for e in out.values()]


def _totals(stages: list[dict]) -> dict:
    return {
        "stages": len(stages),
        "flops": sum_or_none(s["flops"] for s in stages),
        "flops_dense": sum_or_none(s["flops_dense"] for s in stages),
        "flops_teacher": sum_or_none(s["flops"] for s in stages if s["stage"] == "teacher"),
        "seconds": sum(s["seconds"] for s in stages),
        "seconds_device": device_label(s["device"] for s in stages),
        "unmeasured": sorted({s["stage"] for s in stages if s["flops"] is None}),
    }


def sweep_total(rows: list[dict]) -> dict:
    """The whole sweep's cost, every stage once: ``stages``, ``flops``, ``flops_dense``,
    ``flops_teacher``, ``seconds`` (+ ``seconds_device``), ``unmeasured``, ``jobs``,
    ``jobs_without_cost`` (rows without ``stage_keys``, not counted)."""
    return {**_totals(stage_costs(rows)), "jobs": len(rows),
            "jobs_without_cost": sum(1 for r in rows if not r.get("stage_keys"))}


def _mean(values):
    values = list(values)
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def cost_by_method(rows: list[dict], by: tuple[str, ...] = ("method",)) -> list[dict]:
    """Cost per group of rows (default: per method), mean over seeds.

    For each group and seed, the distinct stages (by key) that the group's jobs of that seed
    used are summed, each once; the group's numbers are the mean over its seeds. A stage used
    by several groups is charged to each of them in full (``flops_exclusive``: the part of
    ``flops`` no other group used). Fields: the ``by`` fields, ``seeds``, ``jobs``, ``stages``,
    ``flops``, ``flops_dense``, ``flops_teacher``, ``flops_exclusive``, ``seconds`` and
    ``seconds_device`` (seconds are measured on that device, under its load: secondary),
    ``unmeasured`` (stages without FLOPs: the group's FLOPs are then ``None``) and
    ``jobs_without_cost`` (rows without ``stage_keys``, left out). FLOPs means are floats."""
    stages = {s["key"]: s for s in stage_costs(rows)}
    groups: dict[tuple, dict] = defaultdict(lambda: {"seeds": defaultdict(set), "jobs": 0, "without": 0})
    users: dict[str, set] = defaultdict(set)  # stage key -> groups that used it
    for row in rows:
        g = tuple(row.get(b) for b in by)
        groups[g]["jobs"] += 1
        keys = row.get("stage_keys")
        if not keys:
            groups[g]["without"] += 1
            continue
        groups[g]["seeds"][row.get("seed")].update(keys.values())
        for key in keys.values():
            users[key].add(g)
    out = []
    for g in sorted(groups, key=lambda t: tuple("" if v is None else str(v) for v in t)):
        info = groups[g]
        per_seed, devices = [], set()
        for keys in info["seeds"].values():
            chosen = [stages[k] for k in sorted(keys)]
            totals = _totals(chosen)
            totals["flops_exclusive"] = sum_or_none(s["flops"] for s in chosen if users[s["key"]] == {g})
            per_seed.append(totals)
            devices.update(s["device"] for s in chosen)
        row = dict(zip(by, g))
        row.update(
            seeds=len(per_seed), jobs=info["jobs"], jobs_without_cost=info["without"],
            **{f: _mean(t[f] for t in per_seed) for f in
               ("stages", "flops", "flops_dense", "flops_teacher", "flops_exclusive", "seconds")},
            seconds_device=device_label(devices),
            unmeasured=sorted({s for t in per_seed for s in t["unmeasured"]}),
        )
        out.append(row)
    return out


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def cost_table_markdown(rows: list[dict], by: tuple[str, ...] = ("method",)) -> str:
    """:func:`cost_by_method` and :func:`sweep_total` as a Markdown table (GFLOPs; seconds with their device)."""
    lines = [f"| {' | '.join(by)} | seeds | jobs | stages | train GFLOPs (masked) | dense | teacher | exclusive | seconds | device |",
             "|" + "---|" * (len(by) + 9)]
    for r in cost_by_method(rows, by):
        g = [("—" if r[b] is None else str(r[b])) for b in by]
        lines.append(f"| {' | '.join(g)} | {r['seeds']} | {r['jobs']} | {_num(r['stages'], '.0f')} | "
                     f"{_num(r['flops'] and r['flops'] / 1e9, '.3f')} | {_num(r['flops_dense'] and r['flops_dense'] / 1e9, '.3f')} | "
                     f"{_num(r['flops_teacher'] and r['flops_teacher'] / 1e9, '.3f')} | "
                     f"{_num(r['flops_exclusive'] and r['flops_exclusive'] / 1e9, '.3f')} | {_num(r['seconds'], '.1f')} | "
                     f"{r['seconds_device'] or '—'} |")
    t = sweep_total(rows)
    lines.append(f"| **sweep, each stage once** |{' |' * (len(by) - 1)} — | {t['jobs']} | {t['stages']} | "
                 f"{_num(t['flops'] and t['flops'] / 1e9, '.3f')} | {_num(t['flops_dense'] and t['flops_dense'] / 1e9, '.3f')} | "
                 f"{_num(t['flops_teacher'] and t['flops_teacher'] / 1e9, '.3f')} | — | {t['seconds']:.1f} | "
                 f"{t['seconds_device'] or '—'} |")
    return "\n".join(lines)
