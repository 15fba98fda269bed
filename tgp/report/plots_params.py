"""``score_vs_params_*.png``: each text task's score (and the GLUE score) against the model's nonzero
parameters on a log axis — the plot the SDP paper's claim needs: a pruned model against dense models
with as many (or 6× more) nonzero parameters.

One series per method variant through its sparsities (more sparsity: fewer parameters, to the left),
the dense comparison models (``method=dense``) and the dense student as single labelled points, the
teacher as a horizontal line (its size is not recorded); bars are the 95 % CI over seeds. Colours and
line styles as in :mod:`tgp.report.plots`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import FuncFormatter  # noqa: E402

from tgp.report.plots import _SPARE_COLORS, DENSE_COLOR, KD_NOTE, TEACHER_COLOR, _slug, style  # noqa: E402
from tgp.report.scores import format_count, header, is_text  # noqa: E402

CHECKPOINT_TITLES = {"best_val": "best-val checkpoint", "last": "last epoch"}


def _value(g: dict, prefix: str) -> tuple[float, list[list[float]] | None] | None:
    mean = g.get(f"{prefix}_mean")
    if mean is None:
        return None
    y = 100 * mean
    lo, hi = g.get(f"{prefix}_lo"), g.get(f"{prefix}_hi")
    return y, ([[y - 100 * lo], [100 * hi - y]] if lo is not None else None)


def figure_colors(rows: list[dict], colors: dict[str, str] | None) -> dict[str, str]:
    """``colors`` plus a distinct spare colour for each method or dense model of ``rows`` it lacks (an
    ablation such as ``sdp (λ=0)``, ``dense bert_small``): no two series of one figure share a colour."""
    out = dict(colors or {})
    names = sorted({f"dense {g['model']}" if g.get("is_dense_model") else str(g["method"])
                    for g in rows if g.get("kind", "method") == "method"})
    spare = [c for c in _SPARE_COLORS if c not in out.values()] or list(_SPARE_COLORS)
    for i, name in enumerate(n for n in names if n not in out):
        out[name] = spare[i % len(spare)]
    return out


def _draw(ax, rows: list[dict], prefix_of, colors) -> int:
    """Draw ``rows`` (report rows with ``params_nonzero_mean``); ``prefix_of(g)``: the row's value fields.
    Returns how many points were drawn."""
    drawn = 0
    colors = figure_colors(rows, colors)
    series: dict[str, list[dict]] = defaultdict(list)
    for g in rows:
        point = _value(g, prefix_of(g))
        x = g.get("params_nonzero_mean")
        if point is None:
            continue
        if g.get("kind") == "teacher" or x is None:
            if g.get("kind") == "teacher":
                ax.axhline(point[0], color=TEACHER_COLOR, linestyle=":", linewidth=1.2, label=f"{g['label']} (n={g['n']})")
            continue
        if g.get("kind") == "dense" or g.get("is_dense_model"):
            marker, color = ("D", DENSE_COLOR) if g.get("kind") == "dense" else ("*", colors[f"dense {g['model']}"])
            ax.errorbar([x], [point[0]], yerr=point[1], marker=marker, markersize=11 if marker == "*" else 7,
                        color=color, capsize=3, linestyle="none", label=f"{g['label']} (n={g['n']})")
            ax.annotate(str(g["model"]), (x, point[0]), textcoords="offset points", xytext=(6, 6), fontsize=7,
                        color=color)
            drawn += 1
            continue
        series[g["variant"]].append(g)
    for label, gs in sorted(series.items()):
        gs.sort(key=lambda g: g["params_nonzero_mean"])
        kw = style(gs[0]["method"], gs[0]["retrain_kd"], gs[0].get("sanity"), colors)
        xs = [g["params_nonzero_mean"] for g in gs]
        points = [_value(g, prefix_of(g)) for g in gs]
        yerr = None
        if all(p[1] is not None for p in points):
            yerr = [[p[1][0][0] for p in points], [p[1][1][0] for p in points]]
        ax.errorbar(xs, [p[0] for p in points], yerr=yerr, capsize=3,
                    label=f"{label} (n={max(g['n'] for g in gs)})", **kw)
        drawn += len(gs)
    return drawn


def _finish(fig, ax, path: Path, ylabel: str, title: str) -> Path:
    ax.set_xscale("log")
    ticks = FuncFormatter(lambda x, _: format_count(x))
    ax.xaxis.set_major_formatter(ticks)
    ax.xaxis.set_minor_formatter(ticks)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("nonzero parameters of the whole model (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best", title=KD_NOTE + " · bars: 95 % CI", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_score_vs_params(groups: list[dict], glue: list[dict], out_dir: Path, checkpoint: str = "best_val",
                         colors=None) -> list[Path]:
    """One figure per text task (and one for the GLUE score rows ``glue``) with a nonzero-parameter count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    by_task: dict[str, list[dict]] = defaultdict(list)
    for g in groups:
        if is_text(g) or g.get("is_dense_model"):
            by_task[str(g["dataset"])].append(g)
    when = CHECKPOINT_TITLES[checkpoint]
    for task, rows in sorted(by_task.items()):
        fig, ax = plt.subplots(figsize=(8, 5))
        n = _draw(ax, rows, lambda g: f"score_{checkpoint if g.get('kind', 'method') == 'method' else 'last'}", colors)
        if not n:
            plt.close(fig)
            continue
        names = {g.get("score_name") for g in rows}
        unit = f"test {header(names.pop())}" if len(names) == 1 else "test score ×100"
        paths.append(_finish(fig, ax, out_dir / f"score_vs_params_{_slug(task)}.png", f"{unit} ({when})",
                             f"{task}: score vs nonzero parameters (mean over seeds, 95 % CI bars)"))
    if glue:
        fig, ax = plt.subplots(figsize=(8, 5))
        if _draw(ax, glue, lambda g: "glue", colors):
            names = {g["name"] for g in glue}
            what = names.pop() if len(names) == 1 else "mean over the GLUE tasks each row ran"
            ylabel = "GLUE score" if what == "GLUE score" else "mean score over GLUE tasks (not the GLUE score)"
            paths.append(_finish(fig, ax, out_dir / "score_vs_params_glue.png", f"{ylabel} ×100 ({when})",
                                 f"{what}: vs nonzero parameters (mean over seeds, 95 % CI bars)"))
        else:
            plt.close(fig)
    return paths
