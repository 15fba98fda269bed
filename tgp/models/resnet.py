"""CIFAR-style ResNets.

* ``resnet18/34/50``: the ImageNet depths adapted to small images — a 3x3 stride-1 stem conv,
  no max-pool, four stages of widths ``width * (1, 2, 4, 8)`` with strides ``(1, 2, 2, 2)``,
  global average pooling. Standard width 64 (``resnet18`` with 10 classes: 11,173,962 params).
* ``resnet20/56``: the classic CIFAR ResNets of He et al. (2016): three stages of ``n`` basic
  blocks (n=3 / n=9) with widths ``width * (1, 2, 4)``, standard width 16.

Adaptive average pooling makes every model work at 8x8, 32x32 and 64x64 inputs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from tgp.models.registry import register_model


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    # Projection shortcut (1x1 conv + BN) whenever the shape changes, identity otherwise.
    # For resnet20/56 this is He et al.'s "option B" — our choice (the paper's CIFAR models
    # use option A, zero-padding); for resnet18/34/50 it is the standard shortcut.
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, BN weight 1 / bias 0, default-like init for Linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """Generic CIFAR-style ResNet: 3x3 stem (stride 1, no max-pool), stages, GAP, ``fc``."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        stage_widths: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        arch: str = "resnet",
    ):
        super().__init__()
        if len(num_blocks) != len(stage_widths):
            raise ValueError("num_blocks and stage_widths must have the same length")
        self.num_classes = num_classes
        self.arch = arch
        stem = stage_widths[0]
        self.conv1 = _conv3x3(in_channels, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        in_ch = stem
        stages = []
        for i, (n, planes) in enumerate(zip(num_blocks, stage_widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, planes, stride if j == 0 else 1))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def _widths(width: int | None, default: int, multipliers: Sequence[int]) -> list[int]:
    w = default if width is None else width
    return [w * m for m in multipliers]


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, width: int | None = None) -> ResNet:
    return ResNet(
        BasicBlock, [2, 2, 2, 2], _widths(width, 64, (1, 2, 4, 8)), num_classes, in_channels, arch="resnet18"
    )


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int = 3, width: int | None = None) -> ResNet:
    return ResNet(
        BasicBlock, [3, 4, 6, 3], _widths(width, 64, (1, 2, 4, 8)), num_classes, in_channels, arch="resnet34"
    )


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, width: int | None = None) -> ResNet:
    return ResNet(
        Bottleneck, [3, 4, 6, 3], _widths(width, 64, (1, 2, 4, 8)), num_classes, in_channels, arch="resnet50"
    )


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int = 3, width: int | None = None) -> ResNet:
    return ResNet(
        BasicBlock, [3, 3, 3], _widths(width, 16, (1, 2, 4)), num_classes, in_channels, arch="resnet20"
    )


@register_model("resnet56")
def resnet56(num_classes: int, in_channels: int = 3, width: int | None = None) -> ResNet:
    return ResNet(
        BasicBlock, [9, 9, 9], _widths(width, 16, (1, 2, 4)), num_classes, in_channels, arch="resnet56"
    )
