"""PNG plots of a sweep (matplotlib, Agg backend), one figure of each kind per (dataset, model).

The y axis is each run's score (:mod:`tgp.report.scores`): test top-1 for images, the task's score for
text (e.g. MCC for CoLA), named in every label.

* ``acc_vs_sparsity_*``: test score (best-val checkpoint) against the density ``1 − sparsity`` on a
  log axis (dense on the left, as pruning papers plot it), markers at the measured sparsities
  only, the 95 % CI over seeds as a band, the teacher and the dense student as horizontal lines.
* ``layer_density_*_s<sparsity>``: per-layer density (kept / total) of every method's mask at one
  sparsity, from each job's final ``sparsity_report.json`` (mean over seeds).
* ``acc_vs_flops_*``: the score against training FLOPs per job, one panel per sparsity, with the Pareto
  front (when the jobs recorded their cost).
* ``radar_*``: one polygon per method, one axis per sparsity; the radius is the test score (×100).
* ``cost_*``: training FLOPs, seconds (with the device) and epochs per job.

A method has the same colour in every plot: its ``color`` in the method registry, passed in as a
``{method: colour}`` mapping (``colors``; :func:`tgp.report.cli.method_colors` reads it); a method
the mapping lacks (a sweep of a method since removed) gets a fixed colour from its name. Line
style and marker fill say whether retraining used KD (solid and filled: KD; dashed and hollow:
without); a sanity-check variant has its method's colour and its own marker. Published reference
numbers (``experiments/reference/``) are dotted with squares.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from tgp.report.aggregate import method_rows, uses_teacher, variant_label  # noqa: E402
from tgp.report.references import model_label, same_model  # noqa: E402
from tgp.report.scores import TOP1, header, title  # noqa: E402

log = logging.getLogger("tgp")

#: colours of methods without one in the mapping, picked by a hash of the name
_SPARE_COLORS = ("#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
                 "#9edae5")
TEACHER_COLOR, DENSE_COLOR = "black", "#555555"
SANITY_MARKERS = {"layer_shuffle": "v", "reinit": "^", "invert": "D", "random_uniform": "X", "random_erk": "P"}
KD_NOTE = "solid, filled: retrained with KD · dashed, hollow: without KD"
ACC_UNIT = "test top-1 %"  # the label of a top-1 axis; other scores: score_unit()


def score_unit(rows) -> str:
    """``test top-1 %`` (images), ``test MCC ×100`` (CoLA): the axis label of the rows' score; the rows
    of one (dataset, model) share one."""
    names = {g.get("score_name") or TOP1 for g in rows}
    return f"test {header(names.pop())}" if len(names) == 1 else "test score ×100"


def score_title(rows) -> str:
    names = {g.get("score_name") or TOP1 for g in rows}
    return title(names.pop()) if len(names) == 1 else "score"


def method_color(method, colors: dict[str, str] | None = None) -> str:
    """The fixed colour of a method (a published number of the same method gets it too): ``colors[method]``,
    else one of the spare colours chosen by the name (the same in every report)."""
    if colors and method in colors:
        return colors[method]
    return _SPARE_COLORS[zlib.crc32(str(method).encode()) % len(_SPARE_COLORS)]


def style(method, retrain_kd, sanity=None, colors: dict[str, str] | None = None) -> dict:
    """Matplotlib keywords for one variant: colour by method (:func:`method_color`), KD by line style
    and marker fill, a sanity check by its marker."""
    color = method_color(method, colors)
    kw = {"color": color, "linestyle": "-" if retrain_kd else "--",
          "marker": SANITY_MARKERS.get(sanity, "s") if sanity else "o",
          "markerfacecolor": color if retrain_kd else "white", "markeredgecolor": color}
    if sanity:
        kw.update(alpha=0.75, linewidth=1.0)
    return kw


def _by_setting(groups: list[dict], metric: str = "score_best_val") -> dict[tuple, dict[str, list[dict]]]:
    """(dataset, model) → variant label → method rows sorted by sparsity."""
    out: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for g in method_rows(groups):
        if g.get("is_dense_model"):  # a dense comparison model: drawn against its parameters (plots_params)
            continue
        if isinstance(g["target_sparsity"], (int, float)) and g.get(f"{metric}_mean") is not None:
            label = g["variant"]
            out[(g["dataset"], g["model"])][label].append(g)
    for variants in out.values():
        for rows in variants.values():
            rows.sort(key=lambda g: g["target_sparsity"])
    return out


def _baselines(groups, dataset, model) -> list[dict]:
    return [g for g in groups if g.get("kind") in ("teacher", "dense") and g["dataset"] == dataset
            and g["model"] == model and g.get("score_last_mean") is not None]


def _draw_baselines(ax, groups, dataset, model) -> None:
    """The teacher and the dense student as horizontal lines, their CI over seeds as a faint band."""
    for b in _baselines(groups, dataset, model):
        teacher = b["kind"] == "teacher"
        y = 100 * b["score_last_mean"]
        label = f"{b['label']} (last epoch, n={b['n']})"
        kw = {"color": TEACHER_COLOR if teacher else DENSE_COLOR, "linestyle": ":" if teacher else "-.",
              "linewidth": 1.2, "label": label}
        ax.axhline(y, **kw)
        if b.get("score_last_lo") is not None:
            ax.axhspan(100 * b["score_last_lo"], 100 * b["score_last_hi"], color=kw["color"], alpha=0.07)


def _refs_for(refs: list[dict], dataset, model) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in refs:
        if r["dataset"] == dataset and same_model(r["model"], model):
            out[(r["method"], f"{r['method']} [{r['source']}, arXiv:{r['arxiv']} {r['table']}]")].append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["sparsity"])
    return out


def _slug(*parts) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "") for p in parts)


def _density_axis(ax, densities) -> None:
    ds = sorted({d for d in densities if d > 0}, reverse=True)
    if ds:  # limits first: one measured density would give the log scale identical limits
        lo, hi = min(ds), max(ds)
        ax.set_xlim(hi * 1.25, lo / 1.25)  # inverted: dense on the left, sparser to the right
    ax.set_xscale("log")
    if ds:
        ax.xaxis.set_major_locator(FixedLocator(ds))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{100 * d:.3g}" for d in ds], rotation=45 if len(ds) > 6 else 0, fontsize=8)
    ax.set_xlabel("density = 1 − target sparsity (% of prunable weights kept, log scale)")


def plot_accuracy_vs_sparsity(groups, refs, out_dir: Path, metric: str = "score_best_val", colors=None) -> list[Path]:
    """Score vs density (log); markers only at the sparsities that were run; CI bands; dense lines."""
    paths = []
    for (dataset, model), variants in sorted(_by_setting(groups, metric).items(), key=lambda kv: str(kv[0])):
        fig, ax = plt.subplots(figsize=(8, 5))
        densities = []
        for label, rows in sorted(variants.items()):
            rows = [g for g in rows if g["target_sparsity"] < 1]
            if not rows:
                continue
            kw = style(rows[0]["method"], rows[0]["retrain_kd"], rows[0].get("sanity"), colors)
            xs = [1 - g["target_sparsity"] for g in rows]
            densities += xs
            ys = [100 * g[f"{metric}_mean"] for g in rows]
            ax.plot(xs, ys, label=f"{label} (n={max(g['n'] for g in rows)})", **kw)
            band = [(x, 100 * g[f"{metric}_lo"], 100 * g[f"{metric}_hi"]) for x, g in zip(xs, rows)
                    if g.get(f"{metric}_lo") is not None]
            if band:
                bx, blo, bhi = zip(*band)
                ax.fill_between(bx, blo, bhi, color=kw["color"], alpha=0.12 if not rows[0].get("sanity") else 0.06,
                                linewidth=0)
        for (method, label), rows in sorted(_refs_for(refs, dataset, model).items()):
            rows = [r for r in rows if r["sparsity"] < 1]
            densities += [1 - r["sparsity"] for r in rows]
            ax.plot([1 - r["sparsity"] for r in rows], [100 * r["top1"] for r in rows], linestyle=":", marker="s",
                    color=method_color(method, colors), alpha=0.8, label=label)
        _draw_baselines(ax, groups, dataset, model)
        _density_axis(ax, densities)
        checkpoint = "best-val checkpoint" if metric == "score_best_val" else "last epoch"
        drawn = [g for rows in variants.values() for g in rows]
        ax.set_ylabel(f"{score_unit(drawn)} ({checkpoint})")
        ax.set_title(f"{dataset} / {model}: {score_title(drawn)} vs density (mean, 95 % CI band over seeds)",
                     fontsize=10)
        paths.append(_finish(fig, ax, out_dir / f"acc_vs_sparsity_{_slug(dataset, model)}.png", dpi=120))
    return paths


def _finish(fig, ax, path: Path, dpi: int) -> Path:
    """Grid, the ±KD legend, tight layout; save ``fig`` to ``path`` and close it."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", title=KD_NOTE, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _layer_report(row: dict) -> dict | None:
    """The per-layer counts of a job's final mask (its ``mask_stage``'s ``sparsity_report.json``)."""
    from tgp.pruning.mask import final_sparsity_report_path

    if not row.get("run_dir"):
        return None
    try:
        return json.loads(final_sparsity_report_path(row["run_dir"], row).read_text()).get("layers") or None
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def layer_densities(rows: list[dict], colors=None) -> dict[tuple, dict[str, dict]]:
    """(dataset, model, target sparsity) → variant label → ``{"layers": [names], "density": [mean over
    seeds], "n": seeds, "style": ...}`` from each job's final ``sparsity_report.json`` (in its ``mask_stage``)."""
    acc: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        layers = _layer_report(r)
        if not layers or not isinstance(r.get("target_sparsity"), (int, float)):
            continue
        key = (r.get("dataset"), model_label(r.get("model"), r.get("model_width")), r["target_sparsity"])
        label = variant_label(r.get("method"), r.get("retrain_kd"), r.get("sanity") or None, uses_teacher(r))
        slot = acc[key].setdefault(label, {"sums": defaultdict(float), "counts": defaultdict(int), "order": [],
                                           "n": 0, "style": style(r.get("method"), r.get("retrain_kd"),
                                                                  r.get("sanity") or None, colors)})
        slot["n"] += 1
        for name, d in layers.items():
            if not d.get("total"):
                continue
            if name not in slot["sums"]:
                slot["order"].append(name)
            slot["sums"][name] += d["kept"] / d["total"]
            slot["counts"][name] += 1
    out: dict[tuple, dict[str, dict]] = {}
    for key, variants in acc.items():
        out[key] = {label: {"layers": s["order"], "density": [s["sums"][n] / s["counts"][n] for n in s["order"]],
                            "n": s["n"], "style": s["style"]} for label, s in variants.items()}
    return out


