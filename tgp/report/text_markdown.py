"""The text tasks' part of ``report.md``: the score table per kind of score, the GLUE score, the
official metrics of the tasks with more than one, and XGLUE's languages.

Every text table lists, per task, the teacher and dense-student rows, then the dense comparison
models (``method=dense``: ``dense bert_small (28.8M)``, by nonzero parameters) beside the pruned rows,
so a pruned model is read against dense models of its size. Every value is mean ± std over seeds with
its 95 % CI and the paired difference to the reference method (:mod:`tgp.report.stats`).
"""

from __future__ import annotations

import math

from tgp.data.text.tasks import TASKS
from tgp.report.aggregate import KIND_ORDER
from tgp.report.markdown import _ci, _diff_cell, _pct, _sparsity, markdown_table
from tgp.report.scores import AVERAGE, GLUE_TASKS, format_count, metric_field, parse_field, title, unit

CHECKPOINT_TITLES = {"best_val": "best-val checkpoint", "last": "last epoch"}


def _first_seen(items) -> list:
    return list(dict.fromkeys(items))


def text_order(groups: list[dict]) -> list[dict]:
    """Per task: teacher, dense student, the dense comparison models (fewest parameters first), then the
    pruned rows by model, sparsity, KD before CE, the reference first."""
    def key(g):
        ts = g["target_sparsity"] if isinstance(g["target_sparsity"], (int, float)) else math.inf
        params = g.get("params_nonzero_mean") if g.get("is_dense_model") else None
        return (str(g["dataset"]), KIND_ORDER[g.get("kind", "method")], not g.get("is_dense_model"),
                params if params is not None else math.inf, str(g["model"]), ts, g["retrain_kd"] is False,
                not g.get("is_reference"), str(g["method"]), str(g.get("sanity") or ""))

    return sorted(groups, key=key)


def _row_start(g: dict) -> list[str]:
    kind = g.get("kind", "method")
    return [g.get("label") or str(g["method"]), "—" if kind != "method" else ("yes" if g["retrain_kd"] else "no"),
            str(g["model"]), "0 (dense)" if kind != "method" or g.get("is_dense_model") else _sparsity(g["target_sparsity"]),
            format_count(g.get("params_nonzero_mean"))]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _vs(groups) -> str:
    ref = next((g["reference"] for g in groups if g.get("reference")), None)
    return f"Δ vs {ref}" if ref else "Δ vs reference"


def _value_cells(g: dict, field: str) -> list[str]:
    """mean ± std, CI and Δ of one official-metric field of a group (``—`` where it has none)."""
    m = (g.get("metrics") or {}).get(field)
    if not m or m.get("value_mean") is None:
        return ["—", "—", "—"]
    view = {**m, "kind": g.get("kind", "method"), "reference": g.get("reference"), "is_reference": g.get("is_reference"),
            "is_dense_model": g.get("is_dense_model"), "n": m["value_n"]}
    return [_pct(m["value_mean"], m["value_std"]), _ci(m["value_lo"], m["value_hi"]), _diff_cell(view, "value")]


def _score_cells(g: dict, checkpoint: str) -> list[str]:
    """The task score at ``checkpoint``; a teacher or dense student has its last epoch only."""
    ck = checkpoint if g.get("kind", "method") == "method" else "last"
    return [_pct(g.get(f"score_{ck}_mean"), g.get(f"score_{ck}_std")), _ci(g.get(f"score_{ck}_lo"), g.get(f"score_{ck}_hi")),
            _diff_cell(g, f"score_{ck}")]


def _metric_title(field: str) -> str:
    _, _, group, metric = parse_field(field)
    return f"{group + ' ' if group else ''}{title(metric)} {unit(metric)}"


