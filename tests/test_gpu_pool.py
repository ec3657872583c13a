"""The pool's GPU path (issue 26, item 6), here on tiny generated photos: what `benchmarks/gpu/prepare.py --pool`
carries, and how `benchmarks/gpu/evaluate.py` turns several seeds into tasks and runs. The training itself is the
cv code that the other tests cover; the whole path on the real pool runs with `--preset pool-smoke`
(benchmarks/gpu/README.md)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpoxscan.data.manifest import ManifestRow, kept_rows, write_manifest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
import evaluate  # noqa: E402
import prepare  # noqa: E402


@pytest.fixture
def pool_manifest(tmp_path) -> Path:
    """Three sites with two classes each, photos of odd shapes and formats; one duplicate row (not kept)."""
    from conftest import make_photo

    rows = []
    for s, site in enumerate(("alpha", "beta", "gamma")):
        for k in range(8):
            label = "Monkeypox" if k % 2 else "Healthy"
            ext = ".png" if k % 3 == 0 else ".jpg"
            path = tmp_path / "data" / site / label / f"{k}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_photo(100 * s + k, size=(90 + 13 * k, 60 + 7 * k)).save(path)
            rows.append(ManifestRow(str(path), site, f"{label}/{k}{ext}", label, label, f"{site}:{k}", f"{s}{k:063d}",
                                    90 + 13 * k, 60 + 7 * k, "kept", fold=str(1 + k % 2), site=site))
    rows.append(replace(rows[0], status="duplicate", duplicate_of=rows[1].path, fold=""))
    manifest = tmp_path / "curated" / "manifest.csv"
    manifest.parent.mkdir()
    write_manifest(manifest, rows)
    return manifest


def test_prepare_pool_carries_each_kept_photo_as_the_square_training_decodes(pool_manifest, tmp_path, monkeypatch):
    from mpoxscan.images import load_image
    from mpoxscan.training.features import preprocessing_for

    monkeypatch.setattr(prepare, "TARGET", tmp_path / ".gpu")
    carried = prepare._pool(pool_manifest, 48, 95)
    before, after = kept_rows(pool_manifest), kept_rows(carried)
    assert len(after) == len(before) == 24  # the duplicate row is not carried
    prep = preprocessing_for("efficientnet_lite0", 48)
    for old, new in zip(before, after):
        # Same photo by identity (checksum, source, path in its source, group, site, fold), new file.
        assert (new.sha256, new.source, new.relpath, new.group, new.site, new.fold, new.label) == \
               (old.sha256, old.source, old.relpath, old.group, old.site, old.fold, old.label)
        assert new.path.endswith(f"{old.source}/{old.relpath}.jpg") and Path(new.path).is_file()
        with Image.open(new.path) as im:
            assert im.format == "JPEG" and im.size == (48, 48)
            carried_px = np.asarray(im.convert("RGB"), np.float32)
        expected = np.asarray(prep.resize_crop(load_image(old.path, min_side=48)).convert("RGB"), np.float32)
        assert np.abs(carried_px - expected).mean() < 6  # the square screening decodes, up to JPEG at quality 95


def test_evaluate_trains_each_fold_once_per_seed_seed_by_seed(pool_manifest, monkeypatch):
    monkeypatch.setattr(evaluate, "POOL", pool_manifest)
    settings = replace(evaluate.PRESETS["pool"], seeds=(0, 1, 2))
    tasks = evaluate._tasks(settings)
    # Seed by seed: a budget that stops early leaves whole seeds.
    assert tasks == [("loso", site, seed) for seed in (0, 1, 2) for site in ("alpha", "beta", "gamma")]
    assert [settings.run_key("loso", s) for s in (0, 2)] == ["loso-seed0", "loso-seed2"]
    assert settings.task_name("loso", "beta", 1) == "loso:beta:seed1"
    # Each site out leaves the other two sites' 16 photos, 80 % of them to fit (whole groups): the time estimate
    # scales with them.
    assert 10 <= evaluate._mean_train_photos(settings, tasks) <= 14
    one = replace(settings, seeds=(), seed=4, folds=("beta",), protocols=("kfold", "loso"))
    assert evaluate._tasks(one) == [("loso", "beta", 4)]  # no k-fold fold is named beta
    assert one.run_key("loso", 4) == "loso" and one.task_name("loso", "beta", 4) == "loso:beta"


def test_evaluate_time_estimate_scales_with_training_photos():
    msld = evaluate.Settings()
    assert msld.first_task_s() == pytest.approx(190.0)  # as measured: 40 epochs of MSLD's official training side
    pool = replace(msld, train_photos=2 * evaluate.MEASURED_TRAIN_PHOTOS, epochs=20)
    assert pool.first_task_s() == pytest.approx(190.0)  # twice the photos for half the epochs: as many steps


def test_evaluate_refuses_bad_seeds_and_unknown_protocols(monkeypatch, tmp_path, capsys):
    for argv, says in ((["--preset", "pool", "--seeds", "1,x"], "--seeds takes whole numbers"),
                       (["--preset", "pool", "--seeds", ","], "--seeds names no seed"),
                       (["--preset", "gpu", "--protocols", "loso"], "unknown protocol(s) ['loso']"),
                       (["--preset", "pool", "--protocols", "loso,cross"], "unknown protocol(s) ['cross']")):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", "--out", str(tmp_path / "out"), *argv])
        with pytest.raises(SystemExit) as exc:
            evaluate.main()
        assert says in str(exc.value)
