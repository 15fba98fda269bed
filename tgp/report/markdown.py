"""The report's text: the main table, its legend, the cost table and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from tgp.report.aggregate import method_costs, method_label, method_rows
from tgp.report.jobs import Jobs
from tgp.report.power_table import power_sentence, power_table
from tgp.report.references import model_label
from tgp.report.scores import TOP1, format_count, is_text, title, unit
from tgp.report.stats import LEVEL

#: which checkpoint each accuracy column of an image report is (a text task's: :func:`checkpoint_note`)
CHECKPOINTS = {
    "top1_best_val": "test top-1 of the checkpoint from the epoch with the best *validation* accuracy "
                     "(selected on the validation split, never on test)",
    "top1_last": "test top-1 after the last epoch",
    "top1_teacher": "the teacher's test top-1 after the last epoch of its stage",
    "top1_dense_student": "the dense student's test top-1 after the last epoch of its dense stage "
                          "(before pruning; the stage named in the row)",
}


def checkpoint_note(key: str, score_name: str = TOP1) -> str:
    """What a score column holds (``top1_best_val`` … as :data:`CHECKPOINTS`), for any score: a text
    task's test set is its official dev set, its selection split is carved from train."""
    if score_name == TOP1:
        return CHECKPOINTS[key]
    name = f"test {title(score_name)}"
    return {"top1_best_val": f"{name} of the checkpoint from the epoch with the best *validation* score (selected "
                             "on the split carved from train, never on the official dev set, which is the test set)",
            "top1_last": f"{name} after the last epoch",
            "top1_teacher": f"the teacher's {name} after the last epoch of its stage",
            "top1_dense_student": f"the dense student's {name} after the last epoch of its dense stage "
                                  "(before pruning; the stage named in the row)"}[key]


def _pct(mean, std=None, digits=2) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.{digits}f}" if std is None else f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _ci(lo, hi, digits=2) -> str:
    return "—" if lo is None else f"[{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def _signed(x, digits=2) -> str:
    return f"{100 * x:+.{digits}f}".replace("-", "−")


def _diff_cell(g: dict, metric: str) -> str:
    """``+1.23 [−0.50, +2.96] *`` (percentage points, paired over matched seeds)."""
    if g.get("kind", "method") != "method" or not g.get("reference"):
        return "—"
    if g.get("is_dense_model"):
        return "— (another model)"
    if g.get("is_reference"):
        return "reference"
    n = g.get(f"diff_{metric}_n") or 0
    if n == 0:
        return "— (no matched seed)"
    mean, lo, hi = g[f"diff_{metric}_mean"], g[f"diff_{metric}_lo"], g[f"diff_{metric}_hi"]
    if lo is None:
        return f"{_signed(mean)} (1 pair, no CI)"
    cell = f"{_signed(mean)} [{_signed(lo)}, {_signed(hi)}]"
    if g.get(f"diff_{metric}_mark"):
        cell += f" {g[f'diff_{metric}_mark']}"
    if n < g["n"]:
        cell += f" ({n} pairs)"
    return cell


def _flops(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def _sparsity(x) -> str:
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) else ("—" if x is None else str(x))


