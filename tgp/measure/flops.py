"""Model size and FLOPs: dense versus what remains after pruning (shrinkbench's two numbers).

FLOPs are counted on an *example input*: a batch in the model's input format, as the datamodule's
``example_input(batch_size)`` gives it (images: float zeros ``(B, C, H, W)``; token ids: integers
``(B, L)``), or a callable returning one. The counts are per example: the first one of the batch
goes through the network, with its dtype kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
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


ExampleInput = Tensor | Callable[[], Tensor]


def example_batch(example: ExampleInput, device: torch.device | str | None = None) -> Tensor:
    """The first example of ``example`` (a batch, or a callable returning one) as a batch of one, on
    ``device`` when given; its dtype kept (float images, integer token ids)."""
    x = example() if callable(example) else example
    if not isinstance(x, Tensor) or x.ndim < 1 or len(x) < 1:
        raise TypeError(f"an example input is a batch tensor (B, ...) with B >= 1 or a callable returning one, "
                        f"got {type(x).__name__}")
    x = x[:1]
    return x.to(device) if device is not None else x


@torch.no_grad()
def flops(model: nn.Module, example: ExampleInput) -> tuple[int, int]:
    """``(dense, nonzero)`` FLOPs of one forward pass on one example (the first of ``example``, see
    :func:`example_batch`).

    Dense FLOPs come from ``torch.utils.flop_counter`` (2 per multiply-add). For the nonzero
    count, each Conv2d/Linear's FLOPs are scaled by the density of its weight, the theoretical
    cost of a sparse kernel that skips zeros; everything else is counted as dense.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with FlopCounterMode(display=False) as counter:
            model(example_batch(example, device))
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


# -- training FLOPs ---------------------------------------------------------------------------------
# What one training example costs, measured once per (architecture, input shape and dtype, pass) with
# torch.utils.flop_counter on a CPU copy of the network and cached: the same network trained in
# forty stages is counted once. The counter counts matrix products and convolutions (2 FLOPs per
# multiply-add), forward and backward as PyTorch executes them (the backward is measured, not
# assumed to be 2x the forward: the first layer computes no input gradient, for instance);
# BatchNorm, activations, losses and the optimizer step are not counted (elementwise work).
# Each Conv2d/Linear layer's share (for the masked count) is what the counter adds while the
# layer runs forward and while its output's autograd node runs backward: the counter's own
# per-module table attributes backward work to several modules at once (checked on ResNet-20).

_LAYER_FLOPS: dict[tuple, tuple[int, dict[str, int]]] = {}


def _signature(net: nn.Module) -> tuple:
    """What determines a network's FLOPs: its class, its module tree (strides, kernels) and shapes."""
    shapes = tuple((n, tuple(p.shape)) for n, p in net.named_parameters())
    return type(net).__module__, type(net).__qualname__, repr(net), shapes


def layer_flops(net: nn.Module, example: ExampleInput, *, backward: bool = True,
                call: str | None = None) -> tuple[int, dict[str, int]]:
    """``(total, {module name: FLOPs})`` of one example (the first of ``example``) through ``net``:
    forward, plus the backward of the parameters' gradients when ``backward`` (the input needs no
    gradient, as in training). ``call`` names the method to run instead of ``forward`` (e.g.
    ``"forward_features"``). The per-module dict holds the Conv2d and Linear layers (their forward
    and backward work). Measured on a CPU copy in eval mode (the counted operations are the same
    in train mode); cached per (architecture, input shape and dtype, pass)."""
    import copy

    x = example_batch(example, "cpu")
    key = (_signature(net), tuple(x.shape), x.dtype, bool(backward), call)
    if key not in _LAYER_FLOPS:
        clone = copy.deepcopy(net).cpu().float().eval()
        for p in clone.parameters():
            p.requires_grad_(backward)
        fn = getattr(clone, call) if call else clone
        layers: dict[str, int] = {}
        with torch.inference_mode(False), torch.set_grad_enabled(backward), FlopCounterMode(display=False) as counter:
            # Attribution by hooks around each layer's forward and around its autograd node's backward
            # (the counter's own per-module view misattributes backward work across modules).
            handles = [h for name, module in clone.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))
                       for h in _attribute(module, name, counter, layers)]
            try:
                out = fn(x)
                if backward:
                    out.float().sum().backward()
            finally:
                for h in handles:
                    h.remove()
        _LAYER_FLOPS[key] = (int(counter.get_total_flops()), layers)
    total, layers = _LAYER_FLOPS[key]
    return total, dict(layers)


