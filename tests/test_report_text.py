"""tgp-report on hand-made text job folders (no training): each task's score under its own name, the
GLUE score against a hand computation (a two-metric task, MNLI's two sets, a partial task set, a seed
missing a task), XGLUE per-language rows and their average, paired differences on text scores, the
dense comparison rows, the score-vs-nonzero-parameters plot."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats as sps

from tgp.report.cli import run_report
from tgp.report.scores import GLUE_TASKS

BERT_TOTAL, BERT_PRUNABLE = 109_482_240, 84_934_656
DENSE_MODELS = {"bert_small": 28_763_648, "distilbert": 66_955_010}
SEEDS = (0, 1, 2)
SPARSITY = 0.9
XNLI_LANGS = ("en", "de", "fr")


def _mean(xs):
    return sum(xs) / len(xs)


def official(task: str, rng: random.Random, shift: float) -> tuple[dict, dict | None, str, float]:
    """``(metrics, groups, score_name, score)`` of one run of ``task`` as the pipeline writes them."""
    u = lambda lo, hi: round(rng.uniform(lo, hi) + shift, 4)  # noqa: E731
    if task == "cola":
        m = {"mcc": u(0.30, 0.50)}
        return m, None, "mcc", m["mcc"]
    if task == "mrpc":
        m = {"accuracy": u(0.80, 0.85), "f1": u(0.86, 0.90)}
        return m, None, "acc_f1", (m["accuracy"] + m["f1"]) / 2
    if task == "stsb":
        m = {"pearson": u(0.85, 0.88), "spearman": u(0.84, 0.87)}
        return m, None, "pearson_spearman", (m["pearson"] + m["spearman"]) / 2
    if task == "mnli":
        g = {"matched": {"accuracy": u(0.80, 0.84)}, "mismatched": {"accuracy": u(0.79, 0.85)}}
        score = _mean([v["accuracy"] for v in g.values()])
        return {"accuracy": score}, g, "acc", score
    if task == "xnli":
        g = {lang: {"accuracy": u(0.60, 0.80)} for lang in XNLI_LANGS}
        score = _mean([v["accuracy"] for v in g.values()])
        return {"accuracy": score}, g, "acc", score
    m = {"accuracy": u(0.60, 0.90)}
    return m, None, "acc", m["accuracy"]


def text_job(root: Path, method: str, task: str, seed: int, *, model="bert_base", sparsity=SPARSITY, shift=0.0,
             cc_weight=None) -> dict:
    """One job folder (metrics.json as the text pipeline writes it, config.yaml); returns the row."""
    rng = random.Random(f"{method}-{cc_weight}-{task}-{seed}-{model}-{sparsity}")
    best, groups_best, score_name, score_best = official(task, rng, shift)
    last, groups_last, _, score_last = official(task, rng, shift - 0.01)
    benchmark = "xglue" if task in ("xnli", "pawsx") else "glue"
    total = DENSE_MODELS.get(model, BERT_TOTAL)
    dense = method == "dense"
    row = {"method": method, "dataset": task, "benchmark": benchmark, "model": model, "seed": seed,
           "retrain_kd": False, "uses_teacher": False, "sanity": None, "target_sparsity": 0.0 if dense else sparsity,
           "measured_sparsity": 0.0 if dense else sparsity, "score_name": score_name,
           "score_best_val": score_best, "score_last": score_last, "metrics_best_val": best, "metrics_last": last,
           "groups_best_val": groups_best, "groups_last": groups_last,
           "score_dense_student": None if dense else 0.9 + 0.01 * seed, "dense_stage": None if dense else "dense",
           "top1_best_val": None, "top1_last": None, "params_total": total,
           "params_nonzero": total if dense else total - round(sparsity * BERT_PRUNABLE),
           "epochs_total": 6, "seconds_total": 10.0, "status": "ok"}
    name = f"{method}{'' if cc_weight is None else f'-cc{cc_weight}'}-{task}-{model}-s{sparsity}-seed{seed}"
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(row))
    cfg_method = {"name": method, **({} if cc_weight is None else {"cc_weight": cc_weight})}
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": cfg_method, "model": {"name": model}}))
    return {**row, "as": "sdp (λ=0)" if cc_weight == 0 else method}  # "as": the method as the report names it


GLUE_PART = ("cola", "mrpc", "mnli")


@pytest.fixture(scope="module")
def text_sweep(tmp_path_factory):
    """sdp (the reference), magnitude (seed 2 lacks MNLI), sdp λ=0 and imp (CoLA only) at 90 % on three
    GLUE tasks; dense bert_small and distilbert; XNLI (3 languages) for sdp and magnitude."""
    root = tmp_path_factory.mktemp("sweeps") / "text"
    rows = []
    for seed in SEEDS:
        for task in GLUE_PART:
            rows.append(text_job(root, "sdp", task, seed))
            rows.append(text_job(root, "sdp", task, seed, cc_weight=0, shift=-0.02))
            if not (task == "mnli" and seed == 2):
                rows.append(text_job(root, "magnitude", task, seed, shift=-0.03))
            for model in DENSE_MODELS:
                rows.append(text_job(root, "dense", task, seed, model=model, shift=-0.05))
        rows.append(text_job(root, "imp", "cola", seed))
        rows.append(text_job(root, "sdp", "xnli", seed))
        rows.append(text_job(root, "magnitude", "xnli", seed, shift=-0.04))
    return root, rows


@pytest.fixture(scope="module")
def report(text_sweep, tmp_path_factory):
    root, rows = text_sweep
    out = tmp_path_factory.mktemp("report")
    res = run_report(root, out, references="none", reference="sdp", colors={})
    return res, (out / "report.md").read_text(), rows


def _runs(rows, method, task):
    """``{seed: row}`` of one method (as the report names it) on one task, bert_base."""
    return {r["seed"]: r for r in rows if r["as"] == method and r["dataset"] == task and r["model"] == "bert_base"}


def hand_glue(rows, method, seeds=SEEDS) -> dict:
    """Per seed, from the official metrics: CoLA's MCC, MRPC's (acc + F1) / 2, MNLI's (m + mm) / 2, averaged."""
    cola, mrpc, mnli = (_runs(rows, method, t) for t in GLUE_PART)
    return {s: _mean([cola[s]["metrics_best_val"]["mcc"],
                      _mean([mrpc[s]["metrics_best_val"]["accuracy"], mrpc[s]["metrics_best_val"]["f1"]]),
                      _mean([g["accuracy"] for g in mnli[s]["groups_best_val"].values()])]) for s in seeds}


