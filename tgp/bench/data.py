"""Data-path benchmarks: augmented training batches delivered on the device, images per second.

``loader_throughput``: CIFAR-shaped in-memory images, torch DataLoader vs device loader.
``tiny_imagenet_throughput``: a Tiny ImageNet tree, JPEG DataLoader vs decoded cache (torch and device
loaders), plus the one-time cache build; ``python -m tgp.bench.data --tiny-imagenet [ROOT]`` prints it.
"""

from __future__ import annotations

import time

import torch

from tgp.bench.steps import delivered_img_s, sync


def loader_throughput(device: torch.device, batch: int, workers: int, n: int = 8192) -> dict:
    """Augmented 32×32 batches per second on ``device``: the torch DataLoader path vs the device path."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from tgp.data.device_loader import DeviceLoader
    from tgp.data.transforms import pil_train_transform

    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

    class PILImages(Dataset):  # what torchvision's CIFAR10 does per item
        transform = pil_train_transform(32, mean, std)

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.transform(Image.fromarray(images[i].numpy())), int(labels[i])

    torch_path = DataLoader(PILImages(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    device_path = DeviceLoader(images, labels, batch_size=batch, mean=mean, std=std, device=device, shuffle=True,
                               drop_last=True, augment=True, channels_last=device.type == "cuda")
    delivered_img_s(device_path, device), delivered_img_s(torch_path, device)  # warm-up (worker start-up, allocator)
    torch_rate, device_rate = delivered_img_s(torch_path, device), delivered_img_s(device_path, device)
    return {"torch_loader_img_s": torch_rate, "device_loader_img_s": device_rate,
            "device_over_torch_loader": device_rate / torch_rate}


_BUILD_IN_FRESH_PROCESS = r"""
import json, resource, sys
from tgp.data.image_cache import ensure_cache
job = json.load(open(sys.argv[1]))
seconds = 0.0
for name, samples in job["lists"].items():
    r = ensure_cache([tuple(s) for s in samples], job["base"], name, job["folders"], workers=job["workers"],
                     dataset="tiny_imagenet")
    seconds += r.seconds
