"""Preprocessing: resize-then-centre-crop geometry and normalisation, in NumPy only."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mpoxscan.preprocess import Preprocessing


def test_output_shape_dtype_and_normalisation():
    prep = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)
    out = prep(Image.new("RGB", (80, 40), (255, 0, 128)))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert np.allclose(out[0], 1.0) and np.allclose(out[1], -1.0) and np.allclose(out[2], 128 / 255 * 2 - 1, atol=1e-6)


def test_centre_crop_keeps_the_middle_of_a_wide_photo():
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, 40:80] = 255  # a white band in the middle third
    prep = Preprocessing(20, (0, 0, 0), (1, 1, 1), interpolation="bilinear", crop_pct=1.0)
    out = prep(Image.fromarray(arr))
    assert out[:, :, 1:-1].min() > 0.99  # the crop sees the white middle (edges blend a little)
    assert out.min() > 0.8


def test_crop_pct_zooms_in_like_imagenet_evaluation():
    prep = Preprocessing(224, (0, 0, 0), (1, 1, 1), crop_pct=0.875)
    crop = prep.resize_crop(Image.new("RGB", (512, 384)))
    assert crop.size == (224, 224)


def test_batch_of_zero_and_two():
    prep = Preprocessing(16, (0, 0, 0), (1, 1, 1))
    assert prep.batch([]).shape == (0, 3, 16, 16)
    assert prep.batch([Image.new("RGB", (30, 20))] * 2).shape == (2, 3, 16, 16)


def _bounded_resizes(monkeypatch, limit: int) -> list[tuple[int, int]]:
    """Make Image.resize refuse (before allocating) any output over ``limit`` pixels; returns the sizes asked for."""
    asked: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def checked(self, size, *args, **kwargs):
        asked.append(tuple(size))
        assert size[0] * size[1] <= limit, f"resize to {size[0]}x{size[1]}: unbounded"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", checked)
    return asked


def test_resize_crop_of_a_thin_strip_allocates_a_bounded_image(monkeypatch):
    """Issue 14: resize_crop scaled a 50000 x 1 strip's short side up to 224 (an 11-million x 224 image, 10 GB).
    Callers that bypass the loader's shape limits still get the centre square, at the cost of a normal photo."""
    prep = Preprocessing(224, (0, 0, 0), (1, 1, 1), crop_pct=0.875)
    asked = _bounded_resizes(monkeypatch, 8 * 256 * 256)
    for size in [(50000, 1), (1, 50000), (4000, 20), (3, 900)]:
        strip = np.zeros((size[1], size[0], 3), np.uint8)
        if size[0] > size[1]:
            strip[:, size[0] // 2 - size[1]:size[0] // 2 + size[1]] = 255  # white at the centre, black elsewhere
        else:
            strip[size[1] // 2 - size[0]:size[1] // 2 + size[0]] = 255
        crop = prep.resize_crop(Image.fromarray(strip))
        assert crop.size == (224, 224)
        centre = np.asarray(crop, float)
        assert centre[100:124, 100:124].mean() > 200  # the middle of the strip, not an edge of it
    assert asked and all(w * h <= 224 * 224 for w, h in asked)


def test_resize_crop_of_ordinary_shapes_is_unchanged():
    """Photos the loader lets through (up to 8:1) are still resized whole, then cropped: the arithmetic that the phone
    page's resize.js reproduces pixel for pixel."""
    rng = np.random.default_rng(0)
    for size, crop_pct in [((640, 480), 1.0), ((100, 700), 1.0), ((1999, 1501), 0.875), ((16, 128), 1.0)]:
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        prep = Preprocessing(224, (0, 0, 0), (1, 1, 1), crop_pct=crop_pct)
        short = round(224 / crop_pct)
        scale = short / min(size)
        new = (max(224, round(size[0] * scale)), max(224, round(size[1] * scale)))
        whole = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (new[0] - 224) // 2, (new[1] - 224) // 2
        expected = whole.crop((left, top, left + 224, top + 224))
        assert np.array_equal(np.asarray(prep.resize_crop(img)), np.asarray(expected)), size
