"""Issue 30, part 4: retraining the bundled recipe with expert-labelled cases (`make model CASES=DIR`).

The training itself is the recipe's (tests/test_cv.py, tests/test_deploy.py); these check what is new: the cases'
own held-out split, the export check, the card's counts and the paired comparison that decides whether a candidate
replaces the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photo
from mpoxscan.data.curate import CurateOptions, curate
from mpoxscan.data.manifest import ManifestRow, write_manifest
from mpoxscan.data.sources import EXPERT_GROUP, Source
from mpoxscan.data.splits import inner_split, training_split
from mpoxscan.deploy import bundle
from mpoxscan.evaluation.metrics import mcnemar


def _row(k: int, label: str, group: str, source: str = "pub") -> ManifestRow:
    return ManifestRow(path=f"/x/{source}/{k}.jpg", source=source, relpath=f"{label}/{k}.jpg", label=label,
                       source_label=label, group=f"{source}:{group}", sha256=f"{source}{k:060d}", width=64,
                       height=64, status="kept")


def _pool(n: int = 60) -> list[ManifestRow]:
    return [_row(k, ["Monkeypox", "Chickenpox", "Acne"][k % 3], f"p{k // 2}") for k in range(n)]


def test_added_sources_leave_the_other_rows_split_as_without_them():
    pool = _pool()
    alone = inner_split(pool, 0)
    cases = [_row(100 + k, ["Monkeypox", "Chickenpox"][k % 2], f"c{k}", "expert") for k in range(20)]
    both = pool + cases
    split = inner_split(both, 0, apart=("expert",))
    assert [k for k in split.valid if k < len(pool)] == alone.valid
    assert [k for k in split.train if k < len(pool)] == alone.train
    added_valid = [k for k in split.valid if k >= len(pool)]
    assert 0 < len(added_valid) < len(cases)  # the cases are split too, about a fifth held out
    assert sorted(split.train + split.valid) == list(range(len(both)))
    # without ``apart`` the same rows are split afresh: the pool's held-out photos change
    assert [k for k in inner_split(both, 0).valid if k < len(pool)] != alone.valid


def test_an_added_row_follows_the_group_it_joined_and_few_cases_all_fit():
    pool = _pool()
    alone = inner_split(pool, 0)
    held_group = pool[alone.valid[0]].group
    joined = _row(200, "Monkeypox", "x", "expert")
    joined.group = held_group  # a case photo grouped with a held-out public photo (curate joined them)
    few = [_row(300 + k, "Acne", f"c{k}", "expert") for k in range(3)]
    split = inner_split(pool + [joined] + few, 0, apart=("expert",))
    assert len(pool) in split.valid  # with its group, never on the other side
    assert all(len(pool) + 1 + k in split.train for k in range(3))  # 3 case groups: too few to split, all fit
    assert training_split(pool + [joined] + few, {"seed": 0, "split_apart": ["expert"]}).valid == split.valid
    assert training_split(pool, {"seed": 0}).valid == alone.valid


def test_the_expert_group_regex_is_the_exports():
    from mpoxscan.web.training_export import GROUP_REGEX

    assert EXPERT_GROUP == GROUP_REGEX


def test_mcnemar_counts_the_discordant_photos_and_says_which_way():
    a = np.array([True] * 10 + [False] * 12 + [True] * 2)
    b = np.array([True] * 10 + [True] * 12 + [False] * 2)
    got = mcnemar(a, b)
    assert (got["only_first"], got["only_second"]) == (2, 12)
    assert got["p_first_worse"] < 0.01 < got["p_value"] * 10  # 2 vs 12: a clearly worse, two-sided p about 0.013
    assert mcnemar(b, a)["p_first_worse"] > 0.99
    assert mcnemar(a, a) == {"only_first": 0, "only_second": 0, "p_value": 1.0, "p_first_worse": 1.0}


def _answers(labels, classes, right: np.ndarray, flag: np.ndarray):
    """Probabilities that put the true class first where ``right`` and mpox above 0.5 where ``flag``."""
    p = np.full((len(labels), len(classes)), 0.1)
    for k, label in enumerate(labels):
        wrong = next(c for c in classes if c not in (label, "Monkeypox"))
        p[k, classes.index(label if right[k] else wrong)] = 0.7  # above a flagged 0.6: flagged, still right
        p[k, classes.index("Monkeypox")] = 0.6 if flag[k] else 0.05
        if label == "Monkeypox" and right[k] and not flag[k]:
            p[k, classes.index("Monkeypox")] = 0.45  # first, under the threshold
    return p


def test_a_candidate_that_flags_more_look_alikes_is_worse_and_one_that_equals_is_not():
    classes = ["Acne", "Chickenpox", "Monkeypox"]
    labels = ["Monkeypox"] * 40 + ["Chickenpox"] * 60
    right = np.array([True] * 100)
    mpox_flags = np.array([True] * 40 + [False] * 60)
    shipped = (classes, _answers(labels, classes, right, mpox_flags), 0.5)
    more = mpox_flags.copy()
    more[40:60] = True  # 20 more chickenpox photos flagged
    worse = bundle.compare_models(labels, "Monkeypox", (classes, _answers(labels, classes, right, more), 0.5), shipped)
    assert worse["look_alikes_flagged"]["candidate"] == pytest.approx(20 / 60)
    assert worse["look_alikes_flagged"]["shipped"] == 0
    assert worse["worse"] == ["look_alikes_flagged"]
    same = bundle.compare_models(labels, "Monkeypox", shipped, shipped)
    assert same["worse"] == [] and same["accuracy"]["candidate"] == same["accuracy"]["shipped"]
    fewer = mpox_flags.copy()
    fewer[:15] = False  # 15 mpox photos missed
    missed = bundle.compare_models(labels, "Monkeypox", (classes, _answers(labels, classes, right, fewer), 0.5), shipped)
    assert "mpox_flagged" in missed["worse"] and missed["mpox_flagged"]["candidate"] == pytest.approx(25 / 40)


def _export(folder, photos: dict[str, int], state: str = "complete", seed: int = 0):
    (folder / "_meta").mkdir(parents=True)
    lines = []
    k = seed
    for label, n in photos.items():
        (folder / label).mkdir()
        for _ in range(n):
            case = f"{k:020x}"
            make_photo(1000 + k).save(folder / label / f"case-{case}_1.jpg", quality=92)
            lines.append(json.dumps({"case": case, "label": label, "confirmed": k % 2 == 0}))
            k += 1
    (folder / "_meta" / "cases.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "_meta" / "export.json").write_text(json.dumps({"format": bundle.EXPORT_FORMAT, "state": state}))
    return folder


def test_only_a_complete_export_is_taken(tmp_path):
    with pytest.raises(SystemExit, match="not a folder written by `mpoxscan cases export`"):
        bundle.check_export(tmp_path)
    half = _export(tmp_path / "half", {"Monkeypox": 1}, state="writing")
    with pytest.raises(SystemExit, match="in state 'writing'"):
        bundle.check_export(half)
    assert bundle.check_export(_export(tmp_path / "ok", {"Monkeypox": 1})) == (tmp_path / "ok").resolve()


def test_the_card_counts_the_cases_curate_kept(tmp_path):
    public = tmp_path / "public"
    for label, seeds in {"Monkeypox": (1, 2, 3), "Acne": (4, 5, 6)}.items():
        (public / label).mkdir(parents=True)
        for s in seeds:
            make_photo(s).save(public / label / f"{s}.jpg", quality=92)
    export = _export(tmp_path / "export", {"Monkeypox": 3, "Acne": 2})
    make_photo(4).save(export / "Acne" / "case-0000000000000000000a_1.jpg", quality=92)  # a copy of public Acne/4
    with open(export / "_meta" / "cases.jsonl", "a") as fh:
        fh.write(json.dumps({"case": "0000000000000000000a", "label": "Acne", "confirmed": True}) + "\n")
    sources = [Source("pub", public, priority=1),
               Source(bundle.CASES_SOURCE, bundle.check_export(export), EXPERT_GROUP, priority=0)]
    result = curate(sources, CurateOptions(n_folds=2, seed=0, progress=False, jobs=1,
                                           classes=("Acne", "Monkeypox")))
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, result.rows)
    got = bundle.expert_case_counts(manifest, export)
    assert got["photos"] == 5 and got["cases"] == 5  # the copy of a public photo is dropped, the public one kept
    assert got["per_class"] == {"Acne": 2, "Monkeypox": 3}
    assert got["dropped"] == {"duplicate": 1}
    assert got["confirmed_cases"] == 3  # cases 0, 2 and 4 of the five kept (the confirmed copy was dropped)
    kept = [r for r in result.rows if r.status == "kept"]
    assert bundle.rows_differ(manifest, ignore=(bundle.CASES_SOURCE,)) != ""  # not the measured pool: said so
    assert {r.group.split(":")[0] for r in kept if r.source == bundle.CASES_SOURCE} == {bundle.CASES_SOURCE}


def test_the_measured_pool_plus_cases_passes_the_pool_check_and_is_told_apart_without_ignore(tmp_path):
    import csv

    with open(bundle.POOL_RESULTS / bundle.POOL_RUNS["kfold"] / "oof_predictions.csv", newline="") as fh:
        measured = [r for r in csv.DictReader(fh) if r["variant"] == "main"]
    rows = [ManifestRow(path=r["image"], source="pub", relpath=r["image"], label=r["label"], source_label=r["label"],
                        group=r["group"], sha256=r["sha256"], width=1, height=1, status="kept") for r in measured]
    rows += [_row(k, "Monkeypox", f"c{k}", bundle.CASES_SOURCE) for k in range(3)]
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    assert bundle.rows_differ(manifest, ignore=(bundle.CASES_SOURCE,)) == ""
    assert bundle.rows_differ(manifest) == "3 photos here not in the run, 0 in the run not here"
    rows[0].label = "Acne" if rows[0].label != "Acne" else "Healthy"  # a relabelled public photo is still caught
    write_manifest(manifest, rows)
    assert bundle.rows_differ(manifest, ignore=(bundle.CASES_SOURCE,)) != ""


def test_the_expert_curves_test_photos_share_no_group_with_a_case_or_another_source(tmp_path):
    """expert_curve_bench.step_manifest: a held-out photo grouped with an exported case (or a kept photo of another
    source) leaves the test set; cases not chosen for the step leave training; the rest train."""
    import importlib.util

    from mpoxscan.data.manifest import read_manifest

    spec = importlib.util.spec_from_file_location("expert_curve_bench",
                                                  Path(__file__).resolve().parents[1] / "benchmarks/expert_curve_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(name, source, group, site=""):
        return ManifestRow(path=f"/x/{name}", source=source, relpath=f"Monkeypox/{name}", label="Monkeypox",
                           source_label="Monkeypox", group=group, sha256=name, width=1, height=1, status="kept",
                           site=site)

    rows = [row("a.jpg", "viral-rash", "v:a"), row("b.jpg", "viral-rash", "v:b"), row("c.jpg", "viral-rash", "v:c"),
            row(f"case-{'1' * 20}_1.jpg", "cases", "v:b"), row(f"case-{'2' * 20}_1.jpg", "cases", "cases:2"),
            row("m.jpg", "msld2", "v:c", site="msld"), row("n.jpg", "msld2", "msld:n", site="msld")]
    n_train, n_test = bench.step_manifest(rows, {"2" * 20}, "viral-rash", tmp_path / "m.csv")
    fold = {r.relpath.split("/")[1]: (r.fold, r.status) for r in read_manifest(tmp_path / "m.csv")}
    assert fold["a.jpg"] == ("1", "kept") and n_test == 1  # alone: tested
    assert fold["b.jpg"][0] != "1" and fold["c.jpg"][0] != "1"  # grouped with a case / another source: not tested
    assert fold[f"case-{'2' * 20}_1.jpg"] == ("2", "kept")  # a chosen case trains
    assert fold[f"case-{'1' * 20}_1.jpg"][1] == "rejected"  # a case not chosen for this step does not
    assert fold["m.jpg"] == ("2", "kept") and fold["n.jpg"] == ("2", "kept") and n_train == 3
