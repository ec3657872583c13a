"""The answer rule (positive / negative / cannot tell), its JavaScript mirror, and the measurements in the graph."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpoxscan.deploy.answer import REASONS, AnswerRule, conformal_limit, fit_rule

ANSWER_JS = Path(__file__).resolve().parents[1] / "src" / "mpoxscan" / "web" / "static" / "answer.js"
RULE = AnswerRule(screening_threshold=0.3, positive_class="Monkeypox", min_side=64, min_brightness=0.2,
                  min_sharpness=3.0, min_skin_share=0.05, max_blockiness=2.5, max_offtask=2.0)
GOOD = {"brightness": 0.5, "sharpness": 50.0, "skin_share": 0.6, "blockiness": 1.2, "offtask": 1.0}


def test_a_good_photo_is_screened_at_the_threshold():
    assert RULE.decide(0.3, 500, GOOD) == ("positive", None)
    assert RULE.decide(0.2999, 500, GOOD) == ("negative", None)


@pytest.mark.parametrize("side, change, reason", [
    (63, {}, "too small"),
    (500, {"brightness": 0.1}, "too dark"),
    (500, {"sharpness": 1.0}, "blurred"),
    (500, {"blockiness": 2.6}, "too compressed"),
    (500, {"skin_share": 0.0}, "not a skin close-up"),
    (500, {"offtask": 2.5}, "unlike the photos the model learned from"),
    # The first reason that applies is given: a dark photo is also blurred and holds no skin colour.
    (500, {"brightness": 0.1, "sharpness": 1.0, "skin_share": 0.0, "blockiness": 9.0, "offtask": 9.0}, "too dark"),
    (500, {"blockiness": 9.0, "skin_share": 0.0, "offtask": 9.0}, "too compressed"),
])
def test_a_photo_the_model_cannot_judge_gets_no_verdict(side, change, reason):
    # Even with P(mpox) = 1: a refused photo never shows a screening verdict.
    assert RULE.decide(1.0, side, {**GOOD, **change}) == ("cannot tell", reason)
    assert reason in REASONS.values()


def test_a_photo_blurred_by_its_enlargement_is_too_small():
    """Issue 28, item 8: a 64 px photo (over the 64 px limit, under the 224 px input) is enlarged, so it reads as
    blurred, and was told "hold the phone still"; it is too small, and the advice is to come closer. A large
    blurred photo is still "blurred"; a rule that does not know its input size is unchanged."""
    rule = AnswerRule(**{**RULE.as_dict(), "input_size": 224})
    assert rule.decide(0.9, 64, {**GOOD, "sharpness": 1.0}) == ("cannot tell", "too small")
    assert rule.decide(0.9, 224, {**GOOD, "sharpness": 1.0}) == ("cannot tell", "blurred")
    assert rule.decide(0.9, 64, GOOD) == ("positive", None)  # a sharp small photo is screened
    assert RULE.decide(0.9, 64, {**GOOD, "sharpness": 1.0}) == ("cannot tell", "blurred")
    meta = {"classes": ["Healthy", "Monkeypox"], "screening_threshold": 0.3, "preprocessing": {"input_size": 224}}
    assert AnswerRule.from_meta(meta).input_size == 224  # every exported file knows its input size


def test_a_measurement_that_is_not_a_number_refuses_the_photo():
    assert RULE.decide(0.9, 500, {**GOOD, "offtask": float("nan")}) == ("cannot tell", REASONS["unfamiliar"])
    assert RULE.decide(0.9, 500, {**GOOD, "offtask": float("inf")}) == ("cannot tell", REASONS["unfamiliar"])
    assert RULE.decide(0.9, 500, {**GOOD, "sharpness": float("nan")}) == ("cannot tell", "blurred")


def test_checks_without_a_threshold_or_a_measure_are_off():
    legacy = AnswerRule.from_meta({"classes": ["Healthy", "Monkeypox"], "positive_class": "Monkeypox",
                                   "screening_threshold": 0.4})
    assert legacy.decide(0.5, 10, {"brightness": 0.0, "offtask": 99.0}) == ("positive", None)
    assert RULE.decide(0.1, 500, {}) == ("negative", None)  # a file without the measurement outputs
    assert RULE.decide(0.9, None, GOOD) == ("positive", None)  # a caller that does not know the photo's size


def test_rule_round_trips_through_model_metadata():
    meta = {"classes": ["Healthy", "Monkeypox"], "screening_threshold": 0.3, "answer_rule": RULE.as_dict()}
    assert AnswerRule.from_meta(json.loads(json.dumps(meta))) == RULE


def test_conformal_limit_refuses_at_most_alpha_of_exchangeable_photos():
    values = np.arange(1, 200, dtype=float)  # 199 values
    assert conformal_limit(values, 0.05, lower=True) == 10.0  # k = floor(200 * 0.05) = 10: the 10th smallest
    assert conformal_limit(values, 0.05, lower=False) == 190.0
    assert conformal_limit(values[:50], 0.01, lower=True) is None  # too few photos to promise 1 %: the check is off
    rng = np.random.default_rng(0)
    refused = []
    for _ in range(300):  # fresh photos from the same distribution: refused at most alpha of the time, on average
        sample = rng.normal(size=400)
        limit = conformal_limit(sample, 0.02, lower=False)
        refused.append((rng.normal(size=2000) > limit).mean())
    assert 0.01 < np.mean(refused) <= 0.021


def test_fit_rule_sets_each_limit_from_its_own_photos():
    rng = np.random.default_rng(1)
    quality = np.column_stack([rng.uniform(0.2, 0.9, 800), rng.uniform(5, 500, 800), rng.uniform(0.1, 1, 800)])
    blocks = rng.uniform(1, 3, 800)
    offtask = rng.uniform(0.5, 2.0, 150)
    rule = fit_rule(AnswerRule(0.3, "Monkeypox"), quality, offtask, blocks)
    assert rule.min_side == 64 and rule.max_offtask == offtask.max()  # 150 photos at 1 %: the largest
    assert rule.min_brightness == np.sort(quality[:, 0])[3] and rule.min_sharpness == np.sort(quality[:, 1])[3]
    assert rule.max_blockiness == np.sort(blocks)[-4]  # an upper limit: the 4th largest of 800 at 0.5 %
    assert rule.notes["quality_photos"] == 800 and rule.notes["offtask_photos"] == 150
    assert (quality[:, 0] < rule.min_brightness).sum() == 3 and (blocks > rule.max_blockiness).sum() == 3
    assert fit_rule(AnswerRule(0.3, "Monkeypox"), quality, offtask).max_blockiness is None  # not measured: off
    # Photos that screening does not measure (NaN: a large JPEG decoded at reduced scale) take no part in the limit.
    with_unmeasured = np.r_[blocks, np.full(40, np.nan), np.full(3, 99.0)][::-1]
    unmeasured = fit_rule(AnswerRule(0.3, "Monkeypox"), quality, offtask, with_unmeasured)
    assert unmeasured.notes["blockiness_photos"] == 803 and unmeasured.max_blockiness == np.sort(blocks)[-1]
    none_measured = fit_rule(AnswerRule(0.3, "Monkeypox"), quality, offtask, np.full(50, np.nan))
    assert none_measured.max_blockiness is None and none_measured.notes["blockiness_photos"] == 0  # off, and says why


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run answer.js")
def test_the_page_decides_exactly_as_python():
    """answer.js against deploy/answer.py on many random cases, thresholds on and off."""
    rng = np.random.default_rng(2)
    cases = []
    for _ in range(400):
        rule = RULE.as_dict()
        for name in ("min_brightness", "min_sharpness", "min_skin_share", "max_blockiness", "max_offtask"):
            if rng.random() < 0.2:
                rule[name] = None
        rule["input_size"] = int(rng.choice([0, 224]))
        measures = {"brightness": float(rng.uniform(0, 0.5)), "sharpness": float(rng.uniform(0, 8)),
                    "skin_share": float(rng.uniform(0, 0.1)), "blockiness": float(rng.uniform(1.5, 3.5)),
                    "offtask": float(rng.uniform(1, 3))}
        if rng.random() < 0.2:
            measures.pop("offtask")
        side = int(rng.integers(40, 100)) if rng.random() < 0.6 else int(rng.integers(200, 400))
        cases.append({"rule": rule, "p": float(rng.uniform(0, 0.6)), "side": side, "m": measures})
    script = (f"const A = require({json.dumps(str(ANSWER_JS))});"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(cases.map(c => A.decide(c.rule, c.p, c.side, c.m))));")
    out = subprocess.run(["node", "-e", script], input=json.dumps(cases), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    js = [tuple(x) for x in json.loads(out.stdout)]
    py = [AnswerRule(**{k: v for k, v in c["rule"].items() if k != "notes"}).decide(c["p"], c["side"], c["m"])
          for c in cases]
    assert js == py
    assert {a for a, _ in py} == {"positive", "negative", "cannot tell"} and len({r for _, r in py}) == 7


def test_quality_measures_in_the_graph():
    import torch
    from scipy import ndimage

    from mpoxscan.deploy.checks import QualityMeasures

    rng = np.random.default_rng(3)
    skin = np.full((64, 64, 3), (200, 150, 120), np.float32) + rng.normal(0, 20, (64, 64, 1))
    dark_skin = np.full((64, 64, 3), (90, 60, 45), np.float32) + rng.normal(0, 8, (64, 64, 1))
    blue = np.full((64, 64, 3), (40, 60, 200), np.float32)
    rgb = np.clip(np.stack([skin, dark_skin, blue]), 0, 255).round()
    x = torch.from_numpy(((rgb / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32))
    got = QualityMeasures((0.5,) * 3, (0.5,) * 3)(x).numpy()
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(got[:, 0], luma.mean((1, 2)) / 255, atol=1e-5)
    lap = np.stack([ndimage.laplace(v)[1:-1, 1:-1] for v in luma])
    assert np.allclose(got[:, 1], lap.var((1, 2)), rtol=1e-4)
    assert got[0, 2] > 0.9 and got[1, 2] > 0.9 and got[2, 2] == 0  # light and dark skin alike; blue is not skin
    assert got[2, 1] == pytest.approx(0, abs=1e-6)  # a flat colour has no detail


def test_offtask_score_in_the_graph_matches_its_fit():
    import torch

    from mpoxscan.deploy.checks import OfftaskScore, fit_offtask, pooled_moments

    rng = np.random.default_rng(4)
    # Training activations: 8 channels driven by 3 hidden factors; an off-task one breaks that structure.
    factors = rng.normal(size=(200, 3))
    mixing = rng.normal(size=(3, 8))
    train = torch.from_numpy((factors @ mixing)[:, :, None, None] + rng.normal(0, 0.05, (200, 8, 4, 4))).float()
    fit = fit_offtask(pooled_moments(train).numpy(), block=5, components=6)
    module = OfftaskScore(fit)
    odd = torch.from_numpy(rng.normal(0, 3, (5, 8, 4, 4))).float()
    with torch.no_grad():
        scores = module(torch.cat([train[:20], odd])).numpy()
    assert np.allclose(scores, fit.score(pooled_moments(torch.cat([train[:20], odd])).numpy()), rtol=1e-4)
    assert np.median(module(train).detach().numpy()) == pytest.approx(1.0, rel=1e-3)  # in units of the median
    assert scores[20:].min() > 3 * scores[:20].max()



def _photo(size: int, seed: int):
    """A photo-like picture: smooth colour at every scale and fine grain, no 8-pixel structure."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(40, 220, (12, 12, 3), dtype=np.uint8)).resize((size, size),
                                                                                          Image.Resampling.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(coarse, np.float32) + rng.normal(0, 6, (size, size, 3)), 0, 255)
                           .astype(np.uint8))