def _table(md: str, heading: str) -> list[list[str]]:
    lines = md.split(heading, 1)[1].split("\n\n", 2)[1].splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:] if ln.startswith("|")]


def test_glue_score_against_a_hand_computation(report):
    res, md, rows = report
    glue = {g["label"]: g for g in res["glue"]}
    sdp = glue["sdp"]
    assert sdp["tasks"] == list(GLUE_PART) and sdp["name"] == "mean over 3 of 8 GLUE tasks (cola, mrpc, mnli)"
    assert sdp["glue_n"] == 3 and sdp["seeds_incomplete"] == [] and sdp["is_reference"]
    per_seed = hand_glue(rows, "sdp")
    vals = list(per_seed.values())
    assert sdp["glue_mean"] == pytest.approx(statistics.fmean(vals))
    assert sdp["glue_std"] == pytest.approx(statistics.stdev(vals))
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(vals), scale=sps.sem(vals))
    assert (sdp["glue_lo"], sdp["glue_hi"]) == pytest.approx((lo, hi))
    lam0 = hand_glue(rows, "sdp (λ=0)")
    assert glue["sdp (λ=0)"]["glue_mean"] == pytest.approx(statistics.fmean(lam0.values()))
    # magnitude: seed 2 has no MNLI run, so it is left out (never scored on two tasks)
    mag = glue["magnitude"]
    assert mag["glue_n"] == 2 and mag["seeds_incomplete"] == [2]
    mag_seed = hand_glue(rows, "magnitude", seeds=(0, 1))
    diffs = [mag_seed[s] - per_seed[s] for s in (0, 1)]
    assert mag["diff_glue_mean"] == pytest.approx(statistics.fmean(diffs))
    lo, hi = sps.t.interval(0.95, 1, loc=statistics.fmean(diffs), scale=sps.sem(diffs))
    assert (mag["diff_glue_lo"], mag["diff_glue_hi"]) == pytest.approx((lo, hi)) and mag["diff_glue_n"] == 2
    # imp ran CoLA only: its own name, and no difference to a reference over other tasks
    imp = glue["imp"]
    assert imp["name"] == "mean over 1 of 8 GLUE tasks (cola)" and imp["diff_glue_n"] == 0
    assert imp["diff_note"] == "the reference ran other tasks"
    # the table never calls these the GLUE score
    assert "## Mean score over the GLUE tasks each row ran (not the GLUE score)" in md
    assert "| GLUE score" not in md
    table = {r[0]: r for r in _table(md, "## Mean score over the GLUE tasks each row ran")}
    assert table["imp"][5] == "1 of 8: cola" and table["imp"][8] == "— (the reference ran other tasks)"
    assert table["magnitude"][9] == "2 (1 left out: a task missing)"
    assert table["sdp"][6] == f"{100 * statistics.fmean(vals):.2f} ± {100 * statistics.stdev(vals):.2f}"
    assert table["sdp"][8] == "reference"


