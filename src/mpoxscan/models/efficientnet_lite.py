"""EfficientNet-Lite (Tan & Le 2019; Lite variants by Google, 2020) in plain PyTorch.

Lite is EfficientNet made for mobile accelerators: no squeeze-excitation, ReLU6 instead of swish, and a stem and
head that are not scaled with the width. Parameter names follow the ``efficientnet_pytorch`` layout of the
published ImageNet weights (``_conv_stem``, ``_blocks.N._expand_conv`` ...), so that they load with
``strict=True``. Convolutions use TensorFlow's "SAME" padding, which is asymmetric for stride 2, because the
weights were trained with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mpoxscan.models.base import Backbone

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-B0's stages, the base that every Lite variant scales.
_B0_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of 8, never going below 90 % of the target."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size (so any input size works)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        # Python ints, so that an exported graph gets constant padding for its input size instead of a chain of
        # Shape/Gather/Div nodes (35 of them in Lite0) that slow it down and get in the way of quantization.
        for size, k, s in zip((int(v) for v in x.shape[-2:]), self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric: the convolution pads by itself (one node, no copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; identity skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = Conv2dSame(hidden, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


class EfficientNetLite(Backbone):
    def __init__(self, width: float, depth: float, drop_rate: float, num_classes: int = 1000) -> None:
        super().__init__()
        stem_ch, head_ch = 32, 1280  # fixed in Lite: not scaled with the width
        self.drop_rate = drop_rate
        self.num_features = head_ch
        self._conv_stem = Conv2dSame(3, stem_ch, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        blocks = []
        last = len(_B0_STAGES) - 1
        for i, st in enumerate(_B0_STAGES):
            in_ch = stem_ch if i == 0 else _round_channels(st.in_ch, width)
            out_ch = _round_channels(st.out_ch, width)
            # Lite keeps the first and last stage at one block whatever the depth multiplier.
            repeats = st.repeats if i in (0, last) else int(math.ceil(st.repeats * depth))
            for r in range(repeats):
                blocks.append(MBConvBlock(in_ch if r == 0 else out_ch, out_ch, st.kernel, st.stride if r == 0 else 1, st.expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(blocks[-1]._bn2.num_features, head_ch, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._head_act = nn.ReLU6()  # a module of its own so that Grad-CAM can hook the final activated map
        self._fc = nn.Linear(head_ch, num_classes)

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    def forward_until(self, x: torch.Tensor, block: int) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks[:block]:
            x = b(x)
        return x

    def forward_from(self, h: torch.Tensor, block: int) -> torch.Tensor:
        for b in self._blocks[block:]:
            h = b(h)
        return self._head_act(self._bn1(self._conv_head(h)))

    def modules_from(self, block: int) -> list[nn.Module]:
        return [*self._blocks[block:], self._conv_head, self._bn1]

    @property
    def cam_layer(self) -> nn.Module:
        return self._head_act

    def get_classifier(self) -> nn.Linear:
        return self._fc

    def _set_classifier(self, layer: nn.Linear) -> None:
        self._fc = layer


# (width, depth, dropout) from Google's efficientnet_lite_builder; input sizes live in the registry.
def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(1.0, 1.0, 0.2, num_classes)


def efficientnet_lite1(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(1.0, 1.1, 0.2, num_classes)


def efficientnet_lite2(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(1.1, 1.2, 0.3, num_classes)