def _jpeg(image, quality: int):
    import io

    from PIL import Image

    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_blockiness_sees_heavy_jpeg_compression_wherever_the_grid_falls():
    from PIL import Image

    from mpoxscan.deploy.compression import blockiness, photo_blockiness

    photo = _photo(400, 4)
    clean, q95, q10 = blockiness(photo), blockiness(_jpeg(photo, 95)), blockiness(_jpeg(photo, 10))
    assert clean < 1.2 and q95 < 1.3 and q10 > 2 * clean
    # A crop that shifts the block grid by an odd number of pixels (the centre square of a 397 x 395 photo).
    shifted = _jpeg(photo, 10).crop((3, 5, 400, 400))
    assert blockiness(shifted) > 2 * clean
    assert blockiness(Image.new("RGB", (224, 224), (120, 90, 70))) == 0  # a flat picture: no steps, no blocks
    assert blockiness(Image.new("L", (100, 100), 90)) == 0  # any mode
    # Not measured on a photo the loader decoded at a reduced scale.
    reduced = photo.resize((200, 200))
    reduced.info["source_size"] = (400, 400)
    assert photo_blockiness(reduced) is None and photo_blockiness(photo) == clean


def test_blockiness_reaches_the_answer_from_a_file_path_and_a_reduced_decode(tmp_path):
    """Through the loader: a small JPEG at quality 10 is measured; a large one decoded at 1/8 scale is not."""
    from mpoxscan.deploy.compression import photo_blockiness
    from mpoxscan.images import load_image

    small, large = tmp_path / "small.jpg", tmp_path / "large.jpg"
    _photo(300, 5).save(small, quality=10)
    _photo(2000, 6).save(large, quality=10)
    assert photo_blockiness(load_image(small, min_side=224)) > 2
    assert photo_blockiness(load_image(large, min_side=224)) is None
    assert photo_blockiness(load_image(large)) > 2
    # Given the network's input, a large JPEG is skipped however it was decoded (the leave-one-site-out answers
    # decoded whole and met a limit fitted without such photos); a small one, or a large PNG, is still measured.
    assert photo_blockiness(load_image(large), 224) is None
    assert photo_blockiness(load_image(large), 1000) > 2
    assert photo_blockiness(load_image(small), 224) == photo_blockiness(load_image(small, min_side=224), 224) > 2
    png = tmp_path / "large.png"
    load_image(large).save(png)
    assert photo_blockiness(load_image(png), 224) > 2


