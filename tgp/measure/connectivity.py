"""Effective sparsity: the weights that lie on no input→output path (Vysogorets & Kempe, JMLR 2023).

Pruning can leave kept weights that never influence the output: a kernel whose input channel
was emptied upstream, a unit whose every outgoing weight was pruned, or — with small inputs —
a 3x3 tap that only ever reads zero padding (a 3x3 conv, padding 1, on a 1x1 map uses only its
centre tap). Such weights count as "kept" in the usual sparsity but do nothing.

Definition. Take the computational graph of the network at the data's resolution (one node
per activation position, one edge per (weight, position) use, padding positions being constant
zeros with no incoming edge). A covered weight ``w`` is *effective* iff its mask is 1 and at
least one of its uses is an edge on a path from an input pixel to an output logit. With
``M`` the covered weights (the prunable Conv2d/Linear kernels a mask covers) and ``E ⊆ M`` the
effective ones::

    effective_sparsity = 1 − |E| / |M|        (≥ the plain sparsity 1 − |kept| / |M|)

Computation (one forward and one backward pass). On a copy of the network: normalization
layers become the identity, biases are zeroed, every masked weight is set to its 0/1 mask (a
weight the mask does not cover to ``1[w ≠ 0]``), max-pooling becomes average pooling with the
same window (a max routes its gradient to one input only, while every input of the window is on
a path). Each Conv2d/Linear output ``z`` is binarized, ``a = 1[z > 0]``, with the gradient
binarized the same way on the way back, ``g_z = 1[g_a > 0]``; an all-ones input of one example's
shape (e.g. ``(1, C, H, W)``) goes forward and ``S = Σ logits`` backward. For a weight ``w_{ij}``
used at positions ``p``::

    ∂S/∂w_{ij} = Σ_p x_i(p) · g_j(p)

where ``x_i(p) > 0`` iff input position ``(i, p)`` is reachable from the input (nonnegative
weights, ReLU, sums and average pooling preserve "> 0 iff some path") and ``g_j(p) > 0`` iff the
output position reaches a logit. So ``w`` is effective iff ``mask = 1`` and ``∂S/∂w > 0``.
The binarization keeps every activation a small integer (≤ the fan-in times the depth of
identity shortcuts) and every gradient ≤ 1 per use, so there is neither overflow nor underflow
at any depth; float64 is used anyway.

Inputs it cannot analyze: reachability is propagated through the input's *values*, so the input must
be floating point. For an integer input (token ids, looked up in an embedding) there is no all-ones
input to send, and :func:`effective_mask`, :func:`effective_sparsity` and :func:`effective_metrics`
return ``None`` (``None`` fields) instead of raising.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from tgp.measure.flops import ExampleInput, example_batch, flops
from tgp.pruning.mask import Mask, apply_mask, prunable_parameters

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


class _Binarize(torch.autograd.Function):
    """``1[x > 0]`` forward, ``1[g > 0]`` backward: reachability in both directions, nothing else."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return (g > 0).to(g.dtype)


def _replace(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _NORMS):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
        elif isinstance(child, nn.AdaptiveMaxPool2d):
            setattr(module, name, nn.AdaptiveAvgPool2d(child.output_size))
        elif isinstance(child, nn.ReLU):
            setattr(module, name, nn.ReLU())  # not in place: the binarized outputs are autograd outputs
        else:
            _replace(child)


def analyzable(example: Tensor) -> bool:
    """Whether effective sparsity can be computed on inputs like ``example``: floating point only."""
    return example.is_floating_point()


