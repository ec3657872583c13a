"""Human-readable curation outputs: the Markdown report and contact sheets of matched pairs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from mpoxscan.data.duplicates import Match
from mpoxscan.data.manifest import ManifestRow
from mpoxscan.errors import ImageError
from mpoxscan.images import load_image

THUMB = 150
CAPTION = 30


def _order(rows: list[ManifestRow], pairs: list[tuple[int, int, Match]]) -> list[tuple[int, int, Match]]:
    """Hardest matches first (so a person checks those): keypoint matches, then by pHash distance; identical last."""
    order = {"keypoints": 0, "aligned": 1, "identical": 2}
    return sorted(pairs, key=lambda p: (order[p[2].method], -p[2].phash_distance, rows[p[0]].source == rows[p[1]].source, p[0]))


def contact_sheet(rows: list[ManifestRow], pairs: list[tuple[int, int, Match]], path: Path, title: str,
                  limit: int = 30, columns: int = 3) -> str:
    """A PNG of up to ``limit`` pairs side by side, captioned, so a person can check the matches by eye."""
    chosen = _order(rows, pairs)[:limit]
    cell_w, cell_h = 2 * THUMB + 20, THUMB + CAPTION
    n_rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, 24 + n_rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 6), f"{title} ({len(chosen)} of {len(pairs)} pairs)", fill="black")
    for n, (a, b, how) in enumerate(chosen):
        x, y = (n % columns) * cell_w, 24 + (n // columns) * cell_h
        for side, k in enumerate((a, b)):
            try:
                thumb = load_image(rows[k].path, min_side=THUMB)
                thumb.thumbnail((THUMB, THUMB))
            except ImageError:
                thumb = Image.new("RGB", (THUMB, THUMB), "gray")
            sheet.paste(thumb, (x + side * THUMB, y))
        draw.text((x, y + THUMB + 2), f"{rows[a].source}/{Path(rows[a].relpath).name} | {rows[b].source}/{Path(rows[b].relpath).name}", fill="black")
        draw.text((x, y + THUMB + 14), how.describe(), fill="darkred")
    sheet.save(path)
    return path.name


def _table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    counts = report["counts"]
    out = ["# Curation report", ""]
    out.append(f"{counts['files']} files from {len(report['sources'])} source(s) in {report['seconds']} s: "
               + ", ".join(f"{v} {k}" for k, v in sorted(counts["by_status"].items())) + ".")
    out += ["", "## Sources", "", _table(
        ["source", "folder", "group regex", "label map", "priority", "files whose name the regex did not match"],
        [[s["name"], s["root"], f"`{s['group_regex']}`" if s["group_regex"] else "(each file its own group)",
          ", ".join(f"{k}={'|'.join(v)}" for k, v in s["label_map"].items()) or "-", s["priority"],
          s["files_without_group_match"]] for s in report["sources"]])]
    out += ["", "## Images per source and class", ""]
    if "per_source_class" in report:
        body = [[c["source"], c["folder"], c["class"], c["found"], c["kept"],
                 ", ".join(f"{n} of {src}" for src, n in c["copies"].items()) or "-", c["rejected"], c["conflict"]]
                for c in report["per_source_class"]]
        out.append(_table(["source", "folder", "class", "found", "kept", "copies (of a photo kept from)", "rejected",
                           "conflicts"], body))
    else:  # reports written before the table existed
        body = []
        for source, classes in counts["before"].items():
            kept = counts["kept"].get(source, {})
            for label in sorted(set(classes) | set(kept)):
                body.append([source, label, classes.get(label, 0), kept.get(label, 0)])
        out.append(_table(["source", "class", "before (files)", "kept (after)"], body))
    out += ["", "Kept, all sources: " + ", ".join(f"{k} {v}" for k, v in counts["kept_by_label"].items()), ""]
    dup = report["duplicates"]
    out += ["## Duplicates", "",
            f"{dup['candidate_pairs_verified']} candidate pairs (pHash within {report['options']['duplicates']['phash_radius']} bits "
            "under a flip or rotation, or among each picture's nearest by CNN descriptor) were verified by aligning "
            "them; matches by method: "
            + (", ".join(f"{k} {v}" for k, v in dup["pairs_by_method"].items()) or "none") + ".", ""]
    if dup["files_with_a_copy_in_another_source"]:
        out.append(_table(["files of", "with a copy in", "files"],
                          [k.split(" -> ") + [v] for k, v in dup["files_with_a_copy_in_another_source"].items()]))
        out.append("")
    for name, file in report.get("contact_sheets", {}).items():
        out += [f"![{name}]({file})", ""]
    if report.get("labels_overruled_by_priority"):
        out += ["## Labels overruled by a higher-priority source", "", _table(
            ["kept label", "copies (their own labels)"],
            [[c["label"], "<br>".join(c["files"])] for c in report["labels_overruled_by_priority"]]), ""]
    if report["conflicts"]:
        out += ["## Label conflicts (excluded)", "", _table(["labels", "files"], [[", ".join(c["labels"]), "<br>".join(c["files"])] for c in report["conflicts"]]), ""]
    if report["rejected"]:
        out += ["## Rejected", "", _table(["reason", "files"], [[k, v] for k, v in report["rejected"].items()]), ""]
    joined = report["groups"]["joined_by_shared_pictures"]
    out += ["## Leakage groups", "", f"{report['groups']['final']} groups among kept images. "
            f"{len(joined)} patient ids were joined to another because they share a picture"
            + (": " + ", ".join(f"{j['patient']} -> {j['now_in']}" for j in joined[:40]) + (" ..." if len(joined) > 40 else "") if joined else "") + ".", ""]
    folds = report["folds"]
    if folds:
        labels = sorted({label for f in folds.values() for label in f})
        out += ["## Folds (kept images)", "", _table(["fold"] + labels + ["total"],
                [[f] + [c.get(label, 0) for label in labels] + [sum(c.values())] for f, c in folds.items()]), ""]
    leaks = report["imported_fold_leaks"]
    if leaks:
        out += ["## Leaks in the imported folds", "", "Leakage groups (patients joined through shared pictures) that have images "
                "on both sides (test vs train/valid) of an imported fold: scores on such a fold are optimistic.", "",
                _table(["fold", "leaking groups", "examples"], [[f, len(g), ", ".join(g[:6])] for f, g in leaks.items()]), ""]
    return "\n".join(out) + "\n"
