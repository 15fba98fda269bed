"""``tgp-report --wandb``: one W&B comparison run for a sweep.

Logs a ``wandb.Table`` (method × retrain × dataset × model × sparsity: top-1 mean ± std, n) and,
per (dataset, model), an accuracy-vs-sparsity line chart (``wandb.plot.line_series``) with our
means and the published reference numbers, plus the report's PNG plots. Offline without an API
key, like the training runs (see tgp/logging_wandb.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def log_comparison(groups: list[dict], refs: list[dict], plots: list[Path], *, name: str, project: str = "tgp",
                   save_dir: str | Path | None = None) -> str | None:
    """Log the comparison run; return its local folder (what ``wandb sync`` takes)."""
    import wandb

    from tgp.logging_wandb import ensure_wandb_mode
    from tgp.report.aggregate import variant_label

    mode = ensure_wandb_mode()
    save_dir = Path(save_dir) if save_dir else (Path(plots[0]).parent if plots else Path("."))
    run = wandb.init(project=project, group=name, job_type="report", name=f"report-{name}", dir=str(save_dir),
                     reinit="create_new")
    try:
        columns = ["method", "retrain_kd", "dataset", "model", "sparsity", "top1_best_val_mean", "top1_best_val_std",
                   "top1_last_mean", "top1_last_std", "measured_sparsity", "epochs_total", "seconds_total", "n"]
        table = wandb.Table(columns=columns)
        for g in groups:
            table.add_data(g["method"], g["retrain_kd"], g["dataset"], g["model"], g["target_sparsity"],
                           g["top1_best_val_mean"], g["top1_best_val_std"], g["top1_last_mean"], g["top1_last_std"],
                           g["measured_sparsity_mean"], g["epochs_total_mean"], g["seconds_total_mean"], g["n"])
        logs = {"comparison": table}
        ref_table = wandb.Table(columns=["source", "method", "dataset", "model", "sparsity", "top1", "arxiv", "table"])
        for r in refs:
            ref_table.add_data(r["source"], r["method"], r["dataset"], r["model"], r["sparsity"], r["top1"],
                               r["arxiv"], r["table"])
        logs["references"] = ref_table

        settings: dict[tuple, dict[str, dict[float, float]]] = defaultdict(dict)
        for g in groups:
            if isinstance(g["target_sparsity"], (int, float)) and g["top1_best_val_mean"] is not None:
                label = variant_label(g["method"], g["retrain_kd"])
                settings[(g["dataset"], g["model"])].setdefault(label, {})[g["target_sparsity"]] = g["top1_best_val_mean"]
        for r in refs:
            key = (r["dataset"], r["model"])
            if key in settings:
                settings[key].setdefault(f"{r['method']} [{r['source']}]", {})[r["sparsity"]] = r["top1"]
        for (dataset, model), series in settings.items():
            labels = sorted(series)
            logs[f"acc_vs_sparsity/{dataset}/{model}"] = wandb.plot.line_series(
                xs=[sorted(series[lb]) for lb in labels],
                ys=[[series[lb][s] for s in sorted(series[lb])] for lb in labels],
                keys=labels, title=f"{dataset} / {model}: top-1 vs sparsity", xname="target sparsity",
            )
        for p in plots:
            logs[f"plots/{Path(p).stem}"] = wandb.Image(str(p))
        run.log(logs)
        run.summary.update({"n_settings": len(groups), "n_references": len(refs)})
        sync_dir = getattr(run.settings, "sync_dir", None)
    finally:
        run.finish()
    if mode == "offline" and sync_dir:
        print(f"tgp-report: W&B comparison run saved offline; upload it with: wandb sync {sync_dir}", flush=True)
    return sync_dir