def test_glue_score_over_all_eight_tasks_is_named_so():
    from tgp.report.benchmarks import glue_rows

    rows, per_seed = [], {}
    for seed in (0, 1):
        scores = []
        for i, task in enumerate(GLUE_TASKS):
            rng = random.Random(f"{task}{seed}")
            metrics, groups, name, score = official(task, rng, 0.0)
            rows.append({"method": "sdp", "dataset": task, "benchmark": "glue", "model": "bert_base", "seed": seed,
                         "retrain_kd": False, "target_sparsity": 0.5, "score_name": name, "score_best_val": score,
                         "metrics_best_val": metrics, "groups_best_val": groups})
            scores.append(score)
        per_seed[seed] = _mean(scores)
    (g,) = glue_rows(rows, reference=None)
    assert g["name"] == "GLUE score" and g["tasks"] == list(GLUE_TASKS)
    assert g["glue_mean"] == pytest.approx(_mean(list(per_seed.values())))


def test_text_scores_are_named_and_paired(report):
    res, md, rows = report
    assert "top-1" not in md and "top1" not in md  # never an MCC called top-1
    assert "### MCC (cola)" in md and "MCC best-val ×100 (mean ± std)" in md
    assert "### mean of accuracy and F1 (mrpc)" in md and "### accuracy (mnli, xnli)" in md
    groups = {(g["label"], g["dataset"]): g for g in res["groups"] if g["kind"] == "method"}
    # sdp with method.cc_weight=0 is its own row: the ablation, read from the job's config
    assert ("sdp (λ=0)", "cola") in groups and groups[("sdp (λ=0)", "cola")]["n"] == 3
    sdp = groups[("sdp", "mrpc")]
    ref, mag = _runs(rows, "sdp", "mrpc"), _runs(rows, "magnitude", "mrpc")
    # the task score and each official metric: mean, CI, and the paired difference to sdp
    f1 = [ref[s]["metrics_best_val"]["f1"] for s in SEEDS]
    m = sdp["metrics"]["metric/best_val/f1"]
    assert m["value_mean"] == pytest.approx(statistics.fmean(f1)) and m["value_std"] == pytest.approx(statistics.stdev(f1))
    d = [mag[s]["metrics_best_val"]["f1"] - ref[s]["metrics_best_val"]["f1"] for s in SEEDS]
    md_ = groups[("magnitude", "mrpc")]["metrics"]["metric/best_val/f1"]
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(d), scale=sps.sem(d))
    assert md_["diff_value_mean"] == pytest.approx(statistics.fmean(d))
    assert (md_["diff_value_lo"], md_["diff_value_hi"]) == pytest.approx((lo, hi))
    d_score = [mag[s]["score_last"] - ref[s]["score_last"] for s in SEEDS]
    assert groups[("magnitude", "mrpc")]["diff_score_last_mean"] == pytest.approx(statistics.fmean(d_score))
    # MNLI's official table: matched and mismatched, each with CI and Δ, and the task score
    header = md.split("### mnli", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    assert "matched accuracy % (mean ± std)" in header and "mismatched accuracy % (mean ± std)" in header
    assert "score: accuracy %" in header
    assert "### cola\n" not in md  # one metric: its score table says it all


def test_dense_comparison_rows_beside_the_pruned(report):
    res, md, _ = report
    cola = _table(md, "### MCC (cola)")
    labels = [r[0] for r in cola]
    # dense student first, then the dense comparison models by size, then the pruned rows, reference first
    assert labels[:3] == ["dense student (dense)", "dense bert_small (28.8M)", "dense distilbert (67M)"]
    assert labels[3] == "sdp" and {"magnitude", "sdp (λ=0)", "imp"} <= set(labels[4:])
    small = next(r for r in cola if r[0] == "dense bert_small (28.8M)")
    assert small[7] == "28.8M" and small[10] == "— (another model)"
    pruned = next(r for r in cola if r[0] == "sdp")
    assert pruned[7] == f"{(BERT_TOTAL - round(SPARSITY * BERT_PRUNABLE)) / 1e6:.3g}M"
    glue = {g["label"]: g for g in res["glue"]}
    assert glue["dense bert_small (28.8M)"]["params_nonzero_mean"] == DENSE_MODELS["bert_small"]
    assert not any(r.get("target_sparsity") == 0.0 and r["method"] != "dense" for r in res["jobs"].missing)
    assert not any(r["method"] == "dense" and r["target_sparsity"] != 0.0 for r in res["jobs"].missing)


def test_xglue_per_language_rows_and_average(report):
    res, md, rows = report
    table = _table(md, "### xnli (3 languages)")
    sdp = [r for r in table if r[0] == "sdp"]
    assert [r[5] for r in sdp] == ["en", "de", "fr", "**average**"]
    runs, mag = _runs(rows, "sdp", "xnli"), _runs(rows, "magnitude", "xnli")
    de = [runs[s]["groups_best_val"]["de"]["accuracy"] for s in SEEDS]
    assert sdp[1][6] == f"{100 * statistics.fmean(de):.2f} ± {100 * statistics.stdev(de):.2f}"
    avg = [_mean([runs[s]["groups_best_val"][lang]["accuracy"] for lang in XNLI_LANGS]) for s in SEEDS]
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(avg), scale=sps.sem(avg))
    assert sdp[3][6] == f"{100 * statistics.fmean(avg):.2f} ± {100 * statistics.stdev(avg):.2f}"
    assert sdp[3][7] == f"[{100 * lo:.2f}, {100 * hi:.2f}]" and sdp[3][8] == "reference"
    # magnitude's average: the paired difference to sdp's, per seed
    d = [_mean([mag[s]["groups_best_val"][lang]["accuracy"] for lang in XNLI_LANGS]) - avg[s] for s in SEEDS]
    mag_avg = [r for r in table if r[0] == "magnitude"][-1]
    lo, hi = sps.t.interval(0.95, 2, loc=statistics.fmean(d), scale=sps.sem(d))
    expected = f"{100 * statistics.fmean(d):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]".replace("-", "−")
    assert mag_avg[8].startswith(expected)
    # the dense student carries only its average (its score)
    assert [r[5] for r in table if r[0] == "dense student (dense)"] == ["**average**"]


