"""Integration: curating the real MSLD v1 + v2 pool, and importing MSLD v2.0's official folds."""

from __future__ import annotations

from collections import defaultdict

import pytest

from mpoxscan.data import fingerprint
from mpoxscan.data.curate import CurateOptions, curate
from mpoxscan.data.sources import Source

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def fingerprints_once():
    """Each photo fingerprinted once for this module's curations (a fingerprint depends on the file alone): the
    curation of MSLD v2.0 alone (the session's msld2_official, first made here) reuses those of v1 + v2 (about 30 s
    on 2 cores). Curate's own logic runs in full."""
    memo: dict = {}
    compute_all = fingerprint.compute_all

    def remembered(paths, jobs=None, progress=True, embedder=None):
        key = lambda p: (str(p), embedder is not None)  # noqa: E731
        missing = [p for p in paths if key(p) not in memo]
        memo.update(zip(map(key, missing), compute_all(missing, jobs=jobs, progress=progress, embedder=embedder)))
        return [memo[key(p)] for p in paths]

    patch = pytest.MonkeyPatch()
    patch.setattr(fingerprint, "compute_all", remembered)
    yield memo
    patch.undo()

# Pairs checked by eye (contact sheets in benchmarks/results/): the same picture, although not byte-identical.
# v2 added black privacy bars, re-encoded, resized or cropped; two v2 patients are one picture under two ids.
CONFIRMED_COPIES = [
    ("msld-v1/Others/NM09_01.jpg", "msld-v2/Measles/MSL_18_01.jpg"),  # privacy bar, pHash 12
    ("msld-v1/Others/NM27_01.jpg", "msld-v2/Measles/MSL_31_01.jpg"),  # privacy bar, pHash 12
    ("msld-v1/Others/NM84_01.jpg", "msld-v2/Chickenpox/CHP_40_01.jpg"),  # large privacy bar, pHash 20: found by a quarter
    ("msld-v1/Others/NM69_01.jpg", "msld-v2/Chickenpox/CHP_27_01.jpg"),  # large privacy bar, pHash 20: found by a quarter
    ("msld-v1/Others/NM70_01.jpg", "msld-v2/Chickenpox/CHP_28_01.jpg"),
    ("msld-v1/Others/NM86_01.jpg", "msld-v2/Chickenpox/CHP_42_01.jpg"),
    ("msld-v1/Monkeypox/M52_01.jpg", "msld-v2/Monkeypox/MKP_52_01.jpg"),
    ("msld-v1/Monkeypox/M48_01.jpg", "msld-v2/Monkeypox/MKP_48_01.jpg"),
    ("msld-v2/Cowpox/CWP_02_01.jpg", "msld-v2/Cowpox/CWP_31_01.jpg"),  # crop + zoom, two patient ids
    ("msld-v2/HFMD/HFMD_117_01.jpg", "msld-v2/HFMD/HFMD_11_01.jpg"),  # crop of the toes, two patient ids
    ("msld-v1/Monkeypox/M01_04.jpg", "msld-v2/Monkeypox/MKP_01_03.jpg"),  # zoomed
]
# Close pHash neighbours that are different pictures (checked by eye): they must not be merged.
CONFIRMED_DIFFERENT = [
    ("msld-v2/HFMD/HFMD_87_01.jpg", "msld-v2/Measles/MSL_41_02.jpg"),  # pHash distance 8
    ("msld-v1/Others/NM51_01.jpg", "msld-v2/Cowpox/CWP_29_01.jpg"),  # pHash distance 12
    ("msld-v1/Monkeypox/M28_03.jpg", "msld-v2/Chickenpox/CHP_38_01.jpg"),
    ("msld-v2/Monkeypox/MKP_80_04.jpg", "msld-v2/Monkeypox/MKP_95_01.jpg"),
    ("msld-v1/Others/NM25_01.jpg", "msld-v2/Cowpox/CWP_40_03.jpg"),  # 14 chance ORB inliers, pHash 28
]


@pytest.fixture(scope="module")
def both(shared_data):
    srcs = [
        Source("msld-v2", shared_data / "msld-v2", r"^([A-Z]+_\d+)_", priority=1),
        Source("msld-v1", shared_data / "msld-v1", r"^(N?M\d+)_", {"Others": ("Chickenpox", "Measles")}),
    ]
    result = curate(srcs, CurateOptions(n_folds=10, seed=0, progress=False))
    by_name = {f"{r.source}/{r.relpath}": r for r in result.rows}
    return result, by_name


def cluster_key(by_name, name):
    r = by_name[name]
    return r.duplicate_of or r.path


def test_every_file_is_accounted_for(both):
    result, _ = both
    assert len(result.rows) == 983
    counts = result.report["counts"]["by_status"]
    assert sum(counts.values()) == 983 and counts.get("rejected", 0) == 0  # the defaults reject no real photo


def test_confirmed_copies_are_matched(both):
    _, by_name = both
    for a, b in CONFIRMED_COPIES:
        assert cluster_key(by_name, a) == cluster_key(by_name, b), (a, b)


def test_confirmed_different_pictures_are_not_matched(both):
    _, by_name = both
    for a, b in CONFIRMED_DIFFERENT:
        assert cluster_key(by_name, a) != cluster_key(by_name, b), (a, b)


def test_most_of_msld_v1_reappears_in_v2(both):
    result, _ = both
    matched = result.report["duplicates"]["files_with_a_copy_in_another_source"]["msld-v1 -> msld-v2"]
    assert matched == 202  # of 228; the matches that are not byte- or pixel-identical were checked by eye (benchmarks/)


def test_no_group_or_duplicate_cluster_spans_two_folds(both):
    result, by_name = both
    folds_of_group = defaultdict(set)
    for r in result.rows:
        if r.status == "kept":
            folds_of_group[r.group].add(r.fold)
        else:
            assert r.fold == ""
    assert all(len(f) == 1 for f in folds_of_group.values())
    kept_by_path = {r.path: r for r in result.rows if r.status == "kept"}
    for r in result.rows:
        if r.status == "duplicate":
            assert r.duplicate_of in kept_by_path  # each copy points at one kept image, in one group
            assert kept_by_path[r.duplicate_of].group == r.group
    assert {r.fold for r in kept_by_path.values()} == {str(k) for k in range(1, 11)}


def test_official_msld_v2_folds_are_imported_and_their_leaks_reported(msld2_official):
    result, _ = msld2_official
    kept = [r for r in result.rows if r.status == "kept"]
    assert all(len(r.splits.split(",")) == 5 and not r.fold for r in kept)
    leaks = result.report["imported_fold_leaks"]
    assert set(leaks) == {f"fold{k}" for k in range(1, 6)}
    # Patient-grouped by id, yet one picture filed under two patient ids straddles test and train in every fold.
    assert all(len(groups) >= 1 for groups in leaks.values())
    assert "msld-v2:CWP_02" in leaks["fold1"]
