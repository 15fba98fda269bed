"""BatchNorm over the global batch of all DDP ranks on CPUs (``trainer=ddp_sim``), computed as one process's
BatchNorm computes it: what makes a DDP step equal the one-process step up to the order of float reductions.

Forward (training): ``mean = Σx / n``, ``var = Σ(x − mean)² / n`` — two passes, each rank's partial sums
taken in float64 and summed over the ranks — and ``y = x·α + β`` with ``α = w / √(var + ε)``,
``β = b − mean·α``. Backward: ``∂x = (g − Σg/n − (x − mean)·Σg(x − mean)/n · invstd²) · invstd · w`` with
both sums in float64 over all ranks, ``∂w = Σ g·(x − mean)·invstd`` and ``∂b = Σ g`` over this rank (DDP
averages them). ``n`` counts the elements per channel of the global batch. This is ATen's CPU kernel
(double accumulators, the ``α``/``β`` form) with its sums made global, as ``torch.nn.SyncBatchNorm`` does
on GPUs; a float32 ``Σx²/n − mean²`` or autograd's float32 sums instead cancel catastrophically on
channels with a large mean against their spread (an image's constant background), and the DDP weights
drifted from the one-process weights by 1e-5 after one step, 1e-3 after three (32×32 digits).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _GlobalBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        wide = x.double()
        sums = torch.cat([wide.sum(dims), torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)])
        dist.all_reduce(sums)
        n, mean = sums[c], sums[:c] / sums[c]
        var_sum = (wide - mean.view(shape)).square_().sum(dims)
        dist.all_reduce(var_sum)
        var = var_sum / n
        invstd = torch.rsqrt(var + eps).to(x.dtype)
        mean = mean.to(x.dtype)
        alpha = invstd if weight is None else invstd * weight
        beta = -mean * alpha if bias is None else bias - mean * alpha
        y = x * alpha.view(shape) + beta.view(shape)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n = n
        var, n = var.to(x.dtype), n.to(x.dtype)
        ctx.mark_non_differentiable(mean, var, n)
        return y, mean, var, n

    @staticmethod
    def backward(ctx, grad: Tensor, *_):
        x, weight, mean, invstd = ctx.saved_tensors
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        centered = x - mean.view(shape)
        local = torch.cat([grad.double().sum(dims), (grad.double() * centered.double()).sum(dims)])
        grad_bias = local[:c].to(x.dtype) if ctx.needs_input_grad[2] else None
        grad_weight = (local[c:] * invstd.double()).to(x.dtype) if ctx.needs_input_grad[1] else None
        total = local.clone()  # (the local sums above may be views of it)
        dist.all_reduce(total)  # Σg and Σg·(x − mean) over the global batch
        mean_grad = (total[:c] / ctx.n).to(x.dtype)
        k = (total[c:] / ctx.n).to(x.dtype) * invstd * invstd
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad - mean_grad.view(shape) - centered * k.view(shape)) * scale.view(shape)
        return grad_x, grad_weight, grad_bias, None


def global_batch_norm(bn, x: Tensor) -> Tensor:
    """``bn`` (a ``torch.nn.BatchNorm*d`` in training) applied with the statistics of the global batch;
    its running statistics updated as ``torch.nn.BatchNorm`` updates them (unbiased variance)."""
    y, mean, var, n = _GlobalBatchNorm.apply(x, bn.weight if bn.affine else None, bn.bias if bn.affine else None,
                                             bn.eps)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=m)
    return y
