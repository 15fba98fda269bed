"""The report's power table: for each paired comparison, what its seeds can and cannot detect.

Reads the ``diff_<metric>_sd/_mdd/_seeds_needed`` fields that :func:`tgp.report.aggregate.aggregate`
puts in every method row (computed by :mod:`tgp.report.stats`); pure formatting, no statistics here.
"""

from __future__ import annotations

from tgp.report.stats import ALPHA, POWER

#: the score columns, as in the main table (top-1 for images, the task's score for text): (field, header name)
METRICS = (("score_best_val", "best-val"), ("score_last", "last"))


def _pp(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def comparisons(groups: list[dict]) -> list[dict]:
    """The method rows that are paired with a reference over two seeds or more (an SD exists)."""
    return [g for g in groups if g.get("kind", "method") == "method" and g.get("reference")
            and not g.get("is_reference") and any(g.get(f"diff_{m}_sd") is not None for m, _ in METRICS)]


def power_table(groups: list[dict]) -> str | None:
    """Per comparison: the SD of its per-seed differences, the minimum detectable difference at its
    n and the seeds needed for a true difference of ``power_min_effect``, for both checkpoints (all
    in percentage points). None when no comparison has two pairs."""
    rows = comparisons(groups)
    if not rows:
        return None
    effect = f"{100 * rows[0]['power_min_effect']:g} pp"
    header = ["comparison", "dataset", "model", "target sparsity %", "pairs"]
    for _, name in METRICS:
        header += [f"{name}: SD of Δ (pp)", f"{name}: detectable Δ at n (pp)", f"{name}: seeds for {effect}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for g in rows:
        sparsity = g["target_sparsity"]
        cells = [f"{g.get('variant') or g.get('label') or g['method']} − {g['reference']}", str(g["dataset"]),
                 str(g["model"]), f"{100 * sparsity:.2f}" if isinstance(sparsity, (int, float)) else str(sparsity),
                 str(max(g.get(f"diff_{m}_n") or 0 for m, _ in METRICS))]
        for m, _ in METRICS:
            need = g.get(f"diff_{m}_seeds_needed")
            cells += [_pp(g.get(f"diff_{m}_sd")), _pp(g.get(f"diff_{m}_mdd")), "—" if need is None else str(need)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def power_sentence(groups: list[dict]) -> str:
    """What the power columns mean, in one sentence."""
    effect = 100 * next((g["power_min_effect"] for g in groups if g.get("power_min_effect") is not None), 0.01)
    return (f"**Power** (paired t-test, two-sided α = {ALPHA:g}, power {POWER:g}, exact noncentral t, from the "
            "observed SD of each comparison's per-seed differences): *detectable Δ at n* is the smallest true "
            f"difference the seeds run detect {100 * POWER:.0f} % of the time (a smaller one will often look like "
            f"none), and *seeds for {effect:g} pp* is how many seeds would detect a true difference of {effect:g} "
            "percentage points (`tgp-report --min-effect`).")
