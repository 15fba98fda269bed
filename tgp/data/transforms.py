"""Small transform helpers shared by the DataModules."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision import transforms as T


def pil_train_transform(size: int, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                        flip: bool = True) -> T.Compose:
    """Standard CIFAR-style augmentation for PIL input: padded random crop + horizontal flip
    (``flip=False``: the crop alone, for data whose mirror images are not in the data, e.g. digits)."""
    return T.Compose(
        [
            T.RandomCrop(size, padding=padding),
            *([T.RandomHorizontalFlip()] if flip else []),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def pil_eval_transform(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """PIL image -> normalized float tensor, no augmentation."""
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


class RandomTranslate:
    """Random translation of a ``[C, H, W]`` tensor by up to ``pad`` pixels (pad + random crop).

    The border is filled with ``fill`` (the normalized value of a blank pixel).
    """

    def __init__(self, pad: int, fill: float = 0.0):
        self.pad = int(pad)
        self.fill = float(fill)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad <= 0:
            return x
        h, w = x.shape[-2:]
        p = self.pad
        padded = F.pad(x, (p, p, p, p), value=self.fill)
        i = int(torch.randint(0, 2 * p + 1, ()).item())
        j = int(torch.randint(0, 2 * p + 1, ()).item())
        return padded[..., i : i + h, j : j + w]

    def __repr__(self) -> str:
        return f"RandomTranslate(pad={self.pad}, fill={self.fill})"
