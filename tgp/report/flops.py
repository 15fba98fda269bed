"""Model size and FLOPs: dense versus what remains after pruning (shrinkbench's two numbers)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tgp.pruning.mask import prunable_parameters


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, nonzero)`` over all parameters (nonzero read off the weights themselves)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    return total, nonzero


def masked_sparsity(model: nn.Module, mask: dict | None = None) -> tuple[int, int]:
    """``(total, zeros)`` over the weights ``mask`` covers (all Conv2d/Linear kernels when None),
    read off the weights themselves."""
    params = dict(model.named_parameters())
    chosen = [params[n] for n in mask] if mask is not None else list(prunable_parameters(model).values())
    total = zeros = 0
    for p in chosen:
        total += p.numel()
        zeros += p.numel() - int(torch.count_nonzero(p))
    return total, zeros


@torch.no_grad()
def flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(dense, nonzero)`` FLOPs of one forward pass on one sample of ``input_shape`` (C, H, W).

    Dense FLOPs come from ``torch.utils.flop_counter`` (2 per multiply-add). For the nonzero
    count, each Conv2d/Linear's FLOPs are scaled by the density of its weight, the theoretical
    cost of a sparse kernel that skips zeros; everything else is counted as dense.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    dense = int(counter.get_total_flops())
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    nonzero = dense
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            layer = sum(per_module.get(f"{prefix}.{name}" if name else prefix, {}).values())
            density = float(torch.count_nonzero(module.weight)) / module.weight.numel()
            nonzero -= int(round(layer * (1 - density)))
    return dense, nonzero
