"""Slim weight copies for the GPU machine: they load in place of the packages' files, checked, and no other way."""

from __future__ import annotations

import pytest
import torch

from mpoxscan.errors import WeightsError
from mpoxscan.models import classifier_keys, create_model, get_spec
from mpoxscan.models.weights import SLIM_DIR_ENV, slim_path, write_slim


def test_slim_copy_loads_in_place_of_the_package_file(tmp_path, monkeypatch):
    spec = get_spec("mobilenetv2_100")
    reference = create_model("mobilenetv2_100", pretrained=True, num_classes=3)
    path = write_slim(spec.weights, tmp_path, tuple(classifier_keys(reference)))
    assert path.stat().st_size < 0.6 * 14_000_000  # fp16 convolutions, no classifier (the original: 14 MB)
    monkeypatch.setenv(SLIM_DIR_ENV, str(tmp_path))
    model = create_model("mobilenetv2_100", pretrained=True, num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = reference.forward_pooled(x), model.forward_pooled(x)
    assert torch.allclose(a, b, atol=0.05, rtol=0.02) and not torch.equal(a, b)  # the fp16 copy, close to fp32
    # The ImageNet classifier is not in the copy: a 1000-class model cannot be built from it.
    with pytest.raises(WeightsError):
        create_model("mobilenetv2_100", pretrained=True)
    # A changed file is refused.
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        create_model("mobilenetv2_100", pretrained=True, num_classes=3)


def test_without_the_variable_the_package_file_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv(SLIM_DIR_ENV, raising=False)
    assert slim_path(get_spec("efficientnet_lite0").weights).name.endswith(".slim.pt")
    assert create_model("mobilenetv2_100", pretrained=True).num_classes == 1000
