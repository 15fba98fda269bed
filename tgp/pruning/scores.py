"""Importance scores: pure functions with one signature,
``score(model, params, batches, loss_fn, *, seed) -> {param_name: score}`` (:data:`Score`).

A score uses what it needs of the four (``magnitude`` only ``params``, ``random`` the names, shapes
and ``seed``, ``gradient`` all but ``seed``), so a caller (:class:`~tgp.pruning.OneShotPruning`) calls
each the same way. Options of one score are keyword-only after ``seed`` (``gradient``'s ``accumulate``
and ``all_reduce``), bound with :func:`functools.partial`. Nothing here knows about Lightning or
processes; distributed reduction is injected through ``all_reduce`` (a callable that sums a list of
tensors across ranks in place).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
AllReduce = Callable[[list[Tensor]], None]
Accumulate = Literal["grad_then_abs", "abs_per_batch"]
Batches = Iterable[tuple[Tensor, Tensor]]


class Score(Protocol):
    """``(model, params, batches, loss_fn, *, seed) -> {param_name: score}``: a higher score keeps the weight."""

    def __call__(self, model: nn.Module, params: dict[str, Tensor], batches: Batches, loss_fn: LossFn | None, *,
                 seed: int = 0) -> dict[str, Tensor]: ...


def magnitude_scores(model: nn.Module | None, params: dict[str, Tensor], batches: Batches = (),
                     loss_fn: LossFn | None = None, *, seed: int = 0) -> dict[str, Tensor]:
    """``I = |θ|`` (global magnitude pruning); the model, batches, loss and seed are not used."""
    return {n: p.detach().abs().float() for n, p in params.items()}


def random_scores(model: nn.Module | None, params: dict[str, Tensor], batches: Batches = (),
                  loss_fn: LossFn | None = None, *, seed: int = 0) -> dict[str, Tensor]:
    """``I ~ U(0, 1)`` i.i.d., drawn on the CPU from ``seed`` so every rank and re-run draws the same
    (in ``params`` order); the model, batches and loss are not used."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen).to(p.device) for n, p in params.items()}


def gradient_scores(
    model: nn.Module,
    params: dict[str, Tensor],
    batches: Batches,
    loss_fn: LossFn,
    *,
    seed: int = 0,
    accumulate: Accumulate = "grad_then_abs",
    all_reduce: AllReduce | None = None,
) -> dict[str, Tensor]:
    """First-order Taylor / SNIP saliency of ``loss_fn``.

    ``grad_then_abs``: ``I = |θ ⊙ Σ_b ∇θ L(b)|``;  ``abs_per_batch``: ``I = Σ_b |θ ⊙ ∇θ L(b)|``.

    With ``loss_fn`` = ``α·CA-KLD + (1−α)·CE`` this is the teacher-guided score (TGP); with
    α = 0 the CE-gradient score; at initialization, SNIP. The model is scored in eval mode
    (BatchNorm running statistics untouched) and no weight or ``.grad`` is modified.
    ``all_reduce`` sums the per-rank partial sums before the absolute value is taken, so
    under DDP the score equals the single-process score over the union of the ranks' batches.
    ``seed`` is not used (the score is deterministic given the batches).
    """
    names = list(params)
    tensors = [params[n] for n in names]
    device = tensors[0].device
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in tensors]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for x, y in batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                grads = torch.autograd.grad(loss_fn(model, x, y), tensors, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(tensors, grads)]
                if accumulate == "grad_then_abs":
                    torch._foreach_add_(acc, [g.float() for g in grads])
                else:
                    torch._foreach_add_(acc, torch._foreach_abs(torch._foreach_mul(grads, [p.detach() for p in tensors])))
    finally:
        model.train(was_training)
    if all_reduce is not None:
        all_reduce(acc)
    if accumulate == "grad_then_abs":
        acc = torch._foreach_abs(torch._foreach_mul(acc, [p.detach().float() for p in tensors]))
    return dict(zip(names, acc))


SCORES: dict[str, Score] = {
    "magnitude": magnitude_scores,
    "random": random_scores,
    "gradient": gradient_scores,
}
