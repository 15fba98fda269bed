"""Statistics over seeds for the report: mean, std, Student-t confidence intervals, paired differences.

Pure functions on plain numbers and dict rows (no I/O, no plotting).

For ``n`` values ``x_1 … x_n`` (one per seed):

* mean      ``x̄ = (1/n) Σ x_i``
* std       ``s = sqrt( Σ (x_i − x̄)² / (n − 1) )``  (sample standard deviation; undefined for n = 1)
* 95 % CI   ``x̄ ± t_{0.975, n−1} · s / sqrt(n)``     (Student t over seeds; undefined for n = 1)

A **paired difference** compares a method with a reference method on matched seeds: for every
seed ``i`` where both ran the same cell (same dataset, model, target sparsity, retrain KD — see
:data:`MATCH_KEYS`), ``d_i = x_i(method) − x_i(reference)``; its mean and CI are those of the
``d_i`` as above (a paired t interval, which removes the seed-to-seed variation the two runs share).
The mark ``*`` is set exactly when that interval excludes 0 (the two-sided paired t-test at the
same level rejects "no difference").

**Power** (ours; reported for every paired difference): from the observed standard deviation
``s_d`` of the ``n`` paired differences, the paired t-test at two-sided level α = 0.05 with power
0.8 gives :func:`minimum_detectable_difference` (the smallest true difference it detects 80 % of
the time with these ``n`` seeds) and :func:`seeds_needed` (how many seeds it needs to detect a
given difference). Both use the exact power of the test, a noncentral t (see :func:`paired_t_power`).

``t_quantile`` uses ``scipy.stats.t.ppf`` when scipy is importable (it is, via scikit-learn) and
otherwise its own inversion of the Student t CDF (regularized incomplete beta by continued
fraction, then bisection), which the tests check against a printed t table and against scipy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

LEVEL = 0.95
ALPHA = 0.05  # two-sided level of the power figures (= 1 − LEVEL)
POWER = 0.8  # the conventional target power of the power figures
#: what makes two runs a matched pair, besides the method: the same cell of the grid and the same seed
MATCH_KEYS = ("dataset", "model", "target_sparsity", "retrain_kd")
SIGNIFICANT = "*"


# -- the t quantile ------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student t CDF: for t ≥ 0, ``1 − ½ · I_{df/(df+t²)}(df/2, ½)``; symmetric for t < 0."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile_own(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, by bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile_own(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_quantile(p: float, df: float) -> float:
    """``scipy.stats.t.ppf(p, df)`` when scipy is installed, :func:`t_quantile_own` otherwise."""
    try:
        from scipy.stats import t as student_t
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return t_quantile_own(p, df)
    return float(student_t.ppf(p, df))


# -- summaries -----------------------------------------------------------------------------------
def _clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


@dataclass(frozen=True)
class Summary:
    """Mean, std and ``level`` CI of some values; ``std``/``lo``/``hi`` are None below two values."""

    n: int
    mean: float | None
    std: float | None
    lo: float | None
    hi: float | None
    level: float = LEVEL
    values: tuple[float, ...] = field(default=(), repr=False)

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0 (False when there is no interval)."""
        return self.lo is not None and (self.lo > 0 or self.hi < 0)

    @property
    def mark(self) -> str:
        return SIGNIFICANT if self.excludes_zero else ""


def summarize(values, level: float = LEVEL) -> Summary:
    """``n``, mean, sample std and the Student-t CI ``x̄ ± t_{(1+level)/2, n−1} · s/√n`` (None/NaN skipped)."""
    vals = _clean(values)
    n = len(vals)
    if n == 0:
        return Summary(0, None, None, None, None, level, ())
    mean = math.fsum(vals) / n
    if n == 1:
        return Summary(1, mean, None, None, None, level, tuple(vals))
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level, tuple(vals))


@dataclass(frozen=True)
class PairedDifference(Summary):
    """The :class:`Summary` of paired differences, with the power figures of its standard deviation:
    ``mdd`` (:func:`minimum_detectable_difference` at this ``n``) and ``seeds_needed``
    (:func:`seeds_needed` for a true difference of ``min_effect``); None below two pairs."""

    mdd: float | None = None
    seeds_needed: int | None = None
    min_effect: float | None = None


def mean_std(values) -> tuple[float | None, float | None]:
    s = summarize(values)
    return s.mean, s.std