def test_score_vs_nonzero_params_plot(report, tmp_path):
    import matplotlib.pyplot as plt

    from tgp.report.plots_params import _draw

    res, md, _ = report
    names = sorted(p.name for p in res["plots"] if p.name.startswith("score_vs_params"))
    assert names == ["score_vs_params_cola.png", "score_vs_params_glue.png", "score_vs_params_mnli.png",
                     "score_vs_params_mrpc.png", "score_vs_params_xnli.png"]
    assert all(p.stat().st_size > 5000 for p in res["plots"])
    assert "![score_vs_params_glue](score_vs_params_glue.png)" in md
    # what the GLUE figure draws: each row at (nonzero params, 100 · score), the bars its CI
    fig, ax = plt.subplots()
    _draw(ax, res["glue"], lambda g: "glue", {})
    drawn = {}
    for c in ax.containers:
        x, y = c.lines[0].get_xydata()[0]
        drawn[c.get_label().rsplit(" (n=", 1)[0]] = (x, y)
    plt.close(fig)
    for g in res["glue"]:
        if g["kind"] != "teacher":
            assert drawn[g["label"] if g["kind"] != "method" or g["is_dense_model"] else g["variant"]] == pytest.approx(
                (g["params_nonzero_mean"], 100 * g["glue_mean"]))


