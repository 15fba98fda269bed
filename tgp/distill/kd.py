"""Knowledge-distillation losses on logits: CA-KLD, Hinton KL, reverse KL.

All divergences are per-sample sums over classes, averaged over the batch ("batchmean"),
and multiplied by ``T²`` so that gradient magnitudes do not shrink as the temperature grows
(Hinton et al. 2015).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ConfidenceMode = Literal["dataset", "batch", "sample"]
KDKind = Literal["ca_kld", "kl", "reverse_kl"]


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-sample logit standardization (paper; Sun et al., CVPR 2024).

    ``ẑ = (z − mean_c z) / (std_c z + ε)`` over the class dimension, so the student is asked
    to match the teacher's *relative* logits rather than their scale.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def _log_probs(logits: Tensor, temperature: float, standardize: bool) -> Tensor:
    z = standardize_logits(logits) if standardize else logits
    # At least float32: with bf16 logits the divergence of near-equal distributions is
    # mostly rounding noise.
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return F.log_softmax(z / temperature, dim=-1)


def _kl_per_sample(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p‖q) = Σ_c p_c (log p_c − log q_c)`` per sample (exact, finite for any logits)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def teacher_confidence(teacher_logits: Tensor, *, temperature: float, standardize: bool = True) -> Tensor:
    """Per-sample teacher confidence ``max_c p_T(c)`` with ``p_T = softmax(ẑ_T / T)``."""
    return _log_probs(teacher_logits, temperature, standardize).exp().amax(dim=-1)


def ca_kld(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float,
    beta: float | Tensor | None = None,
    standardize: bool = True,
) -> Tensor:
    """Context-aware KL divergence (CA-KLD).

    ``p_T = softmax(ẑ_T / T)``, ``p_S = softmax(ẑ_S / T)`` (``ẑ`` standardized logits, paper),
    ``L = T² · mean_i [ β · KL(p_S‖p_T) + (1 − β) · KL(p_T‖p_S) ]`` (ours, after BitDistiller's
    confidence-aware KL): a confident teacher (β → 1) gets the mode-seeking reverse KL, an
    unsure one the mean-covering forward KL.

    ``beta=None`` uses the batch's mean teacher confidence ``mean_i max_c p_T(c)``; a float is
    used as given (e.g. the dataset-level confidence); a tensor of shape ``[B]`` gives a
    per-sample ``β_i``. β is a weight, never a path for gradients.
    """
    log_s = _log_probs(student_logits, temperature, standardize)
    log_t = _log_probs(teacher_logits.detach(), temperature, standardize)
    if beta is None:
        beta = log_t.exp().amax(dim=-1).mean()
    if isinstance(beta, Tensor):
        beta = beta.detach().to(log_s.dtype)
    reverse = _kl_per_sample(log_s, log_t)  # KL(p_S‖p_T)
    forward = _kl_per_sample(log_t, log_s)  # KL(p_T‖p_S)
    return temperature**2 * (beta * reverse + (1 - beta) * forward).mean()


def kl_div(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float, standardize: bool = False) -> Tensor:
    """Hinton KD: ``L = T² · mean_i KL(p_T‖p_S)`` with ``p = softmax(z / T)``."""
    log_s = _log_probs(student_logits, temperature, standardize)
    log_t = _log_probs(teacher_logits.detach(), temperature, standardize)
    return temperature**2 * _kl_per_sample(log_t, log_s).mean()


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float, standardize: bool = False) -> Tensor:
    """Reverse KD: ``L = T² · mean_i KL(p_S‖p_T)`` (mode-seeking)."""
    log_s = _log_probs(student_logits, temperature, standardize)
    log_t = _log_probs(teacher_logits.detach(), temperature, standardize)
    return temperature**2 * _kl_per_sample(log_s, log_t).mean()
