"""Benchmarks (``make bench``): ratios measured side by side in one process.

1. A masked retraining step (forward, backward, the :class:`~tgp.pruning.MaskEnforcer`'s
   gradient mask and post-step weight re-mask) over a dense step of the same model and batch.
   Steps are interleaved (dense, masked, dense, ...) so drift in clock or temperature hits both.
   Goal: ≤ 1.05×.
2. The prune stage's work (teacher-guided scores over ``score_batches`` batches + the global
   threshold) over ``score_batches`` dense training steps.
3. Training-data throughput (augmented CIFAR-shaped batches delivered on the device, img/s):
   the ``torch`` path (DataLoader workers, PIL crop/flip/normalize per image, host→device copy)
   against the ``device`` path (:class:`tgp.data.device_loader.DeviceLoader`).

``python -m tgp.bench [--model resnet18 --width 64 --batch 128 --image 32 --steps 20]``;
defaults depend on the device (small on CPU). ``--out FILE`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
from torch import nn

from tgp.distill import DistillationLoss
from tgp.models import build_model
from tgp.bench.data import loader_throughput
from tgp.pruning import MaskEnforcer, global_threshold, gradient_scores, magnitude_scores, prunable_parameters


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128 if cuda else 16)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30 if cuda else 6)
    ap.add_argument("--score-batches", type=int, default=10 if cuda else 3)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--workers", type=int, default=8 if cuda else 2, help="DataLoader workers of the torch path")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext)

    torch.manual_seed(0)
    net = build_model(args.model, num_classes=args.classes, width=args.width).to(device, memory_format=fmt)
    teacher = build_model(args.model, num_classes=args.classes, width=args.width).to(device, memory_format=fmt).eval()
    x = torch.randn(args.batch, 3, args.image, args.image, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    criterion = DistillationLoss(kd_weight=0.5, confidence="batch")
    mask = global_threshold(magnitude_scores(prunable_parameters(net)), args.sparsity)
    mask = {k: m.to(device) for k, m in mask.items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True, foreach=True)

    enforcer = MaskEnforcer()
    enforcer.bind(net, mask)

    def step(masked: bool) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with autocast():
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if masked:
            enforcer.mask_grads_()
        opt.step()  # the post-step hook re-masks the weights while attached
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up: allocator, cudnn autotuning
        step(False)
    dense_t, masked_t = [], []
    for _ in range(args.steps):
        dense_t.append(step(False))
        enforcer.attach([opt])
        masked_t.append(step(True))
        enforcer.detach()

    # Prune-stage work vs the same number of dense training steps.
    batches = [(x, y)] * args.score_batches

    def loss_fn(model, xb, yb):
        with autocast():
            s, t = model(xb), teacher(xb)
        return criterion(s.float(), yb, t.float())[0]

    _sync(device)
    t0 = time.perf_counter()
    scores = gradient_scores(net, prunable_parameters(net), batches, loss_fn)
    global_threshold(scores, args.sparsity)
    _sync(device)
    prune_s = time.perf_counter() - t0
    train_s = sum(step(False) for _ in range(args.score_batches))

    loader_result = loader_throughput(device, args.batch if cuda else 128, args.workers)

    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": args.model, "width": args.width, "batch": args.batch, "image": args.image,
        "params": sum(p.numel() for p in net.parameters()),
        "dense_step_ms": 1e3 * statistics.median(dense_t),
        "masked_step_ms": 1e3 * statistics.median(masked_t),
        "masked_over_dense": statistics.median(m / d for m, d in zip(masked_t, dense_t)),
        "score_batches": args.score_batches,
        "prune_stage_s": prune_s,
        "dense_steps_s": train_s,
        "prune_over_dense_steps": prune_s / train_s,
        **loader_result,
    }
    print(f"device {result['device']}, {args.model} width {args.width} ({result['params']:,} params), "
          f"batch {args.batch} at {args.image}px")
    print(f"  dense step  {result['dense_step_ms']:9.1f} ms (median of {args.steps})")
    print(f"  masked step {result['masked_step_ms']:9.1f} ms   ratio masked/dense {result['masked_over_dense']:.3f}  (goal <= 1.05)")
    print(f"  prune stage {prune_s:9.2f} s over {args.score_batches} batches (teacher-guided score + global threshold)")
    print(f"  {args.score_batches} dense steps {train_s:7.2f} s   ratio prune/dense {result['prune_over_dense_steps']:.2f}")
    print(f"  data: torch path ({args.workers} workers) {loader_result['torch_loader_img_s']:,.0f} img/s, "
          f"device path {loader_result['device_loader_img_s']:,.0f} img/s "
          f"({loader_result['device_over_torch_loader']:.1f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result