def plot_layer_density(rows: list[dict], out_dir: Path, colors=None) -> list[Path]:
    """Per-layer density of each method's mask, one figure per (dataset, model, sparsity)."""
    paths = []
    for (dataset, model, sparsity), variants in sorted(layer_densities(rows, colors).items(), key=lambda kv: str(kv[0])):
        names = max((v["layers"] for v in variants.values()), key=len)
        fig, ax = plt.subplots(figsize=(max(7.0, 0.28 * len(names) + 3), 4.8))
        index = {n: i for i, n in enumerate(names)}
        for label, v in sorted(variants.items()):
            xs = [index[n] for n in v["layers"] if n in index]
            ys = [d for n, d in zip(v["layers"], v["density"]) if n in index]
            kw = dict(v["style"])
            ax.plot(xs, [max(y, 1e-6) for y in ys], label=f"{label} (n={v['n']})", markersize=4, **kw)
        ax.axhline(1 - sparsity, color="#999999", linewidth=0.8, linestyle="--",
                   label=f"uniform density {100 * (1 - sparsity):.3g}%")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.removesuffix(".weight") for n in names], rotation=90, fontsize=6)
        ax.set_ylabel("layer density (kept / total weights, log)")
        ax.set_title(f"{dataset} / {model}: per-layer density at {100 * sparsity:.4g}% target sparsity", fontsize=10)
        paths.append(_finish(fig, ax, out_dir / f"layer_density_{_slug(dataset, model)}_s{sparsity:g}.png", dpi=110))
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both (lower cost, higher accuracy), by increasing cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_accuracy_vs_flops(groups, out_dir: Path, metric: str = "score_best_val", colors=None) -> list[Path]:
    """Score vs training FLOPs per job (the Pareto view), one panel per sparsity; only when the
    jobs recorded ``cost_flops_own/_shared``."""
    paths = []
    by_setting: dict[tuple, list[dict]] = defaultdict(list)
    for g in method_rows(groups):
        if g.get("cost_flops_mean") and g.get(f"{metric}_mean") is not None \
                and isinstance(g["target_sparsity"], (int, float)):
            by_setting[(g["dataset"], g["model"])].append(g)
    for (dataset, model), rows in sorted(by_setting.items(), key=lambda kv: str(kv[0])):
        levels = sorted({g["target_sparsity"] for g in rows})
        cols = min(3, len(levels))
        nrows = math.ceil(len(levels) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.8 * nrows), squeeze=False)
        handles: dict[str, Line2D] = {}
        for ax, level in zip(axes.flat, levels):
            pts = []
            for g in sorted((g for g in rows if g["target_sparsity"] == level), key=lambda g: g["variant"]):
                kw = style(g["method"], g["retrain_kd"], g.get("sanity"), colors)
                x, y = g["cost_flops_mean"], 100 * g[f"{metric}_mean"]
                err = None
                if g.get(f"{metric}_lo") is not None:
                    err = [[y - 100 * g[f"{metric}_lo"]], [100 * g[f"{metric}_hi"] - y]]
                ax.errorbar([x], [y], yerr=err, linestyle="none", capsize=3, marker=kw["marker"], color=kw["color"],
                            markerfacecolor=kw["markerfacecolor"], markeredgecolor=kw["markeredgecolor"])
                handles.setdefault(g["variant"], Line2D([], [], **{**kw, "linestyle": kw["linestyle"]}))
                pts.append((x, y))
            front = pareto_front(pts)
            if len(front) > 1:
                fx, fy = zip(*front)
                ax.step(fx, fy, where="post", color="#999999", linewidth=1, zorder=0)
            for b in _baselines(groups, dataset, model):
                ax.axhline(100 * b["score_last_mean"], color=TEACHER_COLOR if b["kind"] == "teacher" else DENSE_COLOR,
                           linestyle=":" if b["kind"] == "teacher" else "-.", linewidth=1)
            ax.set_xscale("log")
            ax.set_title(f"sparsity {100 * level:.4g}%", fontsize=9)
            ax.set_xlabel("training FLOPs per job (log)", fontsize=8)
            unit = score_unit(rows)
            ax.set_ylabel(f"{unit} (best-val ckpt)" if metric == "score_best_val" else unit, fontsize=8)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(levels):]:
            ax.axis("off")
        for b in _baselines(groups, dataset, model):
            handles.setdefault(b["label"], Line2D([], [], color=TEACHER_COLOR if b["kind"] == "teacher" else DENSE_COLOR,
                                                  linestyle=":" if b["kind"] == "teacher" else "-."))
        handles.setdefault("Pareto front", Line2D([], [], color="#999999"))
        fig.legend(handles.values(), handles.keys(), fontsize=7, loc="lower center", ncol=min(4, len(handles)),
                   title=KD_NOTE + " · bars: 95 % CI", title_fontsize=7)
        fig.suptitle(f"{dataset} / {model}: {score_title(rows)} vs training FLOPs per job (all its stages)", fontsize=10)
        fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(handles) / 4), 1, 1))
        path = out_dir / f"acc_vs_flops_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_radar(groups, refs, out_dir: Path, metric: str = "score_best_val", colors=None) -> list[Path]:
    """One polygon per method, one axis per sparsity level (like the paper's Figure 1)."""
    paths = []
    for (dataset, model), variants in sorted(_by_setting(groups, metric).items(), key=lambda kv: str(kv[0])):
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
                return None
            a, v = zip(*pts)
            drawn.extend(v)
            ax.plot([*a, a[0]], [*v, v[0]], **kw)
            return a, v

        for label, rows in sorted(variants.items()):
            kw = style(rows[0]["method"], rows[0]["retrain_kd"], rows[0].get("sanity"), colors)
            res = polygon({g["target_sparsity"]: 100 * g[f"{metric}_mean"] for g in rows}, label=label, **kw)
            if res and not rows[0].get("sanity"):
                ax.fill([*res[0], res[0][0]], [*res[1], res[1][0]], color=kw["color"], alpha=0.06)
        for (method, label), rows in sorted(_refs_for(refs, dataset, model).items()):
            polygon({r["sparsity"]: 100 * r["top1"] for r in rows if r["sparsity"] in levels},
                    color=method_color(method, colors), linestyle=":", marker="s", label=label)
        if drawn:  # the radius spans the data (from 0 the methods would be indistinguishable)
            lo, hi = min(drawn), max(drawn)
            pad = max(1.0, 0.1 * (hi - lo))
            ax.set_ylim(max(0.0, lo - 3 * pad), min(100.0, hi + pad))
        ax.set_rlabel_position(90 / len(levels))
        unit = score_unit([g for rows in variants.values() for g in rows])
        ax.text(math.radians(90 / len(levels)), ax.get_ylim()[1] * 1.02, f"radius: {unit}", fontsize=8,
                ha="left", va="bottom", color="#444444")
        ax.set_xticks(angles)
        ax.set_xticklabels([f"sparsity {100 * s:.4g}%" for s in levels], fontsize=8)
        checkpoint = "best-val checkpoint" if metric == "score_best_val" else "last epoch"
        ax.set_title(f"{dataset} / {model}: {unit} ({checkpoint}, mean over seeds) per sparsity", pad=24,
                     fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, title=KD_NOTE, title_fontsize=7)
        fig.tight_layout()
        path = out_dir / f"radar_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def plot_cost(groups, out_dir: Path, colors=None) -> list[Path]:
    """Training cost per method: mean FLOPs (when recorded), seconds and epochs per job."""
    paths = []
    by_setting: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for g in method_rows(groups):
        by_setting[(g["dataset"], g["model"])][g["variant"]].append(g)
    for (dataset, model), variants in sorted(by_setting.items(), key=lambda kv: str(kv[0])):
        labels = sorted(variants)

        def mean_of(rows, key):
            pairs = [(g[key], g["n"]) for g in rows if g.get(key) is not None]
            return sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1) if pairs else 0.0

        panels = []
        if any(g.get("cost_flops_mean") for rows in variants.values() for g in rows):
            panels.append(("cost_flops_mean", "training FLOPs per job (all stages)"))
        devices = sorted({g["device"] for rows in variants.values() for g in rows if g.get("device")})
        panels.append(("seconds_total_mean", f"seconds per job ({', '.join(devices) or 'device not recorded'})"))
        panels.append(("epochs_total_mean", "epochs per job (all stages)"))
        fig, axes = plt.subplots(1, len(panels), figsize=(max(7, 1.1 * len(labels) + 3) * len(panels) / 2, 4.2))
        bar_colors = [method_color(variants[lb][0]["method"], colors) for lb in labels]
        hatches = ["" if variants[lb][0]["retrain_kd"] else "//" for lb in labels]
        for ax, (key, ylabel) in zip(axes, panels):
            bars = ax.bar(labels, [mean_of(variants[lb], key) for lb in labels], color=bar_colors, edgecolor="white")
            for bar, h in zip(bars, hatches):
                bar.set_hatch(h)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(axis="x", rotation=35, labelsize=7)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{dataset} / {model}: training cost per method (mean per job; hatched: without KD)", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"cost_{_slug(dataset, model)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def make_plots(groups, refs, out_dir: Path, rows: list[dict] | None = None,
               colors: dict[str, str] | None = None) -> list[Path]:
    """All plots; ``rows`` (the jobs' metrics rows, with ``run_dir``) for the per-layer densities;
    ``colors``: ``{method: colour}`` (:func:`method_color`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [*plot_accuracy_vs_sparsity(groups, refs, out_dir, colors=colors),
            *plot_layer_density(rows or [], out_dir, colors=colors),
            *plot_accuracy_vs_flops(groups, out_dir, colors=colors),
            *plot_radar(groups, refs, out_dir, colors=colors), *plot_cost(groups, out_dir, colors=colors)]
