"""Measure `mpoxscan curate --pool public` on the six public sources of ../shared/data: time, memory, and what it found.

Writes benchmarks/results/curate.json and curate.md (quoted by the docs), plus a contact sheet to check by eye
(not committed: it holds dataset pictures): curate_cross_source.png, the altered cross-source matches (copies that
are not the same file), hardest first. Recall and false matches on altered copies: benchmarks/dedup_bench.py.

    PYTHONPATH=src .venv/bin/python benchmarks/curate_bench.py [--data ../shared/data]

The time is end to end as `mpoxscan curate` spends it (the MobileNetV2 export, fingerprints in 2 processes, the
candidate search, verification in 2 processes, groups, folds, report); the machine's load average before and after
is recorded, because on this shared 2-core machine other work slows it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

from mpoxscan.data.curate import CurateOptions, curate
from mpoxscan.data.report import contact_sheet
from mpoxscan.data.sources import load_pool, pool_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    sources, classes = load_pool(pool_path("public"), args.data.resolve())
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = curate(sources, CurateOptions(n_folds=5, seed=0, progress=False, classes=classes))
    seconds = time.perf_counter() - started
    rows, report = result.rows, result.report
    cross = [(a, b, m) for a, b, m in result.pairs if rows[a].source != rows[b].source]
    altered = [(a, b, m) for a, b, m in cross if m.method != "identical"]
    contact_sheet(rows, altered, RESULTS / "curate_cross_source.png", "Cross-source copies that are not the same file",
                  limit=60, columns=4)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "files": len(rows), "seconds_end_to_end": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "by_status": report["counts"]["by_status"], "kept_by_label": report["counts"]["kept_by_label"],
        "candidate_pairs_verified": report["duplicates"]["candidate_pairs_verified"],
        "matches_by_method": report["duplicates"]["pairs_by_method"],
        "cross_source_pairs": len(cross), "cross_source_pairs_altered": len(altered),
        "cross_source_altered_by_method": dict(Counter(m.method for _, _, m in altered)),
        "files_with_a_copy_in_another_source": report["duplicates"]["files_with_a_copy_in_another_source"],
        "labels_overruled_by_priority": len(report["labels_overruled_by_priority"]),
        "conflicts": len(report["conflicts"]),
        "groups_joined": len(report["groups"]["joined_by_shared_pictures"]),
        "per_source_class": report["per_source_class"],
    }
    (RESULTS / "curate.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "curate.md").write_text(markdown(summary))
    print(markdown(summary))


def markdown(s: dict) -> str:
    lines = [
        "# Curate benchmark: the public pool (benchmarks/curate_bench.py)", "",
        f"Machine: {s['machine']}; load average {s['load_average_before_after'][0]} before, "
        f"{s['load_average_before_after'][1]} after.", "",
        "| figure | value |", "|---|---|",
        f"| files (six sources) | {s['files']} |",
        f"| end-to-end time (`curate --pool public`) | **{s['seconds_end_to_end']} s** |",
        f"| peak memory | {s['peak_rss_mb']} MB |",
        "| files by status | " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())) + " |",
        "| kept, by class | " + ", ".join(f"{k} {v}" for k, v in s["kept_by_label"].items()) + " |",
        f"| candidate pairs verified | {s['candidate_pairs_verified']} |",
        "| matches by method | " + ", ".join(f"{k} {v}" for k, v in s["matches_by_method"].items()) + " |",
        f"| cross-source copy pairs (not the same file) | {s['cross_source_pairs']} ({s['cross_source_pairs_altered']}): "
        + ", ".join(f"{k} {v}" for k, v in s["cross_source_altered_by_method"].items()) + " |",
        f"| contradicting labels settled by a higher-priority source / left out as conflicts | "
        f"{s['labels_overruled_by_priority']} / {s['conflicts']} |",
        f"| leakage groups joined through shared pictures | {s['groups_joined']} |",
        "", "Files of one source with a copy in another:", "", "| files of | with a copy in | files |", "|---|---|---|"]
    lines += [f"| {k.split(' -> ')[0]} | {k.split(' -> ')[1]} | {v} |" for k, v in s["files_with_a_copy_in_another_source"].items()]
    lines += ["", "Per source and class folder:", "",
              "| source | folder | class | found | kept | copies (of a photo kept from) | rejected | conflicts |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['source']} | {c['folder']} | {c['class']} | {c['found']} | {c['kept']} | "
              + (", ".join(f"{n} of {src}" for src, n in c["copies"].items()) or "-") + f" | {c['rejected']} | {c['conflict']} |"
              for c in s["per_source_class"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
