"""Data-path benchmarks: augmented training batches delivered on the device, images per second."""

from __future__ import annotations

import time

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


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

    def rate(batches) -> float:
        _sync(device)
        t0, count = time.perf_counter(), 0
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            count += x.shape[0]
        _sync(device)
        return count / (time.perf_counter() - t0)

    torch_path = DataLoader(PILImages(), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    device_path = DeviceLoader(images, labels, batch_size=batch, mean=mean, std=std, device=device, shuffle=True,
                               drop_last=True, augment=True, channels_last=device.type == "cuda")
    rate(device_path), rate(torch_path)  # warm-up (worker start-up, allocator)
    torch_rate, device_rate = rate(torch_path), rate(device_path)
    return {"torch_loader_img_s": torch_rate, "device_loader_img_s": device_rate,
            "device_over_torch_loader": device_rate / torch_rate}