def effective_mask(net: nn.Module, mask: Mask | None, example: ExampleInput) -> Mask | None:
    """The effective weights of ``net`` under ``mask`` on inputs shaped like ``example`` (a batch in the
    model's input format or a callable returning one; its first example's shape is used; see the
    module doc).

    Returns ``{name: bool}`` for the weights ``mask`` covers (every prunable Conv2d/Linear weight
    when ``mask`` is None, i.e. the dense network with all of them kept): True = kept and on some
    input→output path; ``None`` for an input it cannot analyze (integer dtype). ``net`` is not modified.
    """
    x = example_batch(example)
    if not analyzable(x):
        return None
    if mask is None:
        mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net).items()}
    device = next(net.parameters()).device
    dtype = torch.float64
    work = copy.deepcopy(net)
    _replace(work)
    work.to(device=device, dtype=dtype).eval()
    params = dict(work.named_parameters())
    missing = [n for n in mask if n not in params]
    if missing:
        raise KeyError(f"mask entries not in the network: {missing}")
    hooks = []
    with torch.no_grad():
        for p in params.values():
            p.requires_grad_(False)
        for mod_name, mod in work.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                wname = f"{mod_name}.weight" if mod_name else "weight"
                w = mod.weight
                if wname in mask:
                    w.copy_(mask[wname].to(device=device, dtype=dtype))
                else:
                    w.copy_((w != 0).to(dtype))
                if mod.bias is not None:
                    mod.bias.zero_()
                hooks.append(mod.register_forward_hook(lambda m, i, o: _Binarize.apply(o)))
    for name in mask:
        params[name].requires_grad_(True)
    try:
        with torch.enable_grad():
            out = work(torch.ones_like(x, device=device, dtype=dtype))
            out.sum().backward()
    finally:
        for h in hooks:
            h.remove()
    return {
        name: (m.to(device) & (params[name].grad > 0)).to(m.device)
        if params[name].grad is not None else torch.zeros_like(m, dtype=torch.bool)
        for name, m in mask.items()
    }


def effective_sparsity(net: nn.Module, mask: Mask | None, example: ExampleInput) -> float | None:
    """``1 − |effective| / |covered|`` over the weights ``mask`` covers (all prunable ones when None);
    ``None`` for an input it cannot analyze (integer dtype)."""
    eff = effective_mask(net, mask, example)
    if eff is None:
        return None
    total = sum(m.numel() for m in eff.values())
    kept = sum(int(m.sum()) for m in eff.values())
    return 1 - kept / max(total, 1)


def nonzero_mask(net: nn.Module, mask: Mask | None = None) -> Mask:
    """``{name: w ≠ 0}`` over the weights ``mask`` covers (all prunable ones when None): the mask read off the weights."""
    params = dict(net.named_parameters())
    names = list(mask) if mask is not None else list(prunable_parameters(net))
    return {n: params[n].detach().ne(0).cpu() for n in names}


def effective_metrics(net: nn.Module, mask: Mask | None, example: ExampleInput) -> dict:
    """The run row's connectivity fields for ``net`` (its kept weights read off the weights, over the
    set ``mask`` covers, every prunable weight when None) on inputs shaped like ``example`` (a batch
    or a callable returning one), each ``None`` for an input it cannot analyze (integer dtype):

    * ``effective_sparsity``: of the covered weights, the fraction on no input→output path;
    * ``effective_sparsity_dense``: the same for the dense network (every covered weight kept) — the
      weights the resolution alone makes dead (e.g. taps that only see zero padding);
    * ``flops_effective``: nonzero FLOPs (:func:`tgp.measure.flops.flops`) with the non-effective
      weights zeroed as well.
    """
    x = example_batch(example)
    if not analyzable(x):
        return dict.fromkeys(("effective_sparsity", "effective_sparsity_dense", "flops_effective"))
    covered = nonzero_mask(net, mask)
    eff = effective_mask(net, covered, x)
    dense = effective_mask(net, {n: torch.ones_like(m) for n, m in covered.items()}, x)
    total = max(sum(m.numel() for m in eff.values()), 1)
    pruned = copy.deepcopy(net)
    apply_mask(pruned, eff)
    return {
        "effective_sparsity": 1 - sum(int(m.sum()) for m in eff.values()) / total,
        "effective_sparsity_dense": 1 - sum(int(m.sum()) for m in dense.values()) / total,
        "flops_effective": flops(pruned, x)[1],
    }
