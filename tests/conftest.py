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
def artefacts() -> Path:
    """Where tests leave files for people to look at (screenshots): test-artefacts/ in the checkout (git ignores it),
    or MPOXSCAN_ARTEFACTS."""
    folder = Path(os.environ.get("MPOXSCAN_ARTEFACTS", REPO / "test-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real image sets. Integration tests fail (not skip) without them: CI always has them beside the checkout."""
    if not (SHARED_DATA / "msld-v2").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: the integration tests need ../shared/data (or MPOXSCAN_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def msld2_official(shared_data):
    """MSLD v2.0 curated once with its official five splits, (curation, options), for every test that reads it
    (curating takes about 40 s on 2 cores). Tests must not change it."""
    from mpoxscan.data.curate import CurateOptions, curate
    from mpoxscan.data.sources import Source

    options = CurateOptions(folds_from=shared_data / "msld-v2" / "_meta" / "folds.csv", progress=False)
    return curate([Source("msld-v2", shared_data / "msld-v2", r"^([A-Z]+_\d+)_")], options), options


def make_photo(seed: int, size: tuple[int, int] = (160, 128)) -> Image.Image:
    """A synthetic 'skin photo': a smooth colour field, fine grain and a few lesion-like blobs, all from ``seed``."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(90, 230, size=(6, 8, 3), dtype=np.uint8)
    base = Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 12, size=(h, w, 3))
    img = Image.fromarray(np.clip(np.asarray(base, np.float32) + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(9):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(4, 14))
        colour = tuple(int(c) for c in rng.integers(40, 200, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(30, 20, 20))
    return img.filter(ImageFilter.SMOOTH)


#: The tiny two-class training set: the class is the colour of a square on a textured background.
SQUARE_CLASSES = {"Monkeypox": (200, 40, 40), "Healthy": (40, 40, 200)}


def square_photo(colour, seed: int) -> Image.Image:
    """A textured background with a coloured square: the class is the square's colour."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    # Grey grain in 4-pixel cells, unique to each seed, under a fine colour grain: with only the fine grain, two
    # squares are the same picture at the scales de-duplication compares, and curate would rightly join them as
    # copies. Grey, so that the square's colour stays the only colour cue.
    cells = np.kron(rng.integers(90, 170, size=(24, 24, 1)), np.ones((4, 4, 1), dtype=np.int64))
    img = Image.fromarray(np.clip(cells + rng.integers(-10, 10, size=(96, 96, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x, y = rng.integers(10, 40, 2)
    draw.rectangle((int(x), int(y), int(x) + 40, int(y) + 40), fill=colour)
    return img


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    """One new square photo per class (JPEG, not in the training set): {class: path}."""
    paths = {}
    for k, (label, colour) in enumerate(SQUARE_CLASSES.items()):
        paths[label] = tmp_path / f"{label}.jpg"
        square_photo(colour, 500 + k).save(paths[label], quality=95)
    return paths


@pytest.fixture(scope="session")
def squares_manifest(tmp_path_factory) -> Path:
    """A curated manifest of 40 square photos (10 patients x 2 shots per class, 4 folds)."""
    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.sources import Source

    root = tmp_path_factory.mktemp("squares")
    seed = 0
    for label, colour in SQUARE_CLASSES.items():
        for patient in range(10):
            for shot in range(2):
                seed += 1
                path = root / "src" / label / f"P{label[0]}{patient}_{shot}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                square_photo(colour, seed).save(path)
    options = CurateOptions(n_folds=4, seed=0, progress=False, jobs=1)
    result = curate([Source("sq", root / "src", r"^(P\w\d+)_")], options)
    return write_outputs(result, root / "curated", options) / "manifest.csv"


@pytest.fixture(scope="session")
def checkpoint(squares_manifest, tmp_path_factory) -> Path:
    """A linear-probe MobileNetV2 checkpoint trained on the squares."""
    from mpoxscan.training.train import train

    out = tmp_path_factory.mktemp("ckpt")
    train(squares_manifest, "mobilenetv2_100", "linear", out, views=1, cache=out / "cache")
    return out / "model.pt"


@pytest.fixture(scope="session")
def exported(checkpoint, squares_manifest, tmp_path_factory) -> Path:
    """Its fp32, fp16 and int8 ONNX files."""
    from mpoxscan.deploy.export import export
    from mpoxscan.deploy.fidelity import Gate

    out = tmp_path_factory.mktemp("export")
    # The gate is loosened here: 8 held-out squares are too few to demand 99 % agreement; the gate itself is
    # tested in test_deploy.py, and the real models are gated at the defaults (benchmarks, bundled model).
    export(checkpoint, out, ["fp32", "fp16", "int8"], squares_manifest, Gate(0.5, 50), n_calibration=8, n_selection=8,
           log=lambda m: None)
    return out


def chromium(profile: Path, window: str | None = None, extra_args: tuple[str, ...] = ()):
    """A headless Debian Chromium driven by Selenium, or a skip (a failure under MPOXSCAN_REQUIRE_BROWSER, as in CI)."""
    from mpoxscan.web.testing import chromium_available, headless_chromium

    if not chromium_available():
        message = "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("MPOXSCAN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return headless_chromium(profile, window, extra_args)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh, empty database URL: SQLite in a temporary folder, or a new database on the PostgreSQL server named by
    MPOXSCAN_TEST_POSTGRES (.ci/run starts one). Without it the PostgreSQL half is skipped (a failure in CI)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cases.sqlite3'}"
        return
    admin_url = os.environ.get("MPOXSCAN_TEST_POSTGRES")
    if not admin_url:
        message = "needs a PostgreSQL server: MPOXSCAN_TEST_POSTGRES=postgresql+psycopg://... (.ci/run starts one)"
        if os.environ.get("MPOXSCAN_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"mpoxscan_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wide_gamut_icc() -> bytes:
    """A minimal ICC v2 RGB display profile with Display P3's primaries and a gamma-2.2 curve (written out here:
    Pillow's ImageCms creates sRGB, LAB and XYZ profiles only), for photos tagged with another colour space than
    sRGB, as phones tag theirs."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    name = b"wide gamut (test)\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(8) + bytes(3) + bytes(67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    tags = [(b"desc", desc), (b"cprt", b"text" + bytes(4) + b"none\0"), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)), (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
            (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + b"APPL" + bytes(24) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"lcms" + bytes(44))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