def test_wandb_table_names_text_scores_as_scores(report):
    """The W&B comparison table of a text sweep: ``score_*`` columns and the score's name, no top-1."""
    from tgp.report.wandb_report import COLUMNS, columns, comparison_rows

    res, _, _ = report
    cols = columns(res["groups"])
    assert "score_best_val_ci_lo" in cols and cols[-1] == "score_name" and not any("top1" in c for c in cols)
    rows = {(r[cols.index("method")], r[cols.index("dataset")]): dict(zip(cols, r)) for r in comparison_rows(res["groups"])}
    g = next(g for g in res["groups"] if g["label"] == "sdp" and g["dataset"] == "cola")
    assert rows[("sdp", "cola")]["score_best_val_mean"] == g["score_best_val_mean"]
    assert rows[("sdp", "cola")]["score_name"] == "mcc"
    image = [{**g, "score_name": "top1"} for g in res["groups"]]
    assert columns(image) == list(COLUMNS)


def test_a_teacherless_reference_pairs_with_both_kd_variants():
    """With SDP (no teacher, always CE) as the reference, TGP retrained with KD and without is each paired
    with SDP's run of the cell and seed: d = score(tgp variant) − score(sdp)."""
    from tgp.report.aggregate import GROUP_KEYS
    from tgp.report.stats import paired_differences

    base = {"dataset": "rte", "model": "bert_base", "target_sparsity": 0.5, "sanity": None}
    sdp = {s: 0.60 + 0.02 * s for s in SEEDS}
    rows = [{**base, "method": "sdp", "teacher": None, "retrain_kd": False, "seed": s, "score_best_val": v}
            for s, v in sdp.items()]
    rows += [{**base, "method": "tgp", "teacher": "bert_base", "retrain_kd": kd, "seed": s,
              "score_best_val": sdp[s] + (0.05 if kd else 0.01) + 0.001 * s} for s in SEEDS for kd in (True, False)]
    d = paired_differences(rows, "sdp", "score_best_val", GROUP_KEYS)
    assert d[("tgp", None, "rte", "bert_base", 0.5, True)].mean == pytest.approx(0.051)
    assert d[("tgp", None, "rte", "bert_base", 0.5, False)].mean == pytest.approx(0.011)
    assert d[("tgp", None, "rte", "bert_base", 0.5, False)].n == 3


def test_the_teachers_glue_row_claims_no_parameter_count_of_the_student(tmp_path):
    """The rows record the student's parameters only: the teacher's GLUE row leaves its count empty
    instead of showing the pruned student's, and the dense student shows every weight."""
    from tgp.report.benchmarks import glue_rows

    rows = []
    for task in GLUE_TASKS:
        row = text_job(tmp_path, "tgp", task, 0)
        rows.append({**row, "uses_teacher": True, "teacher": "bert_base", "score_teacher": 0.8, "epochs_teacher": 1})
    by_kind = {g["kind"]: g for g in glue_rows(rows, "tgp")}
    assert by_kind["teacher"]["params_nonzero_mean"] is None
    assert by_kind["dense"]["params_nonzero_mean"] == BERT_TOTAL
    assert by_kind["method"]["params_nonzero_mean"] == BERT_TOTAL - round(SPARSITY * BERT_PRUNABLE)
