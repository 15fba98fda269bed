"""Distillation losses: CA-KLD, Hinton KD, reverse KL, and the weighted ``α·KD + (1−α)·CE`` objective."""

from tgp.distill.kd import ca_kld, kl_div, reverse_kl, standardize_logits, teacher_confidence
from tgp.distill.losses import DistillationLoss, estimate_dataset_confidence

__all__ = [
    "DistillationLoss",
    "ca_kld",
    "estimate_dataset_confidence",
    "kl_div",
    "reverse_kl",
    "standardize_logits",
    "teacher_confidence",
]
