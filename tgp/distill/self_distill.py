"""Self-distillation (SD) regimes used by EPSD: targets, losses, batch samplers, score losses.

Pure functions and small samplers, no Lightning. Three regimes (docs/methods.md, baselines):

* **PS-KD** (Kim et al., ICCV 2021) — progressive self-knowledge distillation. Soft targets
  ``q_t(x) = (1 − a_t)·onehot(y) + a_t·p_{t−1}(x)``, ``p_{t−1}(x)`` the model's own softmax
  prediction for the same sample in the previous epoch, ``a_t = α_T · t / T`` (epoch ``t``
  counted from 0, ``T`` epochs in all), loss ``−Σ_c q_t(c) log p(c|x)``. Epoch 0: one-hot.
* **DLB** (Shen et al., CVPR 2022) — self-distillation from last mini-batch. Batch ``t+1``
  holds half of batch ``t`` (its second half) plus half new samples; the (detached) soft
  predictions made at iteration ``t`` on the shared half are targets for
  ``T² · KL(p_t^T ‖ p_{t+1}^T)`` added to CE on the whole batch (weight ``dlb_weight``).
* **CS-KD** (Yun et al., CVPR 2020) — class-wise self-knowledge distillation. Every sample
  ``x`` is paired with another random sample ``x'`` of the same class;
  ``L = CE(z(x), y) + w · T² · KL(softmax(z(x')/T)ᵀ ‖ softmax(z(x)/T))`` with ``z(x')``
  detached (computed without gradients).

``*_score_loss`` build ``loss_fn(model, x, y)`` for :func:`tgp.pruning.scores.gradient_scores`:
the SNIP saliency ``|θ ⊙ ∇θ L_SD|`` of EPSD (Chen et al., AAAI 2024) on one score batch.
"""

from __future__ import annotations

import contextlib
from functools import partial
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tgp.errors import ConfigError
from tgp.distill.losses import task_loss

REGIMES = ("pskd", "dlb", "cskd")
SCORE_LOSSES = ("sd", "ce")
SCORE_BN = ("batch", "running")


def check_regime(regime: str, setting: str = "method.regime") -> str:
    if regime not in REGIMES:
        raise ConfigError(setting, regime, "no such self-distillation regime.",
                          f"use {setting}=<regime> with one of: {', '.join(REGIMES)}.")
    return regime


# -- pure losses and targets -----------------------------------------------------------------
def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_i −Σ_c q_i(c) · log softmax(z_i)(c)`` for soft targets ``q`` (rows summing to 1)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def pskd_alpha(epoch: int, total_epochs: int, alpha_T: float) -> float:
    """``a_t = α_T · t / T`` (PS-KD, linear in the epoch ``t`` counted from 0; ``a_0 = 0``)."""
    return float(alpha_T) * int(epoch) / max(int(total_epochs), 1)


def pskd_targets(y: Tensor, p_prev: Tensor | None, a_t: float, num_classes: int,
                 seen: Tensor | None = None) -> Tensor:
    """``q = (1 − a_t)·onehot(y) + a_t·p_prev`` (PS-KD). Rows without a previous prediction
    (``seen`` False, e.g. a sample dropped by ``drop_last`` last epoch) and ``p_prev=None`` get one-hot."""
    onehot = F.one_hot(y, num_classes).float()
    if p_prev is None or a_t == 0:
        return onehot
    q = (1.0 - a_t) * onehot + a_t * p_prev.float()
    if seen is not None:
        q = torch.where(seen.view(-1, 1), q, onehot)
    return q


