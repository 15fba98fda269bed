"""Sanity-check variants of a one-shot pruning method (Frankle et al., ICLR 2021; Su et al., NeurIPS 2020).

``pruning.sanity`` selects one, beside each method that prunes in one shot (``tgp``, ``ce_grad``,
``magnitude``, ``random``, ``snip``, ``epsd``):

* ``layer_shuffle`` — the method's mask with each layer's kept positions shuffled (seeded): the
  exact same per-layer kept counts at random positions (:func:`layer_shuffle`). A score that does
  not beat its own layer shuffle only chose per-layer densities.
* ``reinit`` — the exact same mask, trained from a fresh random initialization
  (``seed_offset=``:data:`REINIT_SEED_OFFSET`) instead of the method's weights.
* ``invert`` — keep the *lowest* scores: the same global threshold on the negated score, so the
  same ``round(s·N)`` weights are removed, the highest-scoring ones.
* ``random_uniform`` — a random mask with every layer at density ``1 − s`` (:func:`uniform_random`);
  ``random_erk`` — random with ERK per-layer densities (Evci et al., RigL 2020; :func:`erk_random`).
  These two ignore the method's score.

Everything here is pure (tensors in, bool masks out, True = kept), deterministic in ``seed``
(drawn on the CPU, so every rank and every re-run draws the same), and exact in counts: each
function removes exactly ``round(s·N)`` of the ``N`` weights it is given.

Rounding rule (ours) for per-layer counts: a layer's real-valued quota (``s·n_l`` removals for
uniform, ``d_l·n_l`` kept weights for ERK) becomes its floor or its ceiling, by largest remainder
(Hamilton apportionment): every layer starts at the floor and the layers with the largest
fractional parts (ties: the first layer in order) get one more until the global count is exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VARIANTS = ("layer_shuffle", "reinit", "invert", "random_uniform", "random_erk")
RANDOM_VARIANTS = ("random_uniform", "random_erk")  # ignore the method's score
# The reinit variant starts from build_net(seed + this): another draw than the method's (offset 0)
# and than the teacher's (offset 1000).
REINIT_SEED_OFFSET = 7919
# Sanity draws use seed + this, so they are not the same stream as the `random` score's (seed).
SEED_OFFSET = 104_729


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def layer_shuffle(mask: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Each layer's mask with its entries permuted at random: identical kept count per layer, random positions."""
    gen = _generator(seed)
    out = {}
    for name, m in mask.items():
        flat = m.detach().reshape(-1)
        perm = torch.randperm(flat.numel(), generator=gen).to(flat.device)
        out[name] = flat[perm].view_as(m).clone()
    return out


def apportion(quotas: list[float], caps: list[int], total: int) -> list[int]:
    """Integers ``c_l`` with ``Σ c_l = total``, ``0 ≤ c_l ≤ caps_l`` and each ``c_l`` the floor or the
    ceiling of ``quotas_l`` (clipped to ``[0, cap]``): floors first, then one more for the largest
    fractional parts (ties: first in order); a float sum that overshoots takes one back from the
    smallest fractional parts."""
    if not 0 <= total <= sum(caps):
        raise ValueError(f"cannot place {total} in layers of total size {sum(caps)}")
    counts = [min(max(math.floor(q), 0), c) for q, c in zip(quotas, caps)]
    frac = [q - math.floor(q) for q in quotas]
    diff = total - sum(counts)
    if diff > 0:
        order = sorted(range(len(quotas)), key=lambda i: (-frac[i], i))
        for i in order:
            if diff == 0:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
                diff -= 1
    elif diff < 0:
        order = sorted(range(len(quotas)), key=lambda i: (frac[i], i))
        for i in order:
            if diff == 0:
                break
            if counts[i] > 0:
                counts[i] -= 1
                diff += 1
    if diff != 0:  # only a quota far off its layer's size could get here
        raise ValueError(f"cannot apportion {total} over quotas {quotas} with caps {caps}")
    return counts


