"""TGP: teacher → KD pretraining → teacher-guided one-shot pruning → sparse retraining (±KD).

``method=tgp`` scores with ``|θ ⊙ ∇θ L_total|``, ``L_total = α·CA-KLD + (1−α)·CE`` (paper).
``method=ce_grad`` / ``magnitude`` / ``random`` share every stage and change only the score.
"""

from __future__ import annotations

from tgp.methods.common import kd_loss, kd_pretrain_stage, prune_stage, retrain_stage, teacher_stage


def run_one_shot(runner, score: str = "gradient", teacher_guided: bool = True) -> str:
    cfg = runner.cfg
    teacher = teacher_stage(runner)
    kd_pretrain_stage(runner, teacher)
    confidence = runner.results["kd_pretrain"].get("teacher_confidence")
    criterion = kd_loss(cfg, confidence=confidence) if teacher_guided else None
    prune_stage(runner, source="kd_pretrain", score=score, criterion=criterion,
                teacher=teacher if teacher_guided else None)
    retrain_stage(runner, source="kd_pretrain", teacher=teacher, confidence=confidence)
    return "retrain"


def run_tgp(runner) -> str:
    return run_one_shot(runner, score="gradient", teacher_guided=True)


def run_ce_grad(runner) -> str:
    """``|θ ⊙ ∇θ L_CE|`` after the same KD pretraining: the TGP score with α = 0 (what the teacher adds)."""
    return run_one_shot(runner, score="gradient", teacher_guided=False)


def run_magnitude(runner) -> str:
    """Global ``|θ|`` after the same KD pretraining."""
    return run_one_shot(runner, score="magnitude", teacher_guided=False)


def run_random(runner) -> str:
    """Uniformly random global pruning after the same KD pretraining."""
    return run_one_shot(runner, score="random", teacher_guided=False)
