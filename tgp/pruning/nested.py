"""Nested masks: global magnitude masks inside a previous mask (IMP, COLT, gradual pruning),
intersections, exact common thresholds, counts. Pure tensor maths, no Lightning."""

from __future__ import annotations

import torch
from torch import Tensor

from tgp.pruning.mask import Mask
from tgp.pruning.threshold import global_threshold


def magnitude_mask(weights: dict[str, Tensor], sparsity: float, previous: Mask | None = None,
                   min_layer_density: float = 0.0) -> Mask:
    """Global magnitude mask removing exactly ``round(sparsity · N)`` weights, nested in ``previous``.

    Weights already pruned by ``previous`` score −∞, so they are removed first and stay removed
    (the target must remove at least as many as ``previous`` did).
    """
    scores = {}
    for n, w in weights.items():
        s = w.detach().abs().float().cpu()
        if previous is not None:
            s = s.masked_fill(~previous[n].cpu(), float("-inf"))
        scores[n] = s
    return _nested_threshold(scores, sparsity, previous, min_layer_density)


def _nested_threshold(scores: dict[str, Tensor], sparsity: float, previous: Mask | None,
                      min_layer_density: float) -> Mask:
    mask = global_threshold(scores, sparsity, min_layer_density=min_layer_density)
    if previous is not None:
        grown = [n for n in mask if bool((mask[n] & ~previous[n].cpu()).any())]
        if grown:
            raise ValueError(f"target sparsity {sparsity} is below the previous mask's: it would revive weights of {grown}")
    return mask


def mask_counts(mask: Mask) -> tuple[int, int]:
    """``(total, kept)`` over a mask."""
    return sum(m.numel() for m in mask.values()), sum(int(m.sum()) for m in mask.values())


def intersection(a: Mask, b: Mask) -> Mask:
    return {n: a[n] & b[n] for n in a}


def exact_common_threshold(weights_a: dict[str, Tensor], weights_b: dict[str, Tensor], sparsity: float,
                           previous: Mask | None, min_layer_density: float = 0.0) -> tuple[Mask, Mask, Mask]:
    """COLT's last round at an exact count (ours): ``(mask, mask_a, mask_b)``.

    ``mask`` keeps the ``N − round(s·N)`` weights alive in ``previous`` with the largest
    ``min(|θ_A|, |θ_B|)``; ``mask_a``/``mask_b`` are A and B pruned at the common magnitude
    threshold ``t`` (the smallest kept score), so ``mask ⊆ mask_a ∩ mask_b``.
    """
    scores = {}
    for n in weights_a:
        s = torch.minimum(weights_a[n].detach().abs().float().cpu(), weights_b[n].detach().abs().float().cpu())
        if previous is not None:
            s = s.masked_fill(~previous[n].cpu(), float("-inf"))
        scores[n] = s
    mask = _nested_threshold(scores, sparsity, previous, min_layer_density)
    kept_scores = [scores[n][mask[n]] for n in mask if mask[n].any()]
    t = min(float(s.min()) for s in kept_scores) if kept_scores else float("inf")
    alive = previous if previous is not None else {n: torch.ones_like(m) for n, m in mask.items()}
    mask_a = {n: (weights_a[n].detach().abs().float().cpu() >= t) & alive[n].cpu() for n in mask}
    mask_b = {n: (weights_b[n].detach().abs().float().cpu() >= t) & alive[n].cpu() for n in mask}
    return mask, mask_a, mask_b
