"""Skin mask, ITA and its bins, the manifest's ita column, and the skin-tone view, on generated images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from mpoxscan.data import fingerprint
from mpoxscan.data.manifest import COLUMNS, ManifestRow, read_manifest, row_ita, write_manifest
from mpoxscan.data.skin import ita, ita_bin, ita_bins, retone, skin_mask

LIGHT, DARK = (236, 200, 180), (92, 58, 42)  # sRGB of light and dark skin (ITA about 60 and -50 degrees)


def patch(rgb: tuple[int, int, int], size: int = 96, lesions: bool = False, seed: int = 0) -> Image.Image:
    """A skin patch with pixel noise; ``lesions`` paints red papules over about a fifth of it."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, float) + rng.normal(0, 4, (size, size, 3)), 0, 255)
    if lesions:
        for _ in range(12):
            y, x = rng.integers(8, size - 8, 2)
            arr[y - 5:y + 5, x - 5:x + 5] = (200, 40, 50)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def test_light_and_dark_skin_get_the_right_order_and_bins():
    light, dark = ita(patch(LIGHT)), ita(patch(DARK))
    assert light > 55 and ita_bin(light) == "very light"
    assert dark < -30 and ita_bin(dark) == "dark"


def test_the_mask_keeps_dark_skin_and_drops_blue_and_green():
    assert skin_mask(np.asarray(patch(DARK))).mean() > 0.95
    assert skin_mask(np.asarray(patch((40, 60, 200)))).mean() == 0
    assert skin_mask(np.asarray(patch((60, 180, 60)))).mean() == 0


def test_too_little_skin_gives_none():
    assert ita(patch((40, 60, 200))) is None
    arr = np.asarray(patch((40, 60, 200))).copy()
    arr[:10, :10] = LIGHT  # 1 % of the picture
    assert ita(arr) is None


def test_lesions_barely_move_the_tone():
    for colour in (LIGHT, DARK):
        assert abs(ita(patch(colour, lesions=True)) - ita(patch(colour))) < 5


@pytest.mark.parametrize("value,name", [(70, "very light"), (55.0, "light"), (41.0, "intermediate"), (30, "intermediate"),
                                        (28.0, "tan"), (0, "brown"), (-30.0, "dark"), (-60, "dark"), (None, None)])
def test_bins_follow_del_bino(value, name):
    assert ita_bin(value) == name


def test_retone_moves_skin_towards_the_target_and_leaves_no_skin_alone():
    light = patch(LIGHT)
    darker = ita(retone(light, -40))
    assert darker < ita(light) - 40
    assert ita(retone(patch(DARK), 60)) > ita(patch(DARK)) + 40
    blue = patch((40, 60, 200))
    assert retone(blue, -40) is blue


def test_fingerprint_records_ita(tmp_path):
    patch(DARK).save(tmp_path / "dark.png")
    patch((40, 60, 200)).save(tmp_path / "blue.png")
    assert fingerprint.compute(tmp_path / "dark.png").ita < -30
    assert fingerprint.compute(tmp_path / "blue.png").ita is None


def test_manifest_round_trips_ita_and_reads_older_files(tmp_path):
    rows = [ManifestRow(path="/a.jpg", source="s", relpath="a.jpg", label="X", source_label="X", group="g", sha256="0",
                        width=1, height=1, status="kept", ita="-41.25"),
            ManifestRow(path="/b.jpg", source="s", relpath="b.jpg", label="X", source_label="X", group="g", sha256="1",
                        width=1, height=1, status="kept")]
    write_manifest(tmp_path / "manifest.csv", rows)
    back = read_manifest(tmp_path)
    assert [row_ita(r) for r in back] == [-41.25, None]
    old = [c for c in COLUMNS if c != "ita"]
    with open(tmp_path / "old.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerow(vars(rows[0]))
    (row,) = read_manifest(tmp_path / "old.csv")
    assert row.ita == "" and row_ita(row) is None and row.width == 1


def test_ita_bins_bins_an_array_as_ita_bin_bins_each_value():
    values = np.array([np.nan, 80.0, 55.0, 55.0001, 41.0, 28.0, 10.0, -30.0, -29.9, -75.0, 0.0])
    assert ita_bins(values).tolist() == [ita_bin(None if np.isnan(v) else float(v)) for v in values]
    assert ita_bins(values)[2] == "light" and ita_bins(values)[0] is None  # bounds belong to the bin below
