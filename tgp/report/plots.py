"""PNG plots of a sweep (matplotlib, Agg backend): accuracy vs sparsity, radar, training cost.

One figure of each kind per (dataset, model). Published reference numbers (see
``experiments/reference/``) are drawn dashed, labeled with their source, where the dataset and
model match.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tgp.report.aggregate import variant_label  # noqa: E402


def _by_setting(groups: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """(dataset, model) → variant label → aggregate rows sorted by sparsity."""
    out: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for g in groups:
        if isinstance(g["target_sparsity"], (int, float)) and g["top1_best_val_mean"] is not None:
            out[(g["dataset"], g["model"])][variant_label(g["method"], g["retrain_kd"])].append(g)
    for variants in out.values():
        for rows in variants.values():
            rows.sort(key=lambda g: g["target_sparsity"])
    return out


def _refs_for(refs: list[dict], dataset, model) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in refs:
        if r["dataset"] == dataset and r["model"] == model:
            out[f"{r['method']} [{r['source']}, arXiv:{r['arxiv']} {r['table']}]"].append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["sparsity"])
    return out


def _slug(*parts) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "") for p in parts)


def plot_accuracy_vs_sparsity(groups, refs, out_dir: Path, metric: str = "top1_best_val") -> list[Path]:
    paths = []
    for (dataset, model), variants in sorted(_by_setting(groups).items(), key=lambda kv: str(kv[0])):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (label, rows) in enumerate(sorted(variants.items())):
            color = f"C{i % 10}"
            xs = [100 * g["target_sparsity"] for g in rows]
            ys = [100 * g[f"{metric}_mean"] for g in rows]
            sd = [100 * (g[f"{metric}_std"] or 0.0) for g in rows]
            ax.plot(xs, ys, "o-", color=color, label=f"{label} (n={max(g['n'] for g in rows)})")
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], color=color, alpha=0.2)
        for j, (label, rows) in enumerate(sorted(_refs_for(refs, dataset, model).items())):
            ax.plot([100 * r["sparsity"] for r in rows], [100 * r["top1"] for r in rows], "s--",
                    color=f"C{(j + len(variants)) % 10}", alpha=0.8, label=label)
        ax.set_xlabel("target sparsity (% of prunable weights removed)")
        ax.set_ylabel(f"test top-1 % ({metric.replace('top1_', '').replace('_', ' ')})")
        ax.set_title(f"{dataset} / {model}: top-1 vs sparsity (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"acc_vs_sparsity_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_radar(groups, refs, out_dir: Path, metric: str = "top1_best_val") -> list[Path]:
    """One polygon per method, one axis per sparsity level (like the paper's Figure 1)."""
    paths = []
    for (dataset, model), variants in sorted(_by_setting(groups).items(), key=lambda kv: str(kv[0])):
        levels = sorted({g["target_sparsity"] for rows in variants.values() for g in rows})
        if len(levels) < 3:
            continue  # a radar needs at least three axes
        angles = [2 * math.pi * i / len(levels) for i in range(len(levels))]
        fig, ax = plt.subplots(figsize=(6, 6.8), subplot_kw={"projection": "polar"})
        drawn: list[float] = []

        def polygon(values_by_level, **kw):
            vals = [values_by_level.get(s) for s in levels]
            pts = [(a, v) for a, v in zip(angles, vals) if v is not None]
            if len(pts) < 2:
                return
            a, v = zip(*pts)
            drawn.extend(v)
            ax.plot([*a, a[0]], [*v, v[0]], **kw)
            return a, v

        for i, (label, rows) in enumerate(sorted(variants.items())):
            res = polygon({g["target_sparsity"]: 100 * g[f"{metric}_mean"] for g in rows}, color=f"C{i % 10}",
                          marker="o", label=label)
            if res:
                ax.fill([*res[0], res[0][0]], [*res[1], res[1][0]], color=f"C{i % 10}", alpha=0.08)
        for j, (label, rows) in enumerate(sorted(_refs_for(refs, dataset, model).items())):
            polygon({r["sparsity"]: 100 * r["top1"] for r in rows if r["sparsity"] in levels},
                    color=f"C{(j + len(variants)) % 10}", linestyle="--", marker="s", label=label)
        if drawn:  # the radius spans the data (from 0 the methods would be indistinguishable)
            lo, hi = min(drawn), max(drawn)
            pad = max(1.0, 0.1 * (hi - lo))
            ax.set_ylim(max(0.0, lo - 3 * pad), min(100.0, hi + pad))
        ax.set_xticks(angles)
        ax.set_xticklabels([f"{100 * s:.4g}%" for s in levels])
        ax.set_title(f"{dataset} / {model}: top-1 % per sparsity", pad=22)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2)
        fig.tight_layout()
        path = out_dir / f"radar_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def plot_cost(groups, out_dir: Path) -> list[Path]:
    """Training cost per method: mean seconds and epochs per job (over sparsities and seeds)."""
    paths = []
    by_setting: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for g in groups:
        by_setting[(g["dataset"], g["model"])][variant_label(g["method"], g["retrain_kd"])].append(g)
    for (dataset, model), variants in sorted(by_setting.items(), key=lambda kv: str(kv[0])):
        labels = sorted(variants)

        def mean_of(rows, key):
            pairs = [(g[key], g["n"]) for g in rows if g[key] is not None]
            return sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1) if pairs else 0.0

        secs = [mean_of(variants[lb], "seconds_total_mean") for lb in labels]
        epochs = [mean_of(variants[lb], "epochs_total_mean") for lb in labels]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(labels) + 3), 4))
        colors = [f"C{i % 10}" for i in range(len(labels))]
        a1.bar(labels, secs, color=colors)
        a1.set_ylabel("seconds per job (all stages)")
        a2.bar(labels, epochs, color=colors)
        a2.set_ylabel("epochs per job (all stages)")
        for ax in (a1, a2):
            ax.tick_params(axis="x", rotation=30)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{dataset} / {model}: training cost per method (mean per job)")
        fig.tight_layout()
        path = out_dir / f"cost_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def make_plots(groups, refs, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [*plot_accuracy_vs_sparsity(groups, refs, out_dir), *plot_radar(groups, refs, out_dir),
            *plot_cost(groups, out_dir)]
