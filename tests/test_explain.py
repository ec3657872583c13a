"""Heat maps (captum), the on-device map, their technical validation, and the clinical review gallery."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SQUARE_CLASSES, chromium
from PIL import Image

from mpoxscan.errors import MpoxscanError
from mpoxscan.preprocess import Preprocessing

CLI = [sys.executable, "-m", "mpoxscan.cli"]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion", "integrated-gradients"])
def test_every_method_gives_a_normalised_map(checkpoint, photos, method):
    import torch

    from mpoxscan.explain.attribution import attribute
    from mpoxscan.training.train import load_checkpoint

    model, card = load_checkpoint(checkpoint)
    size = card["preprocessing"]["input_size"]
    prep = Preprocessing.from_dict(card["preprocessing"])
    # One photo of each class, each explained for its own class: Grad-CAM keeps only positive evidence, so a map of
    # a class the picture shows no sign of may rightly be all zero, and noise input would test nothing.
    labels = list(SQUARE_CLASSES)
    x = torch.from_numpy(np.stack([prep(Image.open(photos[c]).convert("RGB")) for c in labels]))
    heat = attribute(model, x, [card["classes"].index(c) for c in labels], method)
    assert heat.shape == (2, size, size) and heat.min() >= 0 and np.allclose(heat.max((1, 2)), 1)
    with pytest.raises(MpoxscanError, match="unknown method"):
        attribute(model, x, 0, "lime")


def test_gradcam_of_a_model_that_reads_colour_looks_at_the_square(checkpoint):
    """The squares' class is the colour of one square: its map must be stronger on the square than off it."""
    import torch

    from mpoxscan.explain.attribution import attribute
    from mpoxscan.training.train import load_checkpoint

    model, card = load_checkpoint(checkpoint)
    size = card["preprocessing"]["input_size"]
    inside = []
    for seed in range(6):
        rng = np.random.default_rng(900 + seed)
        arr = rng.integers(90, 170, size=(96, 96, 3), dtype=np.uint8)
        arr[50:90, 50:90] = SQUARE_CLASSES["Monkeypox"]  # the square in the bottom-right corner
        x = Preprocessing.from_dict(card["preprocessing"])(Image.fromarray(arr))
        heat = attribute(model, torch.from_numpy(x[None]), card["classes"].index("Monkeypox"), "gradcam")[0]
        box = slice(round(50 / 96 * size), round(90 / 96 * size))
        mask = np.zeros_like(heat, bool)
        mask[box, box] = True
        inside.append(heat[mask].mean() > heat[~mask].mean())
    assert sum(inside) >= 5, inside


