"""VGG-16/19 with BatchNorm, CIFAR variant.

The feature extractor follows the standard configurations (D and E of Simonyan & Zisserman)
with every channel count scaled by ``width / 64`` (standard width 64). The classifier is the
common CIFAR variant: global average pooling followed by a single ``Linear`` from the last
channel count to ``num_classes`` (instead of the three large fully connected layers).

Max-pools use ``ceil_mode=True`` so that a 1x1 map stays 1x1: with 8x8 inputs the five pools
give 8 -> 4 -> 2 -> 1 -> 1 -> 1 instead of shrinking to zero; at 32x32 and 64x64 the result
equals the usual floor-mode pooling (all sizes are even until 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tgp.models.registry import register_model
from tgp.models.resnet import init_weights

# "M" = 2x2 max-pool; numbers are channel counts at the standard width 64.
_CFGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_channels: int = 3, width: int = 64,
                 arch: str = "vgg"):
        super().__init__()
        self.num_classes = num_classes
        self.arch = arch
        layers: list[nn.Module] = []
        ch = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                out = max(1, int(v) * width // 64)
                layers += [nn.Conv2d(ch, out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU(inplace=True)]
                ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int = 3, width: int | None = None) -> VGG:
    return VGG(_CFGS["vgg16"], num_classes, in_channels, 64 if width is None else width, arch="vgg16")


@register_model("vgg19")
def vgg19(num_classes: int, in_channels: int = 3, width: int | None = None) -> VGG:
    return VGG(_CFGS["vgg19"], num_classes, in_channels, 64 if width is None else width, arch="vgg19")