def test_screener_skips_blockiness_of_a_large_jpeg_whichever_way_it_was_decoded(tmp_path):
    """`mpoxscan predict` and the service decode a large JPEG at a reduced scale; a caller that decodes it whole
    (the cv answers, a benchmark) must get the same answer, not "too compressed"."""
    from mpoxscan.deploy.runtime import Screener, bundled_model
    from mpoxscan.images import load_image

    screener = Screener(bundled_model())
    large, small = tmp_path / "large.jpg", tmp_path / "small.jpg"
    _photo(2000, 6).save(large, quality=10)
    _photo(300, 5).save(small, quality=10)
    whole, reduced = screener.screen(load_image(large)), screener.screen(load_image(large, min_side=224))
    assert "blockiness" not in whole.measures and "blockiness" not in reduced.measures
    assert whole.reason != "too compressed" and reduced.reason != "too compressed"
    assert screener.screen(load_image(small)).reason == "too compressed"


def test_export_measures_blockiness_as_screening_does_from_the_same_decode(tmp_path):
    """The reference photos of the compression limit: measured from the decode that feeds the network, and not at
    all where screening does not measure (a JPEG large enough to be decoded at reduced scale), in row order."""
    from types import SimpleNamespace

    from mpoxscan.deploy.compression import photo_blockiness
    from mpoxscan.deploy.export import preprocessed
    from mpoxscan.images import load_image

    paths = [tmp_path / "small.jpg", tmp_path / "large.jpg", tmp_path / "clean.png"]
    _photo(300, 5).save(paths[0], quality=10)
    _photo(600, 6).save(paths[1], quality=10)  # short side 600 > 2 x 224: decoded at 1/2 scale
    _photo(300, 7).save(paths[2])
    rows = [SimpleNamespace(path=str(p)) for p in paths]
    card = {"preprocessing": {"input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}}
    x, b = preprocessed(rows, [2, 1, 0], card, blockiness=True)
    assert x.shape == (3, 3, 224, 224) and np.array_equal(x, preprocessed(rows, [2, 1, 0], card))
    assert np.isnan(b[1]) and b[0] < 1.3 and b[2] > 2
    assert b[2] == photo_blockiness(load_image(paths[0], min_side=224))
    # At an input size for which the same JPEG is decoded whole, it is measured.
    _, at_320 = preprocessed(rows, [1], {"preprocessing": {**card["preprocessing"], "input_size": 320}}, blockiness=True)
    assert at_320[0] > 2
    empty, none = preprocessed(rows, [], card, blockiness=True)
    assert empty.shape == (0, 3, 224, 224) and none.shape == (0,)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run answer.js")
def test_the_page_measures_blockiness_exactly_as_python():
    from PIL import Image

    from mpoxscan.deploy.compression import blockiness, centre_crop_box

    pictures = [_photo(300, 7), _jpeg(_photo(300, 7), 10), _jpeg(_photo(257, 8), 30).crop((1, 2, 257, 250)),
                Image.new("RGB", (70, 90), (10, 200, 30)), _jpeg(_photo(700, 9), 20),
                _jpeg(_photo(300, 10), 10).crop((0, 0, 300, 12))]  # too thin to measure: 0 on both sides
    cases = []
    for im in pictures:
        left, top, w, h = centre_crop_box(*im.size)
        rgba = np.asarray(im.convert("RGBA").crop((left, top, left + w, top + h))).ravel().tolist()
        cases.append({"size": list(im.size), "rgba": rgba, "w": w, "h": h})
    script = (f"const A = require({json.dumps(str(ANSWER_JS))});"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(cases.map(c => [A.centreCropBox(c.size[0], c.size[1]),"
              " A.blockiness(c.rgba, c.w, c.h)])));")
    out = subprocess.run(["node", "-e", script], input=json.dumps(cases), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for im, (box, value) in zip(pictures, got):
        assert tuple(box) == centre_crop_box(*im.size)
        assert value == pytest.approx(blockiness(im), rel=1e-9, abs=1e-12)
    assert got[1][1] > 2 * got[0][1]  # the parity covers a compressed picture too