def markdown_table(groups: list[dict], score_name: str = TOP1, params: bool = False) -> str:
    """Teacher, dense student and method rows per (dataset, model); see :func:`markdown_report` for
    what each column is. The score columns are named after ``score_name`` (``top-1 %``, ``MCC ×100``);
    ``params``: a nonzero-parameter column too (text tables)."""
    ref = next((g["reference"] for g in groups if g.get("reference")), None)
    vs = f"Δ vs {ref}" if ref else "Δ vs reference"
    name, u, pp = title(score_name), unit(score_name), "pp" if unit(score_name) == "%" else "×100"
    header = ["method", "retrain KD", "dataset", "model", "target sparsity %", "measured sparsity %",
              "effective sparsity %", *(["nonzero params"] if params else []),
              f"{name} best-val {u} (mean ± std)", "best-val 95 % CI", f"{vs}, best-val ({pp}, 95 % CI)",
              f"{name} last {u} (mean ± std)", "last 95 % CI", f"{vs}, last ({pp}, 95 % CI)", "train FLOPs / job",
              "seconds / job (device)", "epochs / job", "n seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for g in groups:
        kind = g.get("kind", "method")
        secs = g.get("seconds_total_mean")
        secs = "—" if secs is None else f"{secs:.1f}" + (f" ({g['device']})" if g.get("device") else "")
        epochs = g.get("epochs_total_mean")
        cells = [
            g.get("label") or method_label(g["method"], g.get("sanity")),
            "—" if kind != "method" else ("yes" if g["retrain_kd"] else "no"),
            str(g["dataset"]), str(g["model"]),
            "0 (dense)" if kind != "method" or g.get("is_dense_model") else _sparsity(g["target_sparsity"]),
            _sparsity(g.get("measured_sparsity_mean")), _sparsity(g.get("effective_sparsity_mean")),
            *([format_count(g.get("params_nonzero_mean"))] if params else []),
            _pct(g["score_best_val_mean"], g["score_best_val_std"]),
            _ci(g.get("score_best_val_lo"), g.get("score_best_val_hi")), _diff_cell(g, "score_best_val"),
            _pct(g["score_last_mean"], g["score_last_std"]), _ci(g.get("score_last_lo"), g.get("score_last_hi")),
            _diff_cell(g, "score_last"),
            _flops(g.get("cost_flops_mean")), secs, "—" if epochs is None else f"{epochs:.0f}", str(g["n"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(costs: list[dict]) -> str:
    header = ["method", "dataset", "model", "seeds", "jobs", "stages", "training FLOPs (each stage once)",
              "exclusive FLOPs", "teacher FLOPs", "seconds (secondary)", "device", "unmeasured stages"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for c in costs:
        secs = c.get("seconds")
        cells = [c.get("label") or str(c.get("method")), str(c.get("dataset") or "—"), str(c.get("model") or "—"),
                 "—" if c.get("seeds") is None else str(c["seeds"]), str(c.get("jobs", "—")),
                 "—" if c.get("stages") is None else f"{c['stages']:g}", _flops(c.get("flops")),
                 _flops(c.get("flops_exclusive")), _flops(c.get("flops_teacher")),
                 "—" if secs is None else f"{secs:.1f}", c.get("seconds_device") or "not recorded",
                 ", ".join(c.get("unmeasured") or []) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(r: dict) -> str:
    s = r.get("target_sparsity")
    model = model_label(r.get("model"), r.get("model_width"))
    return (f"{method_label(r.get('method'), r.get('sanity'))} / {r.get('dataset')} / {model} / sparsity {s} / "
            f"{'KD' if r.get('retrain_kd') else 'CE'} retrain / seed {r.get('seed')}")


def _legend(groups: list[dict], text: bool = False) -> list[str]:
    """The main table's legend; ``text``: for text tasks' tables (each task's own score)."""
    ref = next((g["reference"] for g in groups if g.get("reference")), None)
    level = f"{100 * LEVEL:.0f} %"
    score = "score" if text else TOP1
    what = ("Scores are each task's score on its official dev set (the test split; GLUE's test labels are "
            "hidden): accuracies and F1 in %, correlations (MCC, Pearson r, Spearman ρ) ×100; a task with two "
            "metrics scores their mean, one with several evaluation sets the mean over them" if text
            else "Accuracies are test top-1 in %")
    out = [f"**Columns.** {what}: mean ± sample std over seeds, and the "
           f"{level} confidence interval of the mean, `mean ± t(0.975, n−1)·std/√n` (Student t over seeds; "
           "none from one seed).",
           f"- *best-val*: {checkpoint_note('top1_best_val', score)}.",
           f"- *last*: {checkpoint_note('top1_last', score)}.",
           f"- *teacher* rows: {checkpoint_note('top1_teacher', score)}; *dense student* rows: "
           f"{checkpoint_note('top1_dense_student', score)}. Both in the *last* column, each seed counted once.",
           "- *target sparsity*: the nominal fraction of prunable weights removed; *measured*: read off the "
           "weights; *effective*: also counting weights on no input→output path (Vysogorets & Kempe 2023).",
           "- *train FLOPs / job*: the job's training FLOPs with its shared stages (teacher, dense pretraining) "
           "included, as if it ran alone; the cost per method, each shared stage once, is below. "
           "*seconds / job* is wall time on the device named beside it (secondary: it depends on the hardware)."]
    if ref:
        points = "points (score ×100)" if text else "percentage points"
        out.append(f"- *Δ vs {ref}*: paired difference to {ref} in {points}, over the seeds both ran "
                   "in the same cell (dataset, model, target sparsity, retrain KD): the mean of the per-seed "
                   f"differences and its {level} CI; `*` marks an interval that excludes 0. A sanity-check row "
                   "(`method + variant`) is that method with its score replaced as named; a score that does not "
                   "beat its own layer shuffle only chose per-layer densities.")
    else:
        out.append("- no paired differences (no reference method among the finished jobs; `--reference METHOD`).")
    few = sorted({g["label"] for g in method_rows(groups) if g["n"] < 3})
    if few:
        out.append(f"- fewer than 3 seeds (no claim should rest on these): {', '.join(few)}.")
    return out


def markdown_report(root: Path, jobs: Jobs, groups: list[dict], refs: list[dict], plots: list[Path],
                    costs: tuple[list[dict], str] | None = None, glue: list[dict] | None = None,
                    checkpoint: str = "best_val") -> str:
    """The whole ``report.md``; text tasks' rows get their own sections (:mod:`tgp.report.text_markdown`:
    per score, the GLUE score rows ``glue``, official metrics, XGLUE languages; at ``checkpoint``)."""
    out = [f"# tgp report: {root}", "",
           f"{len(jobs.ok)} jobs done, {len(jobs.failed)} failed, {len(jobs.incomplete)} incomplete, "
           f"{len(jobs.missing)} missing" + (f", {len(jobs.damaged)} damaged." if jobs.damaged else "."), ""]
    image, text = [g for g in groups if not is_text(g)], [g for g in groups if is_text(g)]
    if image:
        out += [markdown_table(image), "", *_legend(image), ""]
    if text:
        from tgp.report.text_markdown import text_sections

        out += text_sections(text, glue or [], checkpoint, _legend(text, text=True))
    power = power_table(groups)
    if power:
        out += [power, "", power_sentence(groups), ""]
    if not groups:
        out += ["_no finished job_", ""]
    if costs is None:
        costs = method_costs(jobs.ok)
    cost_rows, source = costs
    out += ["## Training cost per method", ""]
    out += ([cost_table(cost_rows), "", f"Method rows: per seed, mean over seeds; the last row: all seeds. Source: {source}.", ""] if cost_rows
            else [f"_{source}_", ""])
    if refs:
        out += ["## Published reference numbers (drawn dotted in the plots)", "",
                "| source | method | dataset | model | sparsity % | top-1 % | arXiv | table |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['source']} | {r['method']} | {r['dataset']} | {r['model']} | {100 * r['sparsity']:.2f} | "
                f"{100 * r['top1']:.2f} | {r['arxiv']} | {r['table']} |" for r in refs]
        out.append("")
    out += ["## Failed jobs", ""]
    out += [f"- {_describe(r)}: `{r.get('error')}` ({r.get('run_dir')})" for r in jobs.failed] or ["none"]
    out.append("")
    if jobs.damaged:
        out += ["## Damaged jobs (finished, but a file they wrote no longer matches its record; re-run to recompute)", ""]
        out += [f"- {_describe(r)}: `{r.get('error')}` ({r.get('run_dir')})" for r in jobs.damaged]
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
