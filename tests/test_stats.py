"""tgp.report.stats: t quantiles against a printed table and scipy, CIs and paired differences
against independent computations, the significance mark exactly when the CI excludes 0."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps

from tgp.report.stats import (MATCH_KEYS, paired_differences, summarize, t_cdf, t_quantile, t_quantile_own)

# t_{0.975, df} from a printed table (two-sided 95 %, e.g. Fisher & Yates / any statistics textbook)
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
               10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
T_TABLE_995 = {1: 63.657, 2: 9.925, 5: 4.032, 10: 3.169, 30: 2.750}


@pytest.mark.parametrize("quantile", [t_quantile_own, t_quantile])
def test_t_quantile_matches_the_printed_table(quantile):
    for df, t in T_TABLE_975.items():
        assert quantile(0.975, df) == pytest.approx(t, abs=6e-4), df
    for df, t in T_TABLE_995.items():
        assert quantile(0.995, df) == pytest.approx(t, abs=6e-4), df


def test_own_t_quantile_matches_scipy():
    for df in (1, 2, 3, 4, 7, 19, 50, 1000, 0.7, 2.5):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025, 0.1):
            assert t_quantile_own(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-9), (df, p)
        assert t_cdf(1.3, df) == pytest.approx(sps.t.cdf(1.3, df), rel=1e-10)
    assert t_quantile_own(0.5, 3) == 0.0
    with pytest.raises(ValueError):
        t_quantile_own(1.0, 3)


def test_summary_mean_std_ci_by_hand_and_scipy():
    vals = [0.80, 0.78, 0.82]
    s = summarize(vals)
    assert (s.n, s.mean) == (3, pytest.approx(0.8))
    assert s.std == pytest.approx(0.02)  # sqrt(((0)^2 + 0.02^2 + 0.02^2) / 2)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t_{0.975,2} · s/√n
    assert (s.lo, s.hi) == (pytest.approx(0.8 - half), pytest.approx(0.8 + half))
    lo, hi = sps.t.interval(0.95, 2, loc=0.8, scale=sps.sem(vals))
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))
    one = summarize([0.5, None, float("nan")])
    assert (one.n, one.mean, one.std, one.lo, one.mark) == (1, 0.5, None, None, "")
    assert summarize([]).mean is None


def _row(method, seed, acc, sanity=None, sparsity=0.5, kd=True):
    return {"method": method, "sanity": sanity, "dataset": "d", "model": "m-w8", "target_sparsity": sparsity,
            "retrain_kd": kd, "seed": seed, "top1_best_val": acc}


KEYS = ("method", "sanity", *MATCH_KEYS)


def test_paired_difference_matches_scipy_paired_t():
    ref, other = [0.80, 0.78, 0.82], [0.75, 0.74, 0.78]
    rows = [_row("tgp", i, a) for i, a in enumerate(ref)] + [_row("mag", i, a) for i, a in enumerate(other)]
    rows.append(_row("mag", 7, 0.1))  # no tgp run with seed 7: not a pair
    rows.append(_row("tgp", 0, 0.5, sparsity=0.9))  # another cell: not matched with mag@0.5
    d = paired_differences(rows, "tgp", "top1_best_val", KEYS)
    (key, s), = d.items()
    assert key == ("mag", None, "d", "m-w8", 0.5, True)
    diffs = [o - r for o, r in zip(other, ref)]
    assert s.n == 3 and s.mean == pytest.approx(sum(diffs) / 3)  # −0.04333
    lo, hi = sps.t.interval(0.95, 2, loc=s.mean, scale=sps.sem(diffs))
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert s.hi < 0 and s.mark == "*"
    assert sps.ttest_rel(other, ref).pvalue < 0.05


def test_sanity_variant_is_compared_with_its_reference_not_part_of_it():
    rows = [_row("tgp", i, a) for i, a in enumerate([0.80, 0.78, 0.82])]
    rows += [_row("tgp", i, a, sanity="layer_shuffle") for i, a in enumerate([0.79, 0.80, 0.80])]
    d = paired_differences(rows, "tgp", "top1_best_val", KEYS)
    s = d[("tgp", "layer_shuffle", "d", "m-w8", 0.5, True)]
    assert s.mean == pytest.approx((-0.01 + 0.02 - 0.02) / 3) and s.lo < 0 < s.hi and s.mark == ""
    assert list(d) == [("tgp", "layer_shuffle", "d", "m-w8", 0.5, True)]
    with pytest.raises(ValueError):
        paired_differences(rows, "tgp", "top1_best_val", ("method", "seed"))


def test_mark_exactly_when_the_interval_excludes_zero():
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        n = rng.choice([2, 3, 5])
        shift = rng.choice([0.0, 0.01, 0.05])
        ref = [rng.gauss(0.8, 0.02) for _ in range(n)]
        other = [r + shift + rng.gauss(0, 0.02) for r in ref]
        rows = [_row("tgp", i, a) for i, a in enumerate(ref)] + [_row("x", i, a) for i, a in enumerate(other)]
        s = next(iter(paired_differences(rows, "tgp", "top1_best_val", KEYS).values()))
        excludes = s.lo > 0 or s.hi < 0
        assert (s.mark == "*") == excludes
        assert excludes == (sps.ttest_rel(other, ref).pvalue < 0.05)  # the same test, two ways
        seen.add(excludes)
    assert seen == {True, False}


def test_a_teacherless_method_is_paired_with_the_reference_as_defined():
    """SNIP (no teacher, so never KD-retrained) against TGP run only with KD: paired with TGP (KD)."""
    tgp = [_row("tgp", i, a) for i, a in enumerate([0.80, 0.78, 0.82])]  # retrain_kd True
    snip = [{**_row("snip", i, a), "retrain_kd": False, "teacher": None} for i, a in enumerate([0.70, 0.71, 0.69])]
    d = paired_differences(tgp + snip, "tgp", "top1_best_val", KEYS)
    (key, s), = d.items()
    assert key[0] == "snip" and s.n == 3 and s.mean == pytest.approx((-0.10 - 0.07 - 0.13) / 3)
    # A method with a teacher run without KD is not paired across variants.
    ce = [{**_row("ce_grad", i, a), "retrain_kd": False, "teacher": "resnet20"} for i, a in enumerate([0.7, 0.7, 0.7])]
    assert paired_differences(tgp + ce, "tgp", "top1_best_val", KEYS) == {}
