"""Shared fixtures: tiny generated images for unit tests, and the location of the real data sets."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The real data sets lie in ../shared/data beside the checkout (as in CI); MPOXSCAN_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("MPOXSCAN_DATA", REPO.parent / "shared" / "data"))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def photo() -> Image.Image:
    """A small non-symmetric RGB picture: a red square in the top-left corner of a gradient."""
    rng = np.random.default_rng(0)
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[..., 1] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    arr[..., 2] = rng.integers(0, 60, size=(48, 64), dtype=np.uint8)
    arr[:12, :12] = (255, 0, 0)
    return Image.fromarray(arr, "RGB")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real image sets. Integration tests fail (not skip) without them: CI always has them beside the checkout."""
    if not (SHARED_DATA / "msld-v2").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: the integration tests need ../shared/data (or MPOXSCAN_DATA)")
    return SHARED_DATA