# -- power of the paired t-test -----------------------------------------------------------------
def _power_at(ncp: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs at noncentrality ``ncp`` (see :func:`paired_t_power`)."""
    from scipy.stats import nct  # scipy comes with scikit-learn, a dependency

    df, crit = n - 1, t_quantile(1 - alpha / 2, n - 1)
    # P(T' < −c) as P(−T' > c) = sf(c; −δ): scipy's nct.cdf returns NaN far in its lower tail
    return float(nct.sf(crit, df, ncp) + nct.sf(crit, df, -ncp))


def paired_t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs when the true mean
    difference is ``effect`` and the differences' standard deviation is ``sd``::

        power = P(T' > t_{1−α/2, n−1}) + P(T' < −t_{1−α/2, n−1}),   T' ~ noncentral t(n − 1, δ),
        δ = effect · √n / sd                                        (the noncentrality)
    """
    if n < 2:
        raise ValueError(f"the paired t-test needs n >= 2 pairs, got {n}")
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    return _power_at(abs(effect) * math.sqrt(n) / sd, n, alpha)


def minimum_detectable_difference(sd: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference that the paired t-test with ``n`` pairs detects with
    probability ``power`` (two-sided ``alpha``), given the differences' standard deviation ``sd``::

        MDD = δ* · sd / √n,   δ* the noncentrality at which the power is ``power``   (solved exactly)

    The textbook approximation ``MDD ≈ (t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n`` (it neglects the
    test's other tail and treats the noncentral t as a shifted central one) only starts the root
    search: it is too optimistic at the few seeds a sweep runs, its difference being detected only
    73 % of the time at n = 2, 77 % at n = 3, 79 % at n = 5 (80 % from n ≈ 10).
    None when ``n < 2`` or ``sd`` is None; 0 when ``sd`` is 0.
    """
    if sd is None or n < 2:
        return None
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    hi = 2.0 * (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1))  # twice the approximation's δ*
    while _power_at(hi, n, alpha) < power:
        hi *= 2.0
    ncp = brentq(lambda d: _power_at(d, n, alpha) - power, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return ncp * sd / math.sqrt(n)


def seeds_needed(sd: float | None, effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The smallest number of seeds (pairs) ``n ≥ 2`` at which the paired t-test detects a true
    difference of ``effect`` with probability ``power`` (two-sided ``alpha``), given the
    differences' standard deviation ``sd``: the smallest ``n`` with
    ``paired_t_power(effect, sd, n) ≥ power``, equivalently ``minimum_detectable_difference(sd, n) ≤ effect``.
    None when ``sd`` is None; 2 when ``sd`` is 0."""
    if sd is None:
        return None
    if not effect > 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    if paired_t_power(effect, sd, 2, alpha) >= power:
        return 2
    lo, hi = 2, 4  # power grows with n: double until it reaches the target, then bisect
    while paired_t_power(effect, sd, hi, alpha) < power:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if paired_t_power(effect, sd, mid, alpha) < power else (lo, mid)
    return hi


# -- paired differences --------------------------------------------------------------------------
def _per_seed(rows, metric: str) -> dict:
    """``(match cell, seed) → value`` (the mean when a seed occurs twice, e.g. re-run jobs)."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        v = r.get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc[(tuple(r.get(k) for k in MATCH_KEYS), r.get("seed"))].append(float(v))
    return {k: math.fsum(v) / len(v) for k, v in acc.items()}


def is_reference(row: dict, reference: str) -> bool:
    """A run of the reference method itself (not one of its sanity-check variants)."""
    return row.get("method") == reference and not row.get("sanity")


def paired_differences(rows: list[dict], reference: str, metric: str, group_keys: tuple[str, ...],
                       level: float = LEVEL, min_effect: float = 0.01) -> dict[tuple, PairedDifference]:
    """For each group of ``rows`` (by ``group_keys``, which must contain :data:`MATCH_KEYS`) that is
    not the reference: the :class:`PairedDifference` of ``d_seed = metric(row) − metric(reference run)``
    over the seeds both have in the same cell, with its power figures (the seeds needed for a true
    difference of ``min_effect``, in the metric's units: 0.01 = 1 percentage point of accuracy).
    Groups with no matched seed are left out.

    A method without a teacher (its rows have ``teacher`` None, so ``retrain_kd`` is always
    false) is paired with the reference's KD-retrained run of the cell when the reference has no
    CE-retrained one there: the reference method as it is defined, not a variant that was not run.
    Likewise a reference without a teacher (SDP) is paired, as it ran, with both retraining variants
    of a method that has one (TGP with and without KD)."""
    missing = [k for k in MATCH_KEYS if k not in group_keys]
    if missing:
        raise ValueError(f"group_keys must contain the match keys {MATCH_KEYS}; missing {missing}")
    ref_rows = [r for r in rows if is_reference(r, reference)]
    ref = _per_seed(ref_rows, metric)
    # a reference with no teacher is only ever CE-retrained (retrain_kd false)
    ref_teacherless = bool(ref_rows) and all(r.get("teacher") is None and not r.get("retrain_kd") for r in ref_rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if not is_reference(r, reference):
            groups[tuple(r.get(k) for k in group_keys)].append(r)
    out = {}
    kd_at = MATCH_KEYS.index("retrain_kd")
    for key, rs in groups.items():
        mine = _per_seed(rs, metric)
        teacherless = all(r.get("teacher") is None for r in rs)
        diffs = []
        for (cell, seed), v in sorted(mine.items(), key=str):
            if (cell, seed) not in ref and (teacherless or ref_teacherless):
                cell = (*cell[:kd_at], not ref_teacherless, *cell[kd_at + 1:])
            if (cell, seed) in ref:
                diffs.append(v - ref[(cell, seed)])
        if diffs:
            d = summarize(diffs, level)
            out[key] = PairedDifference(**asdict(d), mdd=minimum_detectable_difference(d.std, d.n),
                                        seeds_needed=seeds_needed(d.std, min_effect), min_effect=min_effect)
    return out