def _attribute(module: nn.Module, name: str, counter: FlopCounterMode, layers: dict[str, int]) -> list:
    """Hooks adding to ``layers[name]`` the FLOPs counted while ``module`` runs forward and while the
    autograd node of its output runs backward (its input and weight gradients)."""
    layers.setdefault(name, 0)

    def span():
        start: list[int] = []

        def begin(*_) -> None:
            start.append(counter.get_total_flops())

        def end(*_) -> None:
            layers[name] += counter.get_total_flops() - start.pop()

        return begin, end

    forward_begin, forward_end = span()

    def after(m, inputs, out) -> None:
        forward_end()
        node = getattr(out, "grad_fn", None)
        if node is not None:  # brackets the node's execution in the backward pass
            backward_begin, backward_end = span()
            node.register_prehook(backward_begin)
            node.register_hook(backward_end)

    return [module.register_forward_pre_hook(forward_begin), module.register_forward_hook(after)]


def mask_densities(mask: dict | None) -> dict[str, float]:
    """``{module name: kept fraction}`` of the masked weights (``"<module>.weight"`` mask entries)."""
    names = [n for n in (mask or {}) if n.endswith(".weight")]
    if not names:
        return {}
    # One host transfer for all layers (not one sync per layer on a GPU).
    fractions = torch.stack([mask[n].float().mean() for n in names]).tolist()
    return {n[: -len(".weight")]: f for n, f in zip(names, fractions)}


def nonzero_flops(total: int, layers: dict[str, int], densities: dict[str, float]) -> int:
    """``total`` with each layer's share scaled by its weight density (as :func:`flops` does for
    inference): the theoretical cost of sparse kernels that skip pruned weights, forward and
    backward (a pruned weight's input gradient and its own gradient are both skipped)."""
    return total - int(round(sum(layers[n] * (1.0 - d) for n, d in densities.items() if n in layers)))


class TrainingFlops:
    """Per-example training FLOPs of one stage's training step, picklable (DDP ranks carry it).

    Measured on the first example of ``example`` (a batch or a callable returning one).
    ``student``: forward + backward of the trained network; ``teacher``: forward of a frozen network
    run on the same examples (a KD teacher, SDP's dense copy), counted dense; ``partners``: the
    second half of every batch only goes forward through the student, without gradients (CS-KD's
    class partners). ``batch(n, densities)`` is the FLOPs of one batch of ``n`` examples,
    ``(dense, nonzero)``.
    """

    def __init__(self, net: nn.Module, example: ExampleInput, teacher: nn.Module | None = None,
                 teacher_call: str | None = None, partners: bool = False):
        x = example_batch(example, "cpu")  # counted here; only the counts are kept (and pickled)
        self.student, self.student_layers = layer_flops(net, x, backward=True)
        self.teacher = layer_flops(teacher, x, backward=False, call=teacher_call)[0] if teacher is not None else 0
        self.partners = bool(partners)
        self.forward, self.forward_layers = layer_flops(net, x, backward=False) if partners else (0, {})

    def per_example(self, densities: dict[str, float] | None = None) -> tuple[int, int]:
        """``(dense, nonzero)`` FLOPs of one example with full forward + backward (and the teacher)."""
        dense = self.student + self.teacher
        return dense, nonzero_flops(self.student, self.student_layers, densities or {}) + self.teacher

    def batch(self, n: int, densities: dict[str, float] | None = None) -> tuple[int, int]:
        if not self.partners:
            dense, nonzero = self.per_example(densities)
            return n * dense, n * nonzero
        h = n // 2  # anchors: forward + backward; partners: forward only (tgp.lit.self_distill)
        fb_dense, fb_nonzero = self.per_example(densities)
        f_nonzero = nonzero_flops(self.forward, self.forward_layers, densities or {})
        return h * fb_dense + (n - h) * self.forward, h * fb_nonzero + (n - h) * f_nonzero


def training_flops_per_example(net: nn.Module, example: ExampleInput, teacher: nn.Module | None = None,
                               mask: dict | None = None, teacher_call: str | None = None) -> tuple[int, int]:
    """``(dense, nonzero)`` FLOPs of training on one example (the first of ``example``): forward
    and backward of ``net`` plus, when given, the forward of a frozen ``teacher`` (``teacher_call``:
    its method to run, default ``forward``). ``nonzero`` scales each of ``net``'s Conv2d/Linear
    layers by the density of its ``mask`` entry (``{param name: bool}``, True = kept); the
    teacher is counted dense. Cached per architecture and input shape."""
    return TrainingFlops(net, example, teacher, teacher_call).per_example(mask_densities(mask))
