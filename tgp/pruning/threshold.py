"""Global thresholding: one cut over all prunable weights."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from tgp.errors import ConfigError


def check_sparsity(sparsity: float, setting: str = "pruning.sparsity") -> float:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= float(sparsity) < 1.0):
        raise ConfigError(
            setting, sparsity, "the fraction of weights to remove must lie in [0, 1).", "use e.g. 0.9 for 90% sparsity."
        )
    return float(sparsity)


def global_threshold(
    scores: dict[str, Tensor], sparsity: float, *, min_layer_density: float = 0.0
) -> dict[str, Tensor]:
    """Keep the highest-scoring weights over all tensors together; return ``{name: bool mask}`` (True = kept).

    Exactly ``k = round(s · N)`` weights are removed, ``N = Σ numel``. Ties are broken
    deterministically: among equal scores the weight that comes first (in the dict's order,
    then in flattened order) is removed first. ``min_layer_density = d`` keeps at least
    ``ceil(d · n_l)`` weights in every tensor (the top-scoring ones), which must leave room
    for ``k`` removals. A tensor that loses every weight gets a warning.
    """
    sparsity = check_sparsity(sparsity)
    if not 0.0 <= min_layer_density <= 1.0:
        raise ConfigError(
            "pruning.min_layer_density", min_layer_density, "a density floor must lie in [0, 1].", "use e.g. 0.01 or 0."
        )
    if not scores:
        raise ConfigError("pruning.exclude", "(all)", "there are no prunable weights left to score.", "exclude fewer layers.")
    names = list(scores)
    sizes = [scores[n].numel() for n in names]
    total = sum(sizes)
    k = round(sparsity * total)
    device = scores[names[0]].device
    flat = torch.cat([scores[n].detach().reshape(-1).to(device=device, dtype=torch.float32) for n in names])
    if torch.isnan(flat).any():
        raise ValueError("pruning scores contain NaN; the loss or the weights diverged before pruning")
    if min_layer_density > 0:
        flat = flat.clone()
        protected = 0
        for chunk, n_l in zip(flat.split(sizes), sizes):
            floor = min(n_l, math.ceil(min_layer_density * n_l))
            if floor:
                chunk[torch.topk(chunk, floor, sorted=False).indices] = float("inf")
            protected += floor
        if k > total - protected:
            raise ConfigError(
                "pruning.min_layer_density",
                min_layer_density,
                f"the floor keeps {protected} of {total} weights, so sparsity {sparsity} "
                f"({k} removals) cannot be reached.",
                "lower the floor or the target sparsity.",
            )
    keep = torch.ones(total, dtype=torch.bool, device=device)
    if k:
        # The k-th smallest score in O(N) (a full sort is ~8x slower at ResNet-18 size): remove
        # everything below it, then the first of the weights equal to it, by position, so ties
        # resolve the same way in every process and every re-run.
        kth = flat.kthvalue(k).values
        below = flat < kth
        n_ties = k - int(below.sum())
        keep[below] = False
        keep[torch.nonzero(flat == kth).flatten()[:n_ties]] = False
    masks = {n: m.view_as(scores[n]) for n, m in zip(names, keep.split(sizes))}
    empty = [n for n, m in masks.items() if not m.any()]
    if empty:
        warnings.warn(
            f"global pruning removed every weight of {', '.join(empty)}; the network may be disconnected. "
            "Set pruning.min_layer_density (e.g. 0.01) to keep a floor per layer.",
            stacklevel=2,
        )
    return masks
