"""One-shot pruning after KD pretraining: TGP and the baselines that share all its stages.

Stages: ``teacher → kd_pretrain → prune → retrain`` (see :mod:`tgp.blocks`).

* ``tgp`` (paper): score ``|θ ⊙ ∇θ L_total|``, ``L_total = α·CA-KLD + (1−α)·CE`` under the teacher.
* ``ce_grad``: ``|θ ⊙ ∇θ L_CE|`` after the same KD pretraining — the TGP score with α = 0,
  which isolates what the teacher adds to the score.
* ``magnitude``: global ``|θ|``; ``random``: uniformly random — after the same KD pretraining.

Retraining uses the same objective as KD pretraining (``retrain.kd=true``) or CE alone.
"""

from __future__ import annotations

from tgp.blocks import kd_loss, kd_pretrain_stage, prune_stage, retrain_stage, TeacherGuidedLoss, teacher_stage
from tgp.methods.registry import MethodOutputs, MethodSpec, register

STAGES = ("teacher", "kd_pretrain", "prune", "retrain")
EPOCHS = ("kd_pretrain.epochs", "retrain.epochs")


def run_one_shot(job, score: str, teacher_guided: bool) -> MethodOutputs:
    teacher = teacher_stage(job)
    confidence = kd_pretrain_stage(job, teacher)
    make_loss = ((lambda cfg: TeacherGuidedLoss(kd_loss(cfg.distill, confidence, job.dm.regression), teacher))
                 if teacher_guided else None)
    pruned = prune_stage(job, source="kd_pretrain", score=score, make_loss=make_loss)
    final = retrain_stage(job, source="kd_pretrain", mask_stage=pruned, teacher=teacher, confidence=confidence)
    return MethodOutputs(net_stage=final, mask_stage=pruned)


def _one_shot(name: str, score: str, teacher_guided: bool, summary: str, color: str, in_table2: bool) -> MethodSpec:
    return register(MethodSpec(
        name=name, run=lambda job: run_one_shot(job, score, teacher_guided), summary=summary, uses_teacher=True,
        one_shot=True, accepts_mask=True, in_table2=in_table2, stages=STAGES, epochs=EPOCHS, dense_stage="kd_pretrain",
        color=color,
    ))


TGP = _one_shot("tgp", "gradient", True, "teacher-guided score |θ ⊙ ∇θ(α·CA-KLD + (1−α)·CE)| after KD pretraining",
                "#1f77b4", in_table2=True)
CE_GRAD = _one_shot("ce_grad", "gradient", False, "|θ ⊙ ∇θ CE| after the same KD pretraining (TGP's score with α = 0)",
                    "#ff7f0e", in_table2=False)
MAGNITUDE = _one_shot("magnitude", "magnitude", False, "global |θ| after the same KD pretraining", "#2ca02c",
                      in_table2=True)
RANDOM = _one_shot("random", "random", False, "uniformly random global pruning after the same KD pretraining",
                   "#7f7f7f", in_table2=False)
