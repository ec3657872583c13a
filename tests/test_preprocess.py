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