# VmHWM: this process's peak resident set since exec (ru_maxrss would include the pages of the
# parent it was forked from). The decode workers' peak: ru_maxrss of the reaped children.
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"seconds": seconds, "self_kb": hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def tiny_imagenet_throughput(root, batch: int = 128, workers: int = 2, device="cpu", limit: int | None = None,
                             epochs: int = 3) -> dict:
    """Augmented Tiny ImageNet training batches delivered on ``device``, images/s, for the three data paths:

    (a) ``jpeg``: DataLoader with ``workers`` processes, PIL decode + crop/flip/normalize per image
    (``data.cache=false``); (b) ``cache_torch``: the same DataLoader and transforms over the decoded
    cache; (c) ``cache_device``: the :class:`~tgp.data.device_loader.DeviceLoader` over the cache.
    Each path runs one warm-up epoch (worker start, page cache) before ``epochs`` timed ones; the
    figure is the fastest timed epoch (the one least slowed by other processes on a shared
    machine), all of them are under ``<key>_epochs``.

    The one-time cache build (train + val) runs first, in a fresh process that imports only the
    cache module, so that its peak resident memory (``cache_build_peak_rss_mb``: the process
    and, separately, its decode workers) can be set against the cache size (``cache_mb``). The
    cache goes to a temporary ``data.cache_dir``, removed afterwards: the tree is left as it was
    and the build is a cold one (the image files may be in the page cache, as after any first read).
    ``root`` is the ``tiny-imagenet-200`` folder or its parent; ``limit`` caps the training images.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from tgp.data.tiny_imagenet import TinyImageNetDataModule

    device = torch.device(device)
    common = dict(root=str(root), batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                  pin_memory=device.type == "cuda", val_size=0, limit_train=limit)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "batch": batch, "workers": workers, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="tgp_bench_cache_") as cache_dir:
        jpeg = TinyImageNetDataModule(cache=False, **common)
        jpeg.setup()
        result["images"] = len(jpeg.data_train)
        raw_train, raw_test = jpeg.data_train.dataset, jpeg.data_test.dataset

        # One-time build, in a process of its own (memory measured there).
        job = os.path.join(cache_dir, "job.json")
        folders = TinyImageNetDataModule(cache_dir=cache_dir, **common).cache_folders()
        with open(job, "w") as f:
            json.dump({"lists": {"train": raw_train.samples, "val": raw_test.samples}, "base": jpeg.data_path,
                       "folders": folders, "workers": min(workers, os.cpu_count() or 1)}, f)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _BUILD_IN_FRESH_PROCESS, job], capture_output=True, text=True,
                              check=True)
        result["cache_build_wall_s"] = time.perf_counter() - t0
        built = json.loads(proc.stdout.strip().splitlines()[-1])
        result["cache_build_s"] = built["seconds"]
        result["cache_build_peak_rss_mb"] = built["self_kb"] / 1024
        result["cache_build_workers_peak_rss_mb"] = built["children_kb"] / 1024
        result["cache_mb"] = sum(os.path.getsize(p) for d in folders for p in
                                 (os.path.join(d, n) for n in os.listdir(d)) if p.endswith(".npy")) / 2**20

        cached = TinyImageNetDataModule(cache_dir=cache_dir, **common)
        cached.setup()
        on_device = TinyImageNetDataModule(cache_dir=cache_dir, loader="device", **common)
        on_device.setup()
        if cached.cache_builds or on_device.cache_builds:
            raise RuntimeError("the cache built in the fresh process was not found again")

        def measure(key, loader):
            delivered_img_s(loader, device)  # warm-up
            rates = [delivered_img_s(loader, device) for _ in range(epochs)]
            result[key], result[f"{key}_epochs"] = max(rates), rates

        for key, dm in (("jpeg_loader_img_s", jpeg), ("cache_torch_img_s", cached)):
            loader = dm.train_dataloader()
            measure(key, loader)
            del loader  # stops the persistent workers
        sync(device)
        t0 = time.perf_counter()
        loader = on_device._device_loader("train", device=device)  # the split copied to the device, padded once
        sync(device)
        result["device_loader_setup_s"] = time.perf_counter() - t0
        measure("cache_device_img_s", loader)
    result["cache_torch_over_jpeg"] = result["cache_torch_img_s"] / result["jpeg_loader_img_s"]
    result["cache_device_over_jpeg"] = result["cache_device_img_s"] / result["jpeg_loader_img_s"]
    return result


def _print_tiny_imagenet(r: dict) -> None:
    print(f"Tiny ImageNet data paths: {r['images']} training images, batch {r['batch']}, device {r['device']}, "
          f"{r['workers']} DataLoader workers, {r['cpus']} CPUs, {r['torch_threads']} torch threads")
    print(f"  one-time cache build   {r['cache_build_s']:8.2f} s  ({r['cache_mb']:.0f} MB array; peak RSS "
          f"{r['cache_build_peak_rss_mb']:.0f} MB, decode workers {r['cache_build_workers_peak_rss_mb']:.0f} MB)")
    print(f"  (a) JPEG DataLoader    {r['jpeg_loader_img_s']:10,.0f} img/s")
    print(f"  (b) cache + torch      {r['cache_torch_img_s']:10,.0f} img/s  ({r['cache_torch_over_jpeg']:.1f}x)")
    print(f"  (c) cache + device     {r['cache_device_img_s']:10,.0f} img/s  ({r['cache_device_over_jpeg']:.1f}x; "
          f"{r['device_loader_setup_s']:.2f} s to place the split on the device)")


def main(argv=None) -> dict:
    """``python -m tgp.bench.data [--tiny-imagenet [ROOT]]``: the data-path figures on their own."""
    import argparse
    import json
    import tempfile

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description="Data-path throughput benchmarks (images/s).")
    ap.add_argument("--tiny-imagenet", nargs="?", const="", default=None, metavar="ROOT",
                    help="time the Tiny ImageNet paths on ROOT (tiny-imagenet-200 or its parent); without ROOT, "
                         "on a generated tree of real 64x64 JPEGs (--classes x --per-class)")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--limit", type=int, default=None, help="cap on training images (a real tree has 100k)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=8 if cuda else 2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per path after a warm-up one; the fastest counts")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of this process (default: torch's)")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.tiny_imagenet is None:
        result = loader_throughput(device, args.batch, args.workers)
        print(f"CIFAR-shaped: torch path {result['torch_loader_img_s']:,.0f} img/s, device path "
              f"{result['device_loader_img_s']:,.0f} img/s ({result['device_over_torch_loader']:.1f}x)")
    elif args.tiny_imagenet:
        result = tiny_imagenet_throughput(args.tiny_imagenet, args.batch, args.workers, device, args.limit, args.epochs)
        _print_tiny_imagenet(result)
    else:
        from tgp.data.fake_trees import write_fake_tiny_imagenet

        with tempfile.TemporaryDirectory(prefix="tgp_bench_tree_") as tmp:
            t0 = time.perf_counter()
            info = write_fake_tiny_imagenet(tmp, args.classes, args.per_class, args.val_per_class, seed=0)
            print(f"generated {args.classes * args.per_class} + {args.classes * args.val_per_class} JPEGs "
                  f"in {time.perf_counter() - t0:.1f} s under {tmp}")
            result = tiny_imagenet_throughput(info["folder"], args.batch, args.workers, device, args.limit, args.epochs)
            result["generated_tree"] = True
        _print_tiny_imagenet(result)
    if args.out:
        from tgp.io import atomic_save_json

        atomic_save_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
