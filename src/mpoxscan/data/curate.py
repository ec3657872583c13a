"""`mpoxscan curate`: scattered public image folders -> one homogeneous, leakage-free manifest with folds."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mpoxscan.data import fingerprint
from mpoxscan.data.duplicates import DuplicateParams, Match, clusters, find_duplicates
from mpoxscan.data.folds import assign_folds, read_official_folds, split_leaks
from mpoxscan.data.labels import LabelVote, resolve
from mpoxscan.data.manifest import ManifestRow, write_manifest
from mpoxscan.data.quality import QualityParams, rejection_reason
from mpoxscan.data.sources import Record, Source, SourceError, scan
from mpoxscan.errors import MpoxscanError


@dataclass
class CurateOptions:
    duplicates: DuplicateParams = field(default_factory=DuplicateParams)
    quality: QualityParams = field(default_factory=QualityParams)
    n_folds: int = 10
    seed: int = 0
    folds_from: Path | None = None
    export_size: int | None = None
    jobs: int | None = None
    progress: bool = True
    classes: tuple[str, ...] = ()  # the taxonomy: every kept label must be one of these (empty: any folder name)


@dataclass
class Curation:
    rows: list[ManifestRow]
    report: dict
    pairs: list[tuple[int, int, Match]]  # (representative row, duplicate row, how): for the contact sheet
    conflict_pairs: list[tuple[int, int, Match]]


def _merge_groups(raw_groups: list[str], cluster_of: np.ndarray, apart: Collection[str] = ()) -> list[str]:
    """Patients joined through shared pictures: a cluster spanning two patient ids makes them one group, named after
    its smallest id. ``apart``: ids of a source apart (data/sources.py), which name a group only when it holds no
    other: a case that copies a public photo leaves that photo's group its name, so that splits drawn by group
    (data/splits.py) are drawn as without the cases."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = sorted(set(raw_groups))
    index = {g: k for k, g in enumerate(names)}
    first_group_of_cluster: dict[int, int] = {}
    rows, cols = [], []
    for g, c in zip(raw_groups, cluster_of):
        k = index[g]
        j = first_group_of_cluster.setdefault(int(c), k)
        rows.append(j)
        cols.append(k)
    _, comp = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names),) * 2), directed=False)
    label_of_comp: dict[int, str] = {}
    apart = set(apart)
    for k in sorted(range(len(names)), key=lambda k: (names[k] in apart, names[k])):  # the smallest id, apart last
        label_of_comp.setdefault(int(comp[k]), names[k])
    return [label_of_comp[int(comp[index[g]])] for g in raw_groups]


