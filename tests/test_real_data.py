"""Integration: the loader opens every real image of ../shared/data the same way (upright RGB)."""

from __future__ import annotations

import pytest

from mpoxscan.images import load_image

pytestmark = pytest.mark.integration


def test_every_real_image_loads_as_rgb(shared_data):
    paths = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and "_meta" not in p.parts)
    assert len(paths) >= 983  # 228 in MSLD v1 + 755 in MSLD v2.0
    sizes = []
    for path in paths:
        img = load_image(path)
        assert img.mode == "RGB"
        sizes.append(min(img.size))
    assert min(sizes) >= 64  # the smallest real photo is 69 px on its short side (data README)
