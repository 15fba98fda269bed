"""Sparsity schedules: iterative rounds (IMP, COLT) and the cubic ramp of gradual pruning (SDP).

Pure functions of numbers; the checks raise :class:`~tgp.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

from tgp.errors import ConfigError

_EPS = 1e-9


def check_rate(setting: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) < 1.0:
        raise ConfigError(setting, rate, "the fraction of the remaining weights pruned per round must lie in (0, 1).",
                          f"use e.g. {setting}=0.2.")
    return float(rate)


def rounds_needed(rate: float, sparsity: float, limit: int = 10_000) -> int:
    """Smallest R with (1 − rate)^R ≤ 1 − sparsity (0 for sparsity 0); ``limit + 1`` if larger than ``limit``."""
    density, rounds = 1.0, 0
    while density > (1.0 - sparsity) + _EPS:
        if rounds > limit:
            return limit + 1
        density *= 1.0 - rate
        rounds += 1
    return rounds


def check_round_schedule(prefix: str, node, sparsity: float) -> None:
    """An iterative method's ``rate`` and ``max_rounds`` against the target ``sparsity`` (itself checked with
    every method's, as is ``epochs_per_round``: :func:`tgp.checks.validate_job`), each with a clear error."""
    check_rounds(prefix, check_rate(f"{prefix}.rate", node.rate), float(sparsity), node.max_rounds)


def check_rounds(prefix: str, rate: float, sparsity: float, max_rounds) -> int:
    """Rounds needed to reach ``sparsity`` at ``rate``; a :class:`ConfigError` if above ``max_rounds``."""
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ConfigError(f"{prefix}.max_rounds", max_rounds, "must be an integer >= 1.", f"use e.g. {prefix}.max_rounds=30.")
    needed = rounds_needed(rate, sparsity, limit=max_rounds)
    if needed > max_rounds:
        exact = rounds_needed(rate, sparsity, limit=100_000)
        min_rate = 1.0 - (1.0 - sparsity) ** (1.0 / max_rounds)
        raise ConfigError(
            f"{prefix}.max_rounds", max_rounds,
            f"reaching pruning.sparsity={sparsity} while pruning {prefix}.rate={rate} of the remaining weights per "
            f"round takes {exact} rounds ((1-{rate})^{exact} <= {1 - sparsity:.6g}), more than {prefix}.max_rounds={max_rounds}.",
            f"raise {prefix}.max_rounds to at least {exact}, or raise {prefix}.rate to at least {min_rate:.4f}.",
        )
    return needed


def round_sparsity(rate: float, r: int) -> float:
    """Sparsity after ``r`` rounds that each prune ``rate`` of the remaining weights."""
    return 1.0 - (1.0 - rate) ** r


def cubic_sparsity(step: int, ramp: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: ``s_f + (s_i − s_f)(1 − min(step, ramp)/ramp)³``."""
    frac = min(max(step, 0), ramp) / max(ramp, 1)
    return final + (initial - final) * (1.0 - frac) ** 3