def curate(sources: list[Source], options: CurateOptions) -> Curation:
    started = time.perf_counter()
    if len({s.name for s in sources}) != len(sources):
        raise SourceError("two sources have the same name: give each a NAME=PATH")
    records: list[Record] = [r for s in sources for r in scan(s)]
    if options.classes:
        for r in records:
            if bad := [x for x in r.fine_labels if x not in options.classes]:
                raise SourceError(f"source '{r.source}': class folder '{r.folder}' gives '{bad[0]}', which is not one of "
                                  f"the classes ({', '.join(options.classes)}): map it with --label-map")
    priority = {s.name: (s.priority, -k) for k, s in enumerate(sources)}  # higher priority, then earlier source
    site_of = {s.name: s.site_name for s in sources}
    paths = [r.path for r in records]
    embedder = None
    if options.duplicates.neighbours > 0 and len(paths) > 1:
        from mpoxscan.data.embedding import model_bytes

        embedder = model_bytes()
    prints = fingerprint.compute_all(paths, jobs=options.jobs, progress=options.progress, embedder=embedder)
    reasons = [rejection_reason(fp, options.quality) for fp in prints]
    active = [k for k, r in enumerate(reasons) if r is None]
    apart = {s.name for s in sources if s.apart}
    matches, n_candidates = find_duplicates(paths, prints, options.duplicates, active=active, progress=options.progress,
                                            jobs=options.jobs,
                                            apart=[k for k in active if records[k].source in apart])
    cluster_of = clusters(len(records), matches)
    match_of: dict[int, Match] = {}
    for m in matches:
        match_of.setdefault(m.j, m)
        match_of.setdefault(m.i, m)

    rows = [
        ManifestRow(path=str(r.path.resolve()), source=r.source, relpath=r.relpath, label=r.label, source_label=r.folder,
                    group=r.group, sha256=fp.sha256, width=fp.width, height=fp.height, status="kept",
                    ita="" if fp.ita is None else f"{fp.ita:.2f}", site=site_of[r.source])
        for r, fp in zip(records, prints)
    ]
    for k, reason in enumerate(reasons):
        if reason:
            rows[k].status, rows[k].reason = "rejected", reason

    members: dict[int, list[int]] = defaultdict(list)
    for k in active:
        members[int(cluster_of[k])].append(k)
    pairs, conflict_pairs, conflicts, overruled = [], [], [], []
    for group in (g for g in members.values() if len(g) > 1):
        votes = [LabelVote(records[k].label, records[k].fine_labels) for k in group]
        label = resolve(votes)
        if label is None:
            # Copies disagree. Where one source outranks every other source in the cluster, its label wins (MSLD
            # v2.0's authors over a re-hoster's folder name), so that the benchmark's photos keep their place; the
            # overruled labels are listed in the report. Otherwise the copies are conflicts, left out.
            top = max(priority[records[k].source][0] for k in group)
            leaders = {records[k].source for k in group if priority[records[k].source][0] == top}
            if len(leaders) == 1:
                label = resolve([v for k, v in zip(group, votes) if records[k].source in leaders])
                if label is not None:
                    overruled.append({"label": label, "files": [f"{records[k].source}/{records[k].relpath} ({records[k].label})"
                                                                for k in group]})
        if label is None:
            text = ", ".join(f"{records[k].label} ({records[k].source}/{records[k].relpath})" for k in group)
            for k in group:
                rows[k].status, rows[k].reason = "conflict", f"copies carry contradicting labels: {text}"
                rows[k].match = match_of[k].describe()
            conflicts.append({"labels": sorted({records[k].label for k in group}),
                              "files": [f"{records[k].source}/{records[k].relpath}" for k in group]})
            conflict_pairs.append((group[0], group[1], match_of[group[1]]))
            continue
        # The copy of the highest-priority source stays (MSLD v2.0's photos keep their official splits), then the
        # largest: a re-hosted larger version of a benchmark photo joins its group but does not replace it.
        rep = max(group, key=lambda k: (priority[records[k].source][0], prints[k].width * prints[k].height,
                                        priority[records[k].source][1], -k))
        rows[rep].label = label
        for k in group:
            if k != rep:
                rows[k].status, rows[k].duplicate_of = "duplicate", rows[rep].path
                rows[k].reason = f"copy of {records[rep].source}/{records[rep].relpath}"
                rows[k].match = match_of[k].describe()
                pairs.append((rep, k, match_of[k]))

    if options.classes:
        # A coarse label that no finer copy resolved (MSLD v1's "Others": chickenpox or measles) is not a class of
        # the taxonomy: such a photo cannot be trained or scored on, so it is left out, with its reason.
        for row, record in zip(rows, records):
            if row.status == "kept" and row.label not in options.classes:
                row.status = "rejected"
                row.reason = f"ambiguous label: {row.label} ({'|'.join(record.fine_labels)}), no copy says which"

    merged = _merge_groups([r.group for r in records], cluster_of, {r.group for r in records if r.source in apart})
    joined = sorted({(a, b) for a, b in zip([r.group for r in records], merged) if a != b})
    for row, g in zip(rows, merged):
        row.group = g

    kept = [k for k, row in enumerate(rows) if row.status == "kept"]
    if not kept:
        raise MpoxscanError("no image survived curation (all unreadable, rejected, duplicates or conflicts)")
    official_leaks: dict[str, list[str]] = {}
    by_source = [(s, s.folds_from) for s in sources if s.folds_from]
    if options.folds_from:  # one file for every source, matched by file name (the names must not clash)
        by_source = [(None, options.folds_from)]
    for source, folds_file in by_source:
        fold_names, official = read_official_folds(folds_file)
        mine = [k for k in kept if source is None or rows[k].source == source.name]
        names = Counter(Path(rows[k].relpath).name for k in mine)
        if clash := [n for n, c in names.items() if c > 1 and n in official]:
            raise MpoxscanError(f"--folds-from: file name {clash[0]} appears in two sources; cannot tell which it means")
        for k in mine:
            splits = official.get(Path(rows[k].relpath).name)
            rows[k].splits = ",".join(splits) if splits else ""
            rows[k].reason = "" if splits else "not in the imported folds"
        if not any(rows[k].splits for k in mine):
            raise MpoxscanError(f"folds {folds_file}: none of its file names is among the kept images")
        # Leaks of the folds as published: every listed image counts, including the copies that curation drops.
        listed = [k for k, row in enumerate(rows) if row.status != "rejected" and Path(row.relpath).name in official
                  and (source is None or row.source == source.name)]
        official_leaks = split_leaks([rows[k].group for k in listed], [official[Path(rows[k].relpath).name] for k in listed], fold_names)
    if not options.folds_from:
        # Stratified by class, and by source where there are several, so that every fold holds each source's mix.
        strata = [rows[k].label if len(sources) == 1 else f"{rows[k].label}|{rows[k].source}" for k in kept]
        folds = assign_folds(strata, [rows[k].group for k in kept], options.n_folds, options.seed)
        for k, f in zip(kept, folds):
            rows[k].fold = str(f)

    report = _report(sources, records, rows, options, matches, n_candidates, conflicts, joined, official_leaks,
                     time.perf_counter() - started)
    report["labels_overruled_by_priority"] = overruled
    return Curation(rows=rows, report=report, pairs=pairs, conflict_pairs=conflict_pairs)


