"""The default model shipped inside the package: it matches its card and agrees with the fp32 model it came from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from mpoxscan.deploy.fidelity import Gate, compare
from mpoxscan.deploy.runtime import Screener, bundled_model

BUNDLED = bundled_model().parent
CARD = json.loads((BUNDLED / "card.json").read_text())


def test_bundled_file_matches_its_card():
    path = BUNDLED / CARD["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CARD["sha256"]
    assert path.stat().st_size == CARD["bytes"] <= 6_000_000
    assert CARD["precision"] == "int8"
    screener = Screener(path)
    assert screener.meta["precision"] == CARD["precision"] and screener.meta["architecture"] == CARD["architecture"]
    assert screener.classes == CARD["classes"] and screener.positive_class == CARD["positive_class"] == "Monkeypox"
    assert screener.threshold == CARD["screening_threshold"] and screener.meta["temperature"] == CARD["temperature"]
    assert screener.meta["preprocessing"] == CARD["preprocessing"]


def test_card_says_what_a_user_must_know():
    assert "CC BY-NC 4.0" in CARD["data"]["licence"] and CARD["data"]["images"] >= 700
    cv = CARD["cross_validated_metrics"]
    assert "not scores of this file" in cv["note"] and 0.5 < cv["metrics"]["accuracy"]["mean"] < 1
    assert CARD["intended_use"] and any("not a diagnosis" in x.lower() for x in CARD["limitations"])
    assert CARD["fidelity"]["variants"]["int8"]["agreement"] >= CARD["fidelity"]["gate"]["min_agreement"]


@pytest.mark.integration
def test_shipped_model_agrees_with_its_fp32_model_on_real_images(shared_data):
    from mpoxscan.images import load_image

    fidelity = json.loads((BUNDLED / "fidelity.json").read_text())
    items = fidelity["images"]
    assert len(items) >= 100
    for item in items:  # the reference was computed on exactly these files
        assert hashlib.sha256((shared_data / item["path"]).read_bytes()).hexdigest() == item["sha256"], item["path"]
    screener = Screener(BUNDLED / CARD["file"])
    got = np.concatenate([screener.predict_proba([load_image(shared_data / it["path"], min_side=screener.input_size)
                                                  for it in items[k:k + 32]]) for k in range(0, len(items), 32)])
    ref = np.array([it["fp32"] for it in items])
    labels = np.array([CARD["classes"].index(it["label"]) for it in items])
    result = compare(ref, got, labels)
    assert Gate().failures(result) == [], result
    assert result["agreement"] == pytest.approx(CARD["fidelity"]["variants"]["int8"]["agreement"], abs=0.01)


@pytest.mark.integration
def test_predict_uses_the_bundled_model_by_default(shared_data):
    photo = shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg"
    proc = subprocess.run([sys.executable, "-m", "mpoxscan.cli", "predict", str(photo), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"]["precision"] == "int8" and out["model"]["file"].endswith("model.onnx")
    assert set(out["results"][0]["probabilities"]) == set(CARD["classes"])
    assert "not a diagnosis" in out["disclaimer"]


@pytest.mark.integration
def test_shipped_on_device_map_matches_captum_gradcam(shared_data):
    """The int8 file's ``cam`` output against captum's Grad-CAM of the PyTorch model it came from (recorded when the
    bundle was built), on the held-out photos where both give the same answer."""
    from mpoxscan.images import load_image

    items = json.loads((BUNDLED / "fidelity.json").read_text())["images"]
    screener = Screener(BUNDLED / CARD["file"])
    corr = []
    for k in range(0, len(items), 32):
        chunk = items[k:k + 32]
        out = screener.run(screener.preprocessing.batch([load_image(shared_data / it["path"], min_side=screener.input_size)
                                                         for it in chunk]))
        for it, p, cam in zip(chunk, out["probabilities"], out["cam"]):
            if int(np.argmax(p)) == int(np.argmax(it["fp32"])):
                corr.append(np.corrcoef(cam.ravel(), np.asarray(it["gradcam"]).ravel())[0, 1])
    assert len(corr) >= 0.98 * len(items)
    assert np.mean(corr) >= 0.99, np.mean(corr)
