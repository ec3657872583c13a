"""MobileNetV2 (Sandler et al., 2018) in plain PyTorch, with torchvision's parameter names.

torchvision cannot be imported beside this machine's PyTorch build (see TOOLCHAIN.md), so the architecture is
written out here under the key layout of torchvision's IMAGENET1K_V1 weights (``features.N.conv...``,
``classifier.1``), which then load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from mpoxscan.models.base import Backbone

# (expansion t, output channels c, repeats n, first stride s) from the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=False),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(in_ch * expand)
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(Backbone):
    def __init__(self, width: float = 1.0, drop_rate: float = 0.2, num_classes: int = 1000) -> None:
        super().__init__()
        in_ch = _make_divisible(32 * width)
        self.num_features = _make_divisible(1280 * max(1.0, width))
        self.drop_rate = drop_rate
        layers: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in _SETTINGS:
            out_ch = _make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(ConvBNReLU6(in_ch, self.num_features, kernel=1))
        self.features = nn.Sequential(*layers)
        # Index 0 keeps torchvision's key "classifier.1"; dropout is applied in Backbone.forward_head.
        self.classifier = nn.Sequential(nn.Identity(), nn.Linear(self.num_features, num_classes))

    # features[0] is the stem, features[1:-1] the inverted-residual blocks, features[-1] the head convolution.
    @property
    def num_blocks(self) -> int:
        return len(self.features) - 2

    def forward_until(self, x: torch.Tensor, block: int) -> torch.Tensor:
        return self.features[: block + 1](x)

    def forward_from(self, h: torch.Tensor, block: int) -> torch.Tensor:
        return self.features[block + 1:](h)

    def modules_from(self, block: int) -> list[nn.Module]:
        return list(self.features[block + 1:])

    @property
    def cam_layer(self) -> nn.Module:
        return self.features[-1]

    def get_classifier(self) -> nn.Linear:
        return self.classifier[1]

    def _set_classifier(self, layer: nn.Linear) -> None:
        self.classifier[1] = layer


def mobilenetv2_100(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(width=1.0, num_classes=num_classes)
