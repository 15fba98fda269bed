"""``tgp-report --wandb``: one W&B comparison run for a sweep.

Logs a ``wandb.Table`` ``comparison`` (method [+ sanity variant] × retrain × dataset × model ×
sparsity, plus the teacher and dense-student rows: top-1 mean ± std, 95 % CI, n, the paired
difference to the reference method with its CI and mark (columns named ``top1_*`` when every row
scores top-1, else ``score_*`` beside a ``score_name`` column: an MCC is never called top-1), nominal/measured/effective sparsity,
training FLOPs and seconds per job), a ``cost`` table (per method, each stage once), per
(dataset, model) an accuracy-vs-sparsity line chart (``wandb.plot.line_series``) with our means
and the published reference numbers, and the report's PNG plots. Offline without an API
key, like the training runs (see tgp/logging_wandb.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


COLUMNS = ("kind", "method", "sanity", "retrain_kd", "dataset", "model", "sparsity", "measured_sparsity",
           "effective_sparsity", "top1_best_val_mean", "top1_best_val_std", "top1_best_val_ci_lo", "top1_best_val_ci_hi",
           "top1_last_mean", "top1_last_std", "top1_last_ci_lo", "top1_last_ci_hi", "reference",
           "diff_top1_best_val_mean", "diff_top1_best_val_ci_lo", "diff_top1_best_val_ci_hi", "diff_top1_best_val_mark",
           "diff_top1_last_mean", "diff_top1_last_ci_lo", "diff_top1_last_ci_hi", "diff_top1_last_mark", "n_pairs",
           "train_flops_per_job", "seconds_per_job", "device", "epochs_total", "n")


def score_prefix(groups: list[dict]) -> str:
    """``top1`` when every row scores top-1 (images), else ``score``."""
    return "top1" if all((g.get("score_name") or "top1") == "top1" for g in groups) else "score"


def columns(groups: list[dict]) -> list[str]:
    """:data:`COLUMNS`, for rows scored otherwise than by top-1 named ``score_*`` with a ``score_name`` column."""
    if score_prefix(groups) == "top1":
        return list(COLUMNS)
    return [c.replace("top1_", "score_") for c in COLUMNS] + ["score_name"]


def comparison_rows(groups: list[dict]) -> list[list]:
    """The rows of the ``comparison`` table, in :func:`columns` order."""
    text = score_prefix(groups) != "top1"
    out = []
    for g in groups:
        g = {**g, **{k.replace("score_", "top1_"): v for k, v in g.items() if "score_" in k and k != "score_name"}}
        out.append([
            g.get("kind", "method"), g.get("label") or g["method"], g.get("sanity"), g.get("retrain_kd"), g["dataset"],
            g["model"], g["target_sparsity"], g.get("measured_sparsity_mean"), g.get("effective_sparsity_mean"),
            g["top1_best_val_mean"], g["top1_best_val_std"], g.get("top1_best_val_lo"), g.get("top1_best_val_hi"),
            g["top1_last_mean"], g["top1_last_std"], g.get("top1_last_lo"), g.get("top1_last_hi"), g.get("reference"),
            g.get("diff_top1_best_val_mean"), g.get("diff_top1_best_val_lo"), g.get("diff_top1_best_val_hi"),
            g.get("diff_top1_best_val_mark", ""), g.get("diff_top1_last_mean"), g.get("diff_top1_last_lo"),
            g.get("diff_top1_last_hi"), g.get("diff_top1_last_mark", ""), g.get("diff_top1_best_val_n", 0),
            g.get("cost_flops_mean"), g.get("seconds_total_mean"), g.get("device"), g.get("epochs_total_mean"), g["n"],
        ] + ([g.get("score_name")] if text else []))
    return out


def log_comparison(groups: list[dict], refs: list[dict], plots: list[Path], *, name: str, project: str = "tgp",
                   save_dir: str | Path | None = None, costs: list[dict] | None = None) -> str | None:
    """Log the comparison run; return its local folder (what ``wandb sync`` takes)."""
    import wandb

    from tgp.logging_wandb import ensure_wandb_mode
    from tgp.report.aggregate import method_rows
    from tgp.report.references import same_model
    from tgp.report.scores import title

    mode = ensure_wandb_mode()
    save_dir = Path(save_dir) if save_dir else (Path(plots[0]).parent if plots else Path("."))
    run = wandb.init(project=project, group=name, job_type="report", name=f"report-{name}", dir=str(save_dir),
                     reinit="create_new")
    try:
        table = wandb.Table(columns=columns(groups))
        for row in comparison_rows(groups):
            table.add_data(*row)
        logs = {"comparison": table}
        if costs:
            cost_table = wandb.Table(columns=["method", "dataset", "model", "seeds", "jobs", "train_flops",
                                              "train_flops_exclusive", "seconds", "seconds_device"])
            for c in costs:
                cost_table.add_data(c.get("label") or c.get("method"), c.get("dataset"), c.get("model"), c.get("seeds"),
                                    c.get("jobs"), c.get("flops"), c.get("flops_exclusive"), c.get("seconds"),
                                    c.get("seconds_device"))
            logs["cost"] = cost_table
        ref_table = wandb.Table(columns=["source", "method", "dataset", "model", "sparsity", "top1", "arxiv", "table"])
        for r in refs:
            ref_table.add_data(r["source"], r["method"], r["dataset"], r["model"], r["sparsity"], r["top1"],
                               r["arxiv"], r["table"])
        logs["references"] = ref_table

        settings: dict[tuple, dict[str, dict[float, float]]] = defaultdict(dict)
        for g in method_rows(groups):
            if isinstance(g["target_sparsity"], (int, float)) and g.get("score_best_val_mean") is not None:
                label = g["variant"]
                settings[(g["dataset"], g["model"])].setdefault(label, {})[g["target_sparsity"]] = g["score_best_val_mean"]
        for r in refs:
            for (dataset, model), series in settings.items():
                if dataset == r["dataset"] and same_model(r["model"], model):
                    series.setdefault(f"{r['method']} [{r['source']}]", {})[r["sparsity"]] = r["top1"]
        score_names = {(g["dataset"], g["model"]): title(g.get("score_name") or "top1") for g in method_rows(groups)}
        for (dataset, model), series in settings.items():
            labels = sorted(series)
            logs[f"acc_vs_sparsity/{dataset}/{model}"] = wandb.plot.line_series(
                xs=[sorted(series[lb]) for lb in labels],
                ys=[[series[lb][s] for s in sorted(series[lb])] for lb in labels],
                keys=labels, title=f"{dataset} / {model}: {score_names.get((dataset, model), 'score')} vs sparsity",
                xname="target sparsity",
            )
        for p in plots:
            logs[f"plots/{Path(p).stem.replace('.', '_')}"] = wandb.Image(str(p))  # a '.' in a key nests it
        run.log(logs)
        run.summary.update({"n_settings": len(method_rows(groups)), "n_references": len(refs),
                            "reference_method": next((g["reference"] for g in groups if g.get("reference")), None)})
        sync_dir = getattr(run.settings, "sync_dir", None)
    finally:
        run.finish()
    if mode == "offline" and sync_dir:
        print(f"tgp-report: W&B comparison run saved offline; upload it with: wandb sync {sync_dir}", flush=True)
    return sync_dir
