"""Each task's official metric against scikit-learn and SciPy on random predictions, batch-wise
accumulation against one pass, and the GLUE / XGLUE scores against hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tgp.metrics.text import TaskMetrics, glue_score, grouped_scores, task_score, task_scores, xglue_summary


def _logits(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn(seed):
    logits, target = _logits(200, 2, seed)
    pred = logits.argmax(1).numpy()
    assert task_scores("cola", logits, target)["mcc"] == pytest.approx(matthews_corrcoef(target, pred), abs=1e-6)
    for task in ("mrpc", "qqp"):
        s = task_scores(task, logits, target)
        assert s["accuracy"] == pytest.approx(accuracy_score(target, pred), abs=1e-6)
        assert s["f1"] == pytest.approx(f1_score(target, pred), abs=1e-6)  # the positive class (label 1)
    logits3, target3 = _logits(150, 3, seed)
    for task in ("mnli", "xnli"):
        assert task_scores(task, logits3, target3) == {
            "accuracy": pytest.approx(accuracy_score(target3, logits3.argmax(1)), abs=1e-6)}


@pytest.mark.parametrize("pred,target", [
    ([1, 1, 1, 1, 1], [0, 1, 1, 0, 1]),  # a constant predictor (torchmetrics' own MCC says 0.18 here)
    ([0, 1, 0, 1, 0], [1, 1, 1, 1, 1]),  # one class in the gold labels
    ([0, 1, 1, 0], [0, 1, 1, 0]),  # perfect
    ([1, 0, 0, 1], [0, 1, 1, 0]),  # all wrong
])
def test_mcc_degenerate_cases_score_as_glue_does(pred, target):
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 2).float()
    assert task_scores("cola", logits, torch.tensor(target))["mcc"] == pytest.approx(
        matthews_corrcoef(target, pred), abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_stsb_correlations_equal_scipy_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 11, (120,), generator=g).float() / 2  # scores in half steps: many ties
    pred = (gold + torch.randn(120, generator=g)).round()  # ties in the predictions too
    s = task_scores("stsb", pred.unsqueeze(1), gold)
    assert s["pearson"] == pytest.approx(pearsonr(pred, gold)[0], abs=1e-5)
    assert s["spearman"] == pytest.approx(spearmanr(pred, gold)[0], abs=1e-5)


def test_batchwise_updates_equal_one_pass():
    logits, target = _logits(97, 2, 7)
    metrics = TaskMetrics("mrpc")
    for start in range(0, 97, 16):
        metrics.update(logits[start:start + 16], target[start:start + 16])
    batched = {k: float(v) for k, v in metrics.compute().items()}
    assert batched == pytest.approx(task_scores("mrpc", logits, target), abs=1e-7)


def test_grouped_task_and_benchmark_scores_are_the_stated_means():
    m_logits, m_target = _logits(80, 3, 1)
    mm_logits, mm_target = _logits(60, 3, 2)
    mnli = grouped_scores("mnli", {"matched": (m_logits, m_target), "mismatched": (mm_logits, mm_target)})
    acc_m = accuracy_score(m_target, m_logits.argmax(1))
    acc_mm = accuracy_score(mm_target, mm_logits.argmax(1))
    assert mnli == pytest.approx({"matched/accuracy": acc_m, "mismatched/accuracy": acc_mm}, abs=1e-6)
    logits, target = _logits(100, 2, 3)
    mrpc = grouped_scores("mrpc", {"": (logits, target)})
    cola = grouped_scores("cola", {"": (logits, target)})
    pred = logits.argmax(1)
    mrpc_task = (accuracy_score(target, pred) + f1_score(target, pred)) / 2
    assert task_score(mrpc) == pytest.approx(mrpc_task, abs=1e-6)
    expected = np.mean([(acc_m + acc_mm) / 2, mrpc_task, matthews_corrcoef(target, pred)])
    assert glue_score({"mnli": mnli, "mrpc": mrpc, "cola": cola}) == pytest.approx(expected, abs=1e-6)


def test_xglue_accuracy_per_language_and_average():
    groups = {lang: _logits(50 + 10 * i, 2, i) for i, lang in enumerate(("en", "de", "es", "fr"))}
    scores = grouped_scores("pawsx", groups)
    accs = {lang: accuracy_score(t, lo.argmax(1)) for lang, (lo, t) in groups.items()}
    assert {k: v for k, v in scores.items() if k != "avg/accuracy"} == pytest.approx(
        {f"{lang}/accuracy": a for lang, a in accs.items()}, abs=1e-6)
    assert scores["avg/accuracy"] == pytest.approx(np.mean(list(accs.values())), abs=1e-6)  # unweighted
    assert task_score(scores) == pytest.approx(scores["avg/accuracy"], abs=1e-9)
    assert xglue_summary(accs)["avg"] == pytest.approx(np.mean(list(accs.values())))