def kl_soft(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    """``T² · mean_i KL(q_i ‖ softmax(z_i / T))`` with ``q`` given probabilities (already at ``T``)."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, target_probs.float(), reduction="batchmean") * temperature**2


def dlb_loss(logits: Tensor, y: Tensor, prev_soft: Tensor | None, *, temperature: float,
             weight: float) -> tuple[Tensor, dict]:
    """DLB: ``CE(z, y) + w · T² · KL(prev_soft ‖ softmax(z[:h]/T))``; ``z[:h]`` are the logits of
    the half shared with the last batch, ``prev_soft`` = last iteration's detached
    ``softmax(z/T)`` on those samples (``None``: first batch of an epoch, CE only)."""
    ce = F.cross_entropy(logits.float(), y)
    if prev_soft is None:
        return ce, {"ce": ce.detach()}
    kd = kl_soft(logits[: len(prev_soft)], prev_soft, temperature)
    return ce + weight * kd, {"ce": ce.detach(), "kd": kd.detach()}


def cskd_loss(logits: Tensor, y: Tensor, pair_logits: Tensor, *, temperature: float,
              weight: float) -> tuple[Tensor, dict]:
    """CS-KD: ``CE(z, y) + w · T² · KL(softmax(z'/T) ‖ softmax(z/T))``, ``z'`` = logits of a
    same-class partner, detached."""
    ce = F.cross_entropy(logits.float(), y)
    target = F.softmax(pair_logits.detach().float() / temperature, dim=1)
    kd = kl_soft(logits, target, temperature)
    return ce + weight * kd, {"ce": ce.detach(), "kd": kd.detach()}










# -- scoring at (near) initialization ----------------------------------------------------------
@contextlib.contextmanager
def batch_stat_norm(model: nn.Module, enabled: bool = True):
    """Run BatchNorm layers with batch statistics (train mode) and restore their running
    statistics afterwards, so scoring leaves no trace. Ours: at initialization the running
    statistics are still (0, 1) and do not describe the network that training sees."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [(m, m.training, dict(m.named_buffers(recurse=False))) for m in norms]
    for m, _, buffers in saved:
        m.train(True)
        for k, v in buffers.items():  # the forward updates copies; autograd may keep them, never touched again
            setattr(m, k, v.clone())
    try:
        yield
    finally:
        for m, mode, buffers in saved:
            m.train(mode)
            for k, v in buffers.items():
                setattr(m, k, v)


LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


# The score losses are partials of module-level functions, not closures: a ddp_spawn Trainer
# pickles its callbacks, and the pruning callback holds the loss.
def _ce_loss(batch_stats, model, x, y, regression=False):
    with batch_stat_norm(model, batch_stats):
        return task_loss(model(x), y, regression)


def ce_score_loss(batch_stats: bool = True, regression: bool = False) -> LossFn:
    """SNIP: ``L = CE(z(x), y)`` (``MSE(z(x), y)`` for a regression target)."""
    return partial(_ce_loss, batch_stats, regression=regression)


def pskd_score_loss(alpha: float, num_classes: int, batch_stats: bool = True) -> LossFn:
    """PS-KD's loss as a function of the weights, self-teacher included (ours):
    ``L = −Σ_c q(c) log p(c)``, ``q = (1 − α)·onehot(y) + α·p``, with ``p = softmax(z(x))`` NOT
    detached and ``α = α_T`` (the target weight PS-KD reaches).

    Why (ours, the paper is not explicit): at (near) initialization there is no previous-epoch
    prediction; the model's own current prediction stands in. Detached, it would make
    ``∇_z L = (1 − α)(p − onehot)``, i.e. exactly ``(1 − α)·∇ CE`` — the SNIP mask again. EPSD
    differentiates ``L_SD`` w.r.t. the mask, and in self-distillation the teacher is the same
    masked network, so the target path is kept: ``L = (1 − α)·CE + α·H(p)`` (``H`` the entropy).
    """

    return partial(_pskd_loss, alpha, num_classes, batch_stats)


def _pskd_loss(alpha, num_classes, batch_stats, model, x, y):
    with batch_stat_norm(model, batch_stats):
        z = model(x).float()
    q = pskd_targets(y, F.softmax(z, dim=1), alpha, num_classes)
    return soft_cross_entropy(z, q)


def dlb_score_loss(temperature: float, weight: float, batch_stats: bool = True) -> LossFn:
    """DLB's loss on two consecutive overlapping batches cut from one score batch (ours):
    with ``n = len(x) // 3``, batch ``t = x[:2n]``, batch ``t+1 = x[n:3n]`` (shared ``x[n:2n]``);
    ``L = CE(z_{t+1}, y[n:3n]) + w·T²·KL(sg(softmax(z_t[n:2n]/T)) ‖ softmax(z_{t+1}[:n]/T))``.

    The two forwards see different batches, so with batch statistics (``batch_stats``, the
    default) the shared samples' predictions differ, as in DLB training. With running
    statistics and fixed weights they would be equal and the KL term would add no gradient.
    """

    return partial(_dlb_loss, temperature, weight, batch_stats)


def _dlb_loss(temperature, weight, batch_stats, model, x, y):
    n = len(x) // 3
    if n == 0:
        raise ValueError("the DLB score needs score batches of at least 3 samples")
    with batch_stat_norm(model, batch_stats):
        with torch.no_grad():
            prev = F.softmax(model(x[: 2 * n]).float()[n:] / temperature, dim=1)
        z = model(x[n: 3 * n]).float()
    return dlb_loss(z, y[n: 3 * n], prev, temperature=temperature, weight=weight)[0]


def class_partners(y: Tensor) -> Tensor:
    """Index of a partner of each sample within the batch: the next sample of the same class
    (cyclically, in batch order); a sample alone in its class is its own partner. Deterministic."""
    idx = torch.arange(len(y), device=y.device)
    partners = idx.clone()
    for c in y.unique():
        members = idx[y == c]
        partners[members] = members.roll(-1)
    return partners


def cskd_score_loss(temperature: float, weight: float, batch_stats: bool = True) -> LossFn:
    """CS-KD's loss on one score batch, partners taken inside the batch by :func:`class_partners`
    (ours: deterministic, so the score is reproducible): ``CE + w·T²·KL(sg(p(x')^T) ‖ p(x)^T)``."""

    return partial(_cskd_loss, temperature, weight, batch_stats)


def _cskd_loss(temperature, weight, batch_stats, model, x, y):
    with batch_stat_norm(model, batch_stats):
        z = model(x).float()
    return cskd_loss(z, y, z[class_partners(y)].detach(), temperature=temperature, weight=weight)[0]


def score_loss(regime: str, *, score_loss: str = "sd", num_classes: int, alpha: float, temperature: float,
               dlb_weight: float, cskd_weight: float, batch_stats: bool = True) -> LossFn:
    """The ``loss_fn(model, x, y)`` that EPSD scores with: the regime's SD loss, or CE (``score_loss=ce``)."""
    check_regime(regime)
    if score_loss not in SCORE_LOSSES:
        raise ConfigError("method.score_loss", score_loss, "unknown score loss.",
                          f"use one of: {', '.join(SCORE_LOSSES)} (sd = EPSD, ce = 'Simple': SNIP then SD training).")
    if score_loss == "ce":
        return ce_score_loss(batch_stats)
    if regime == "pskd":
        return pskd_score_loss(alpha, num_classes, batch_stats)
    if regime == "dlb":
        return dlb_score_loss(temperature, dlb_weight, batch_stats)
    return cskd_score_loss(temperature, cskd_weight, batch_stats)