def _report(sources, records, rows, options, matches, n_candidates, conflicts, joined, official_leaks, seconds) -> dict:
    before: dict[str, Counter] = defaultdict(Counter)
    after: dict[str, Counter] = defaultdict(Counter)
    for r, row in zip(records, rows):
        before[r.source][r.folder] += 1
        if row.status == "kept":
            after[r.source][row.label] += 1
    # Cross-source matches: files of one source with a copy (kept or dropped) in another source.
    index_of = {row.path: k for k, row in enumerate(rows)}
    linked = [k for k, row in enumerate(rows) if row.status in ("kept", "duplicate")]
    rep_of = {k: index_of[rows[k].duplicate_of] if rows[k].duplicate_of else k for k in linked}
    sources_of: dict[int, set[str]] = defaultdict(set)
    for k in linked:
        sources_of[rep_of[k]].add(rows[k].source)
    cross: Counter = Counter()
    for k in linked:
        for other in sorted(sources_of[rep_of[k]] - {rows[k].source}):
            cross[f"{rows[k].source} -> {other}"] += 1
    unmatched_groups = Counter(r.source for r in records if not r.group_matched)
    # Per source and class folder: what was found, kept, dropped as a copy (and of which source's photo), refused.
    table: dict[tuple[str, str], dict] = {}
    for k, (r, row) in enumerate(zip(records, rows)):
        cell = table.setdefault((r.source, r.folder), {"source": r.source, "folder": r.folder, "class": r.label,
                                                        "found": 0, "kept": 0, "copies": Counter(), "rejected": 0,
                                                        "conflict": 0})
        cell["found"] += 1
        if row.status == "kept":
            cell["kept"] += 1
        elif row.status == "duplicate":
            cell["copies"][rows[index_of[row.duplicate_of]].source] += 1
        else:
            cell[row.status] += 1
    per_source_class = [{**c, "copies": dict(sorted(c["copies"].items()))} for _, c in sorted(table.items())]
    return {
        "mpoxscan_curate_version": 1,
        "sources": [{"name": s.name, "root": str(s.root.resolve()), "group_regex": s.group_regex,
                     "label_map": {k: list(v) for k, v in s.label_map.items()}, "priority": s.priority,
                     "site": s.site_name, "folds_from": str(s.folds_from) if s.folds_from else None,
                     "files_without_group_match": unmatched_groups.get(s.name, 0)} for s in sources],
        "per_source_class": per_source_class,
        "classes": list(options.classes),
        "options": {"duplicates": asdict(options.duplicates), "quality": asdict(options.quality),
                    "folds": "from " + str(options.folds_from) if options.folds_from else options.n_folds,
                    "seed": options.seed, "export_size": options.export_size},
        "counts": {
            "files": len(rows),
            "by_status": dict(Counter(row.status for row in rows)),
            "before": {s: dict(sorted(c.items())) for s, c in before.items()},
            "kept": {s: dict(sorted(c.items())) for s, c in after.items()},
            "kept_by_label": dict(sorted(Counter(row.label for row in rows if row.status == "kept").items())),
        },
        "duplicates": {
            "candidate_pairs_verified": n_candidates,
            "pairs_by_method": dict(Counter(m.method for m in matches)),
            "files_with_a_copy_in_another_source": dict(sorted(cross.items())),
        },
        "rejected": dict(Counter(row.reason.split(":")[0] for row in rows if row.status == "rejected")),
        "conflicts": conflicts,
        "groups": {
            "final": len({row.group for row in rows if row.status == "kept"}),
            "joined_by_shared_pictures": [{"patient": a, "now_in": b} for a, b in joined],
        },
        "folds": _fold_table(rows),
        "imported_fold_leaks": official_leaks,
        "seconds": round(seconds, 2),
    }