def test_explain_cli_writes_captioned_overlays(checkpoint, exported, photos, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = subprocess.run(CLI + ["explain", str(checkpoint), str(photos["Monkeypox"]), str(tmp_path / "broken.jpg"),
                                 "--out", str(tmp_path / "maps"), "--method", "gradcam++", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    records = json.loads(proc.stdout)
    ok = [r for r in records if "error" not in r]
    assert len(ok) == 1 and ok[0]["predicted"] == "Monkeypox"
    png = Image.open(ok[0]["explanation"])
    assert png.width == 448 and png.height > 448  # the photo plus the caption band
    proc = subprocess.run(CLI + ["explain", str(exported / "model.int8.onnx"), str(photos["Healthy"]), "--out",
                                 str(tmp_path / "maps2")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "maps2" / "Healthy.gradcam.png").exists()
    proc = subprocess.run(CLI + ["explain", str(exported / "model.int8.onnx"), str(photos["Healthy"]), "--out",
                                 str(tmp_path / "m3"), "--method", "occlusion"], capture_output=True, text=True)
    assert proc.returncode == 1 and "needs the checkpoint" in proc.stderr


def test_validate_reports_every_check(checkpoint, exported, squares_manifest, tmp_path):
    from mpoxscan.explain.validate import validate

    r = validate(checkpoint, squares_manifest, tmp_path, [exported / "model.int8.onnx"], limit=4, progress=False)
    assert r["images"] == 4 and r["held_out_is_unseen"] is True
    assert set(r["randomisation"]) == {"classifier", "classifier + last block", "classifier + last 5 blocks"}
    assert all(-1 <= v["mean_spearman"] <= 1 for v in r["randomisation"].values())
    for order in ("grad-cam", "random", "centre prior"):
        for kind in ("deletion", "insertion"):
            assert 0 <= r["deletion_insertion"][order][kind]["mean"] <= 1
    assert r["on_device_cam"]["fp32 (in memory)"]["pearson_with_captum_gradcam"]["mean"] > 0.999
    assert r["location"]["area"]["centre"] == pytest.approx(0.25, abs=0.01)
    assert r["cam_latency"]["with_cam"] > 0
    assert "Model randomisation" in (tmp_path / "validation.md").read_text()
    assert (tmp_path / "validation.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def cv_run(squares_manifest, tmp_path_factory) -> Path:
    from mpoxscan.training.cv import CVConfig, run_cv

    out = tmp_path_factory.mktemp("cvrun")
    run_cv(CVConfig(manifest=str(squares_manifest), models=["mobilenetv2_100"], strategy="linear", protocol="kfold",
                    views=0, only_folds=["fold1", "fold2"], exports=["int8"], int8_settings="u8u8",
                    extra={"cache": str(out / "cache")}),
           out / "run", progress=False)
    return out / "run"


def test_gallery_page_lists_every_test_image(cv_run, tmp_path):
    from mpoxscan.explain.gallery import build_gallery

    page = build_gallery(cv_run, tmp_path / "review", progress=False)
    cases = json.loads((tmp_path / "review" / "cases.json").read_text())
    assert len(cases) == sum(1 for f in (cv_run / "predictions").glob("*__onnx-fp32.csv") for _ in open(f)) - 2
    text = page.read_text()
    assert text.count('class="case"') == len(cases) and "Save marks (CSV)" in text
    for c in cases:
        assert (tmp_path / "review" / "img" / f"{c['stem']}.cam.jpg").exists()
        assert c["outcome"] in ("correct", "false-negative", "false-positive", "misclassified")
    with pytest.raises(MpoxscanError, match="not a cross-validation run"):
        build_gallery(tmp_path, tmp_path / "x")
    shutil.rmtree(cv_run / "models")
    with pytest.raises(MpoxscanError, match="--exports"):
        build_gallery(cv_run, tmp_path / "y")


def test_gallery_marks_round_trip_in_headless_chromium(squares_manifest, tmp_path):
    """Open the page in Chromium, mark two explanations, save the CSV, and summarise it."""
    from selenium.webdriver.common.by import By

    from mpoxscan.explain.gallery import build_gallery, summarise_marks
    from mpoxscan.training.cv import CVConfig, run_cv

    run_cv(CVConfig(manifest=str(squares_manifest), models=["mobilenetv2_100"], strategy="linear", protocol="kfold",
                    views=0, only_folds=["fold3"], exports=["fp16"], extra={"cache": str(tmp_path / "cache")}),
           tmp_path / "run", progress=False)
    page = build_gallery(tmp_path / "run", tmp_path / "review", progress=False)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(tmp_path / "profile")
    try:
        # Headless Chrome saves downloads only where it is told to.
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get(page.as_uri())
        figures = driver.find_elements(By.CSS_SELECTOR, ".case")
        assert figures and all(img.get_property("naturalWidth") == 224 for img in driver.find_elements(By.TAG_NAME, "img"))
        figures[0].find_element(By.CSS_SELECTOR, "input[value='plausible']").click()
        figures[1].find_element(By.CSS_SELECTOR, "input[value='not plausible']").click()
        figures[1].find_element(By.TAG_NAME, "textarea").send_keys('looks at the "background", not the lesion')
        assert "2 of" in driver.find_element(By.ID, "count").text
        driver.refresh()  # marks survive a reload (kept in the browser)
        assert "2 of" in driver.find_element(By.ID, "count").text
        expected = driver.execute_script("return window.mpoxscanMarksCSV()")
        driver.find_element(By.ID, "save").click()
        # Chrome writes a .crdownload first and may create the final name early: wait for a complete, stable file.
        marks, text = downloads / "marks.csv", ""
        for _ in range(150):
            if marks.exists() and not list(downloads.glob("*.crdownload")) and marks.stat().st_size > 0:
                text = marks.read_text()
                if text == expected:
                    break
            time.sleep(0.1)
    finally:
        driver.quit()
    assert text == expected, (text, expected)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["mark"] for r in rows] == ["plausible", "not plausible"]
    assert rows[1]["note"] == 'looks at the "background", not the lesion'
    marks = tmp_path / "marks.csv"
    marks.write_text(text)
    summary = summarise_marks(marks)
    assert summary["marked"] == 2 and summary["plausible"] == 1
    proc = subprocess.run(CLI + ["explain", "--summarise", str(marks)], capture_output=True, text=True)
    assert proc.returncode == 0 and "1 of 2 explanations marked plausible" in proc.stdout


def test_summarise_refuses_bad_files(tmp_path):
    from mpoxscan.explain.gallery import summarise_marks

    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(MpoxscanError, match="not a marks CSV"):
        summarise_marks(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("image,true,outcome,mark\na,Healthy,correct,maybe\n")
    with pytest.raises(MpoxscanError, match="unknown mark"):
        summarise_marks(tmp_path / "b.csv")
    with pytest.raises(MpoxscanError, match="no such file"):
        summarise_marks(tmp_path / "none.csv")