def random_mask_with_counts(params: dict[str, Tensor], kept: dict[str, int], seed: int) -> dict[str, Tensor]:
    """A mask keeping exactly ``kept[name]`` weights of each tensor, at random positions (seeded)."""
    gen = _generator(seed)
    out = {}
    for name, p in params.items():
        n = p.numel()
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[: int(kept[name])]] = True
        out[name] = keep.view(p.shape).to(p.device)
    return out


def _removed_total(params: dict[str, Tensor], sparsity: float) -> tuple[int, int]:
    total = sum(p.numel() for p in params.values())
    return total, round(float(sparsity) * total)  # the same k as tgp.pruning.global_threshold


def uniform_counts(params: dict[str, Tensor], sparsity: float) -> dict[str, int]:
    """Kept weights per layer at density ``1 − s`` everywhere: layer ``l`` removes ``⌊s·n_l⌋`` or
    ``⌈s·n_l⌉`` (largest remainder), exactly ``round(s·N)`` in all."""
    sizes = [p.numel() for p in params.values()]
    _, k = _removed_total(params, sparsity)
    removed = apportion([float(sparsity) * n for n in sizes], sizes, k)
    return {name: n - r for name, n, r in zip(params, sizes, removed)}


def uniform_random(params: dict[str, Tensor], sparsity: float, seed: int) -> dict[str, Tensor]:
    """Random mask, every layer at density ``1 − s`` (:func:`uniform_counts`), positions seeded."""
    return random_mask_with_counts(params, uniform_counts(params, sparsity), seed)


def erk_scale(shape) -> float:
    """ERK's raw density of a weight tensor: ``(n_in + n_out + k_h + k_w) / (n_in·n_out·k_h·k_w)`` for a
    conv kernel ``(n_out, n_in, k_h, k_w)``, ``(n_in + n_out) / (n_in·n_out)`` for a linear weight."""
    dims = [int(d) for d in shape]
    return sum(dims) / math.prod(dims)


def erk_densities(shapes: dict[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    """ERK densities (Evci et al., 2020): ``d_l = min(1, c·ε_l)`` with :func:`erk_scale` ``ε_l`` and ``c``
    such that ``Σ d_l·n_l = N − round(s·N)``; a layer that would exceed density 1 is capped at 1 and
    the rest is rescaled to take its excess (repeated until none exceeds 1)."""
    sizes = {n: math.prod(int(d) for d in s) for n, s in shapes.items()}
    total = sum(sizes.values())
    keep_total = total - round(float(sparsity) * total)
    eps = {n: erk_scale(s) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        budget = keep_total - sum(sizes[n] for n in dense)
        weight = sum(eps[n] * sizes[n] for n in free)
        c = budget / weight if weight > 0 else 0.0
        over = [n for n in free if c * eps[n] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: eps[n]))  # cap the densest, rescale the rest
    return {n: 1.0 if n in dense else c * eps[n] for n in shapes}


def erk_counts(params: dict[str, Tensor], sparsity: float) -> dict[str, int]:
    """Kept weights per layer for :func:`erk_densities`: ``d_l·n_l`` rounded by largest remainder,
    exactly ``N − round(s·N)`` in all, never more than ``n_l``."""
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    dens = erk_densities(shapes, sparsity)
    sizes = [p.numel() for p in params.values()]
    total, k = _removed_total(params, sparsity)
    kept = apportion([dens[n] * size for n, size in zip(params, sizes)], sizes, total - k)
    return dict(zip(params, kept))


def erk_random(params: dict[str, Tensor], sparsity: float, seed: int) -> dict[str, Tensor]:
    """Random mask with ERK per-layer densities (:func:`erk_counts`), positions seeded."""
    return random_mask_with_counts(params, erk_counts(params, sparsity), seed)


def random_variant_mask(variant: str, params: dict[str, Tensor], sparsity: float, seed: int) -> dict[str, Tensor]:
    """The mask of ``random_uniform`` or ``random_erk`` over ``params``."""
    fn = {"random_uniform": uniform_random, "random_erk": erk_random}[variant]
    return fn(params, sparsity, seed)