def score_tables(groups: list[dict], legend: list[str]) -> list[str]:
    """One table per kind of score (``accuracy``: SST-2, MNLI, …; ``MCC``: CoLA), as the image table."""
    out = ["## Text tasks: the score of each task", ""]
    ordered = text_order(groups)
    for name in _first_seen(g["score_name"] for g in ordered):
        rows = [g for g in ordered if g["score_name"] == name]
        tasks = ", ".join(_first_seen(str(g["dataset"]) for g in rows))
        out += [f"### {title(name)} ({tasks})", "", markdown_table(rows, name, params=True), ""]
    out += [*legend,
            "- *nonzero params*: parameters of the whole model (embeddings and head included) that are nonzero.",
            "- *dense <model> (<nonzero params>)* rows (`method=dense`): that model fine-tuned dense for the same "
            "total budget, no pruning: the comparison models the SDP paper names (a smaller dense Transformer with "
            "as many nonzero parameters; a distilled one about 6× larger). They have no paired difference: they "
            "are another model, not a variant of the reference.", ""]
    return out


def glue_section(glue: list[dict], checkpoint: str) -> list[str]:
    """The GLUE score per (method, model, sparsity, retrain KD) — or, over fewer tasks, a mean that says so."""
    full = all(len(g["tasks"]) == len(GLUE_TASKS) for g in glue)
    sets = _first_seen(tuple(g["tasks"]) for g in glue)
    if full:
        heading, column = "## GLUE score", "GLUE score ×100"
    elif len(sets) == 1:
        heading = f"## Mean score over {len(sets[0])} of {len(GLUE_TASKS)} GLUE tasks (not the GLUE score)"
        column = "mean task score ×100"
    else:
        heading, column = "## Mean score over the GLUE tasks each row ran (not the GLUE score)", "mean task score ×100"
    header = ["method", "retrain KD", "model", "target sparsity %", "nonzero params (mean over tasks)", "tasks",
              f"{column} (mean ± std)", "95 % CI", f"{_vs(glue)} (×100, 95 % CI)", "n seeds"]
    rows = []
    for g in glue:
        k = len(g["tasks"])
        tasks = f"all {k}" if k == len(GLUE_TASKS) else f"{k} of {len(GLUE_TASKS)}: {', '.join(g['tasks'])}"
        view = {**g, "n": g["glue_n"]}
        diff = _diff_cell(view, "glue")
        if g.get("diff_note") and not g.get("diff_glue_n"):
            diff = f"— ({g['diff_note']})"
        seeds = str(g["glue_n"]) + (f" ({len(g['seeds_incomplete'])} left out: a task missing)"
                                    if g["seeds_incomplete"] else "")
        rows.append([*_row_start(g), tasks, _pct(g["glue_mean"], g["glue_std"]), _ci(g["glue_lo"], g["glue_hi"]), diff,
                     seeds])
    note = ("Per seed: the mean of the task scores over the tasks named (a task with two metrics contributes their "
            "mean, MNLI the mean of its matched and mismatched accuracies), then mean ± std, 95 % CI and the paired "
            "difference over seeds; a seed that lacks one of the tasks is left out, not scored on fewer. "
            f"Methods at the {CHECKPOINT_TITLES[checkpoint]}; teacher and dense student at the last epoch of their "
            "stages. The GLUE score is the mean over GLUE's 8 tasks run here (WNLI left out, as in BERT's paper); "
            "a mean over fewer is never called the GLUE score, and a difference is only taken between rows over "
            "the same tasks.")
    return [heading, "", *_table(header, rows), "", note, ""]


def _task_fields(groups: list[dict], checkpoint: str, groups_only: bool = False) -> list[str]:
    fields = _first_seen(f for g in groups for f in (g.get("metrics") or {}) if parse_field(f)[1] == checkpoint)
    grouped = [f for f in fields if parse_field(f)[0] == "group" and parse_field(f)[2] != AVERAGE]
    return grouped if (grouped or groups_only) else [f for f in fields if parse_field(f)[0] == "metric"]