def _fold_table(rows: list[ManifestRow]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        if row.status == "kept" and row.fold:
            table[row.fold][row.label] += 1
    return {f: dict(sorted(c.items())) for f, c in sorted(table.items(), key=lambda x: int(x[0]))}


def _export(rows: list[ManifestRow], folder: Path, size: int, progress: bool) -> None:
    """Square copies of kept images (short side resized to ``size``, centre crop), named by checksum."""
    from tqdm import tqdm

    from mpoxscan.images import load_image
    from mpoxscan.preprocess import Preprocessing

    crop = Preprocessing(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), interpolation="bicubic", crop_pct=1.0)
    kept = [row for row in rows if row.status == "kept"]
    for row in tqdm(kept, desc="export", unit="img", disable=not progress):
        rel = Path("images") / row.label / f"{row.sha256[:20]}.jpg"
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        crop.resize_crop(load_image(row.path, min_side=size)).save(target, format="JPEG", quality=95)
        row.export_path = str(rel)


def write_outputs(result: Curation, out: Path, options: CurateOptions, force: bool = False) -> Path:
    """Write manifest, reports, contact sheets (and copies) to a temporary folder, then move it into place."""
    from mpoxscan.data.report import contact_sheet, markdown_report

    out = out.resolve()
    if out.exists() and not force:
        raise MpoxscanError(f"{out} already exists: choose another --out or add --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if options.export_size:
            _export(result.rows, tmp, options.export_size, options.progress)
        write_manifest(tmp / "manifest.csv", result.rows)
        sheets = {}
        if result.pairs:
            sheets["duplicates"] = contact_sheet(result.rows, result.pairs, tmp / "duplicates.png", "Duplicate pairs: kept | dropped")
        if result.conflict_pairs:
            sheets["conflicts"] = contact_sheet(result.rows, result.conflict_pairs, tmp / "conflicts.png", "Label conflicts (both excluded)")
        result.report["contact_sheets"] = sheets
        (tmp / "report.json").write_text(json.dumps(result.report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown_report(result.report))
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