def official_metrics_section(groups: list[dict], checkpoint: str) -> list[str]:
    """Per task with more than one official number (MRPC/QQP: accuracy and F1; STS-B: Pearson and
    Spearman; MNLI: matched and mismatched): each number and the task score, with CIs and Δ."""
    out = []
    ordered = text_order([g for g in groups if g.get("benchmark") != "xglue"])
    for task in _first_seen(str(g["dataset"]) for g in ordered):
        rows = [g for g in ordered if str(g["dataset"]) == task]
        fields = _task_fields(rows, checkpoint)
        if len(fields) < 2:
            continue
        vs = _vs(rows)
        header = ["method", "retrain KD", "model", "target sparsity %", "nonzero params"]
        for f in fields:
            header += [f"{_metric_title(f)} (mean ± std)", "95 % CI", f"{vs} (×100, 95 % CI)"]
        name = rows[0]["score_name"]
        header += [f"score: {title(name)} {unit(name)}", "95 % CI", f"{vs} (×100, 95 % CI)", "n seeds"]
        table = [[*_row_start(g), *(c for f in fields for c in _value_cells(g, f)), *_score_cells(g, checkpoint),
                  str(g["n"])] for g in rows]
        out += [f"### {task}", "", *_table(header, table), ""]
    if out:
        out = [f"## Official metrics of the tasks with more than one ({CHECKPOINT_TITLES[checkpoint]})", "", *out,
               "The task's score (its single number) is the mean of these; teacher and dense-student rows carry only "
               "their score (last epoch of their stage).", ""]
    return out


def _languages(task: str, fields: list[str]) -> list[str]:
    seen = _first_seen(parse_field(f)[2] for f in fields)
    known = list(TASKS[task].tests) if task in TASKS else []
    return [lang for lang in known if lang in seen] + sorted(lang for lang in seen if lang not in known)


def xglue_section(groups: list[dict], checkpoint: str) -> list[str]:
    """Per XGLUE task: one row per language and the unweighted average over languages, per variant."""
    out = []
    ordered = text_order([g for g in groups if g.get("benchmark") == "xglue"])
    for task in _first_seen(str(g["dataset"]) for g in ordered):
        rows = [g for g in ordered if str(g["dataset"]) == task]
        fields = _task_fields(rows, checkpoint, groups_only=True)
        metrics = _first_seen(parse_field(f)[3] for f in fields)
        languages = _languages(task, fields)
        vs = _vs(rows)
        header = ["method", "retrain KD", "model", "target sparsity %", "nonzero params", "language"]
        for m in metrics:
            header += [f"{title(m)} {unit(m)} (mean ± std)", "95 % CI", f"{vs} (×100, 95 % CI)"]
        header.append("n seeds")
        table = []
        for g in rows:
            start = _row_start(g)
            for lang in [*languages, AVERAGE]:
                cells = [c for m in metrics for c in _value_cells(g, metric_field(checkpoint, m, lang))]
                if lang == AVERAGE and all(c == "—" for c in cells):  # teacher / dense student: their score only
                    cells = [c for _ in metrics for c in _score_cells(g, checkpoint)]
                elif all(c == "—" for c in cells):
                    continue
                label = "**average**" if lang == AVERAGE else lang
                table.append([*start, label, *cells, str(g["n"])])
        out += [f"### {task} ({len(languages)} languages)", "", *_table(header, table), ""]
    if out:
        out = [f"## XGLUE: every language, trained on English ({CHECKPOINT_TITLES[checkpoint]})", "", *out,
               "Zero-shot cross-lingual: trained on English only. *average*: the unweighted mean over the languages "
               "per seed (the task's score), then over seeds like a language; teacher and dense-student rows carry "
               "only that average (last epoch of their stage).", ""]
    return out


def text_sections(groups: list[dict], glue: list[dict], checkpoint: str, legend: list[str]) -> list[str]:
    """Everything ``report.md`` says about text tasks."""
    out = score_tables(groups, legend)
    if glue:
        out += glue_section(glue, checkpoint)
    out += official_metrics_section(groups, checkpoint)
    out += xglue_section(groups, checkpoint)
    return out
