"""The model card (Mitchell et al., 2019) and the datasheet (Gebru et al., 2021) as Markdown, rendered from the files
that ship: `src/mpoxscan/bundled/card.json` and the curate report of the model's training set.

Written at build time by tools/docs/gen_pages.py (mkdocs-gen-files), so the pages cannot drift from the files. The
renderer walks what the card holds rather than a fixed list of keys: a card with more protocols (official splits,
grouped k-fold, leave-one-source-out), more classes, per-class or per-tone figures, PPV at other prevalences renders
them all, each under its own name. Nothing here computes a figure: every number is the card's or the report's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "src" / "mpoxscan" / "bundled" / "card.json"
CURATE_REPORT = REPO / "benchmarks" / "results" / "pool" / "curate" / "report.json"  # written by pool_bench.py

#: Keys whose values are read as counts, or as plain decimals (not shares); every other number in [0, 1] is a share.
COUNT_KEYS = {"n", "folds", "images", "n_images", "n_groups", "n_boot", "n_positive", "n_unknown", "bytes", "epochs_run",
              "best_epoch", "images_fit", "images_valid", "seed", "views", "train_blocks", "min_side"}
DECIMAL_WORDS = ("auc", "rho", "ece", "temperature", "threshold", "loss", "gap", "difference", "blockiness",
                 "brightness", "sharpness", "offtask", "skin_share", "p", "mean", "std", "pct", "points", "drop")
NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
         "macro_auc_ovr": "macro one-vs-rest AUC", "screening_auc": "mpox-vs-rest AUC", "auc": "mpox-vs-rest AUC",
         "screening_sensitivity": "mpox sensitivity", "screening_specificity": "specificity (not mpox)",
         "sensitivity": "mpox sensitivity", "specificity": "specificity (not mpox)", "ece": "ECE (calibration error)",
         "agreement_with_fp32": "top-1 agreement with fp32"}


def label(key: str) -> str:
    if key in NAMES:
        return NAMES[key]
    if key.startswith("ppv_at_"):
        try:
            return f"PPV at {float(key[7:]) * 100:g} % prevalence"
        except ValueError:
            pass
    return key.replace("_", " ")


def _is_decimal(key: str) -> bool:
    words = key.lower().replace("-", "_").split("_")
    return any(w in words or key.lower().endswith(w) for w in DECIMAL_WORDS)


def _parts(key: str, x) -> tuple[str, str]:
    """(digits, unit) of one value: counts whole, shares in per cent, AUCs and the like as decimals."""
    if isinstance(x, bool) or x is None:
        return {True: "yes", False: "no", None: "n/a"}[x], ""
    if isinstance(x, (int, float)) and not math.isfinite(x):
        return "n/a", ""
    if isinstance(x, int) or (key in COUNT_KEYS and isinstance(x, float)):
        return f"{int(x):,}", ""
    if isinstance(x, float):
        if _is_decimal(key) or not 0.0 <= x <= 1.0:
            return (f"{x:.3f}" if abs(x) >= 0.001 else f"{x:.2g}"), ""
        return f"{x * 100:.1f}", " %"
    return str(x), ""


def number(key: str, x) -> str:
    digits, unit = _parts(key, x)
    return digits + unit


def _is_stat(v) -> bool:
    """A {mean, sd} or a {value, ci95}: one figure, not a part of the card."""
    return isinstance(v, dict) and (("mean" in v and "sd" in v and isinstance(v["mean"], (int, float)))
                                    or ("value" in v and isinstance(v["value"], (int, float))))


def value(key: str, v) -> str:
    """A scalar, a {mean, sd}, a {value, ci95} or a list, on one line."""
    if _is_stat(v) and "mean" in v:
        (mean, unit), (sd, _) = _parts(key, v["mean"]), _parts(key, v["sd"])
        return f"{mean} ± {sd}{unit}"
    if _is_stat(v):
        text, unit = _parts(key, v["value"])
        ci = v.get("ci95")
        if ci and len(ci) == 2:
            text += f" [{_parts(key, ci[0])[0]}, {_parts(key, ci[1])[0]}]"
        return text + unit
    if isinstance(v, list):
        return ", ".join(value(key, x) for x in v) if all(not isinstance(x, (dict, list)) for x in v) else json.dumps(v)
    if isinstance(v, dict):
        return ", ".join(f"{label(k)} {value(k, x)}" for k, x in v.items())
    return number(key, v)


def _scalar_like(v) -> bool:
    return not isinstance(v, (dict, list)) or _is_stat(v) or (
        isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))


def table(rows: dict, first: str = "") -> str:
    """{row: {column: scalar}} as a table (columns: the union of the rows' keys, in order of appearance), or
    {key: scalar} as a two-column one."""
    if rows and all(isinstance(r, dict) and not _scalar_like(r) and all(_scalar_like(x) for x in r.values())
                    for r in rows.values()):
        columns = list(dict.fromkeys(k for r in rows.values() for k in r))
        lines = [f"| {first} | " + " | ".join(label(c) for c in columns) + " |",
                 "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(value(c, r[c]) if c in r else "" for c in columns) + " |"
                  for name, r in rows.items()]
        return "\n".join(lines) + "\n"
    lines = [f"| {first or 'figure'} | value |", "|---|---:|"]
    lines += [f"| {label(k)} | {value(k, v)} |" for k, v in rows.items() if _scalar_like(v)]
    return "\n".join(lines) + "\n"


def section(key: str, v, level: int) -> str:
    """Any part of the card: scalars in a table, nested parts as sub-sections (so a key this renderer has never seen
    is still shown, under its own name)."""
    head = "#" * min(level, 6)
    if v in ({}, [], None, ""):
        return ""
    if _scalar_like(v):
        return f"{label(key)}: {value(key, v)}\n\n"
    if isinstance(v, list):
        return f"{head} {label(key)}\n\n" + "".join(f"- {x if isinstance(x, str) else json.dumps(x)}\n" for x in v) + "\n"
    scalars = {k: x for k, x in v.items() if _scalar_like(x)}
    nested = {k: x for k, x in v.items() if not _scalar_like(x)}
    out = f"{head} {label(key)}\n\n"
    if nested and all(isinstance(x, dict) and all(_scalar_like(y) for y in x.values()) for x in nested.values()) \
            and len(nested) > 1:
        out += table(nested) + "\n"
        nested = {}
    if scalars:
        out += table(scalars) + "\n"
    for k, x in nested.items():
        out += section(k, x, level + 1)
    return out


def _tone_part(tone: dict, level: int) -> str:
    head = "#" * min(level, 6)
    out = f"{head} Per skin tone\n\n"
    out += ("Individual Typology Angle of each photo's skin, in Del Bino's bins (very light to dark), pooled out of "
            "fold, each photo screened at its own fold's threshold.\n\n")
    rest = {k: v for k, v in tone.items() if k != "bins"}
    if "bins" in tone:
        out += table(tone["bins"], "ITA bin") + "\n"
    gap = rest.pop("specificity_gap", None)
    if gap:
        out += (f"Specificity gap, {gap.get('lightest')} minus {gap.get('darkest')}: "
                f"{gap.get('gap', float('nan')) * 100:+.1f} points.\n\n")
    for k, v in rest.items():
        out += section(k, v, level + 1)
    return out


def _protocol(name: str, entry: dict, level: int) -> str:
    head = "#" * min(level, 6)
    out = f"{head} {name}\n\n"
    facts = [f"{label(k)}: {value(k, entry[k])}" for k in ("folds",) if k in entry]
    if "source" in entry:
        facts.append(f"results: `{entry['source']}`")
    if facts:
        out += "; ".join(facts) + ".\n\n"
    for key, v in entry.items():
        if key in ("folds", "source"):
            continue
        if key == "metrics":
            out += f"{head}# Over folds (mean ± sd)\n\n" + table(v, "metric") + "\n"
        elif key == "pooled_out_of_fold":
            for variant, pooled in v.items():
                title = "Pooled out of fold" + ("" if variant == "main" else f" ({variant})")
                out += f"{head}# {title}\n\n"
                out += ("Every photo predicted by the fold that did not train on it, each at its fold's threshold; "
                        "95 % intervals from a patient-level bootstrap.\n\n")
                scalars = {k: x for k, x in pooled.items() if k != "metrics" and _scalar_like(x)}
                out += table({**pooled.get("metrics", {}), **scalars}, "metric") + "\n"
                for k, x in pooled.items():
                    if k != "metrics" and not _scalar_like(x):
                        out += section(k, x, level + 2)
        elif key == "skin_tone":
            out += _tone_part(v, level + 1)
        elif key == "exported_files":
            out += f"{head}# Exported files, per fold\n\nEach fold's model exported and quantized as the shipped file " \
                   "was, scored on that fold's test photos.\n\n" + table(v, "file") + "\n"
        else:
            out += section(key, v, level + 1)
    return out


def _uses_fold_thresholds(cv: dict) -> bool:
    """Whether the card's cross-validated sensitivity and specificity are at each fold's own threshold (the case
    until a card records an operating point of the shipped threshold)."""
    text = json.dumps(cv)
    return "operating_point" not in text and "shipped_threshold" not in text


def model_card(card: dict) -> str:
    """The card as a Markdown page, in Mitchell et al.'s sections."""
    cv = card.get("cross_validated_metrics") or {}
    protocols = cv.get("protocols") or ({cv["protocol"]: {"metrics": cv["metrics"]}} if "metrics" in cv else {})
    classes = card.get("classes", [])
    data = card.get("data", {})
    out = [f"# Model card: {card.get('name', 'the bundled model')}\n",
           "!!! note \"Generated\"\n    This page is written at build time from `src/mpoxscan/bundled/card.json`, the "
           "card that ships beside the model file; edit the card (or `mpoxscan.deploy.bundle`), not this page. "
           "Sections after Mitchell et al., *Model Cards for Model Reporting*, FAT* 2019.\n",
           "## Model details\n",
           table({"file": card.get("file"), "precision": card.get("precision"), "bytes": card.get("bytes"),
                  "sha256": f"`{card.get('sha256', '')}`", "architecture": card.get("architecture"),
                  "strategy": card.get("strategy"), "mpoxscan version": card.get("mpoxscan_version"),
                  "temperature": card.get("temperature"), "screening threshold": card.get("screening_threshold")},
                 "field")]
    if card.get("preprocessing"):
        out.append(section("preprocessing", card["preprocessing"], 3))
    if card.get("recipe"):
        out.append(section("recipe (how this file was trained)", card["recipe"], 3))
    out += ["## Intended use\n", f"{card.get('intended_use', 'Not stated in the card.')}\n",
            "Primary users: a person with a skin lesion and a phone, and the remote expert who reads the cases they "
            "send (see the person's and the expert's guides). Out of scope: diagnosis, triage without an expert "
            "or a health worker, any skin condition outside the classes below, and commercial use (the training "
            "data's licence).\n",
            "## Factors\n",
            f"- Classes ({len(classes)}): {', '.join(classes)}; the class screened for: "
            f"**{card.get('positive_class', '')}**.\n"
            "- Skin tone, measured as the Individual Typology Angle of each photo's skin (Del Bino bins), where the "
            "card holds per-tone figures (below).\n"
            "- The photo itself: too small, too dark, blurred, too compressed, not a skin close-up or unlike the "
            "training photos gets *cannot tell* instead of an answer (the answer rule below).\n"]
    if card.get("answer_rule"):
        out.append(section("answer rule", card["answer_rule"], 3))
    out += ["## Metrics\n",
            "Accuracy, balanced accuracy and macro-F1 over the classes; for screening, mpox against every other class: "
            "the AUC, the sensitivity and specificity at a threshold, the positive predictive value (PPV) at stated "
            "prevalences, and the expected calibration error (ECE). The threshold is chosen for 95 % mpox sensitivity "
            "on inner-validation photos, never on test photos.\n"]
    if _uses_fold_thresholds(cv) and protocols:
        out.append("!!! warning \"Which threshold\"\n    The cross-validated sensitivity and specificity below are "
                   "each fold's model at **its own fold's threshold** (chosen on that fold's inner validation), not "
                   f"at the shipped file's threshold ({number('threshold', card.get('screening_threshold'))}): they "
                   "estimate the recipe, not this file's operating point.\n")
    out += ["## Evaluation data\n"]
    for name, entry in protocols.items():
        facts = ", ".join(f"{label(k)} {value(k, entry[k])}" for k in ("folds",) if k in entry)
        out.append(f"- {name}" + (f" ({facts})" if facts else "") + "\n")
    if card.get("held_out_metrics"):
        out.append(f"- The held-out photos of the training run: {card['held_out_metrics'].get('note', '')}\n")
    out += ["\n## Training data\n", table({k: v for k, v in data.items() if _scalar_like(v)}, "field"),
            "\nThe curated set is described in its [datasheet](data/datasheet.md).\n",
            "## Quantitative analyses\n"]
    if cv.get("note"):
        out.append(f"{cv['note']}\n")
    for name, entry in protocols.items():
        out.append(_protocol(name, entry, 3))
    if card.get("held_out_metrics"):
        out.append(section("held-out photos of the training run", card["held_out_metrics"], 3))
    if card.get("fidelity"):
        out.append(section("fidelity of the shipped file to its fp32 network", card["fidelity"], 3))
    out += ["## Ethical considerations\n",
            f"- Data: {data.get('name', 'the training set')}, {data.get('licence', '')}; the photos are public "
            "images collected by others, whose consent and provenance this project cannot check.\n"
            "- Skin tone: the public sets are skewed (more mpox among dark photos); the per-tone figures above say "
            "how far the model follows that skew.\n"
            "- A false negative can reassure a person who should be tested; the threshold is set for high "
            "sensitivity, which makes most positive answers false alarms at a low prevalence (see the PPV).\n"
            "- Photos that leave the phone go only with the person's consent, stripped of metadata; see the "
            "deployment page for retention.\n"]
    if card.get("ethical_considerations"):
        out.append(section("further considerations", card["ethical_considerations"], 3))
    out += ["## Caveats and recommendations\n",
            "".join(f"- {x}\n" for x in card.get("limitations", [])) + "\n"]
    extra = {k: v for k, v in card.items() if k not in {
        "name", "file", "sha256", "bytes", "precision", "mpoxscan_version", "architecture", "strategy", "classes",
        "positive_class", "screening_threshold", "answer_rule", "temperature", "preprocessing", "data", "recipe",
        "held_out_metrics", "cross_validated_metrics", "fidelity", "intended_use", "limitations",
        "ethical_considerations"}}
    if extra:
        out.append("## More from the card\n")
        out += [section(k, v, 3) for k, v in extra.items()]
    return "\n".join(out)


def datasheet(report: dict, card: dict) -> str:
    """The curated training set as a Gebru et al. datasheet: composition and cleaning from the curate report,
    licence and citation from the card."""
    counts = report.get("counts", {})
    data = card.get("data", {})
    sources = report.get("sources", [])
    groups = report.get("groups", {})
    out = ["# Datasheet of the curated set\n",
           "!!! note \"Generated\"\n    Written at build time from the curate report "
           "(`benchmarks/results/pool/curate/report.json`, the `report.json` that `mpoxscan curate --pool public` "
           "wrote for the bundled model's training set) and from "
           "`src/mpoxscan/bundled/card.json`. Sections after Gebru et al., *Datasheets for Datasets*, CACM 2021.\n",
           "## Motivation\n",
           "Built to train and evaluate mpoxscan's screening model without the leaks that inflate published "
           "figures: copies of one picture in two folds, one patient on both sides of a split, contradicting labels. "
           f"It is a curation of public data ({data.get('name', 'see below')}), not a new collection.\n",
           "## Composition\n",
           f"{counts.get('files', 0):,} files read; by status: "
           + ", ".join(f"{k} {v:,}" for k, v in counts.get("by_status", {}).items()) + ".\n"]
    before, kept = counts.get("before", {}), counts.get("kept", {})
    rows = {}
    for src in dict.fromkeys([*before, *kept]):
        for cls in dict.fromkeys([*before.get(src, {}), *kept.get(src, {})]):
            rows[f"{src}: {cls}"] = {"files": before.get(src, {}).get(cls, 0), "kept": kept.get(src, {}).get(cls, 0)}
    if rows:
        out.append(table(rows, "source: class"))
    if counts.get("kept_by_label"):
        total = sum(counts["kept_by_label"].values())
        out.append("\nKept, by class: " + ", ".join(f"{c} {n:,} ({n / total * 100:.1f} %)"
                                                     for c, n in counts["kept_by_label"].items()) + ".\n")
    out.append(f"\nPatients (groups after joining those that share a picture): {groups.get('final', 'n/a')}.\n")
    tones = next((e.get("skin_tone", {}).get("bins") for e in
                  (card.get("cross_validated_metrics", {}).get("protocols") or {}).values() if e.get("skin_tone")), None)
    if tones:
        out.append("\nBy skin tone (ITA bin of each photo's skin, from the card's pooled cross-validation):\n\n"
                   + table({b: {k: v[k] for k in ("n", "n_positive") if k in v} for b, v in tones.items()}, "ITA bin"))
    out += ["\n## Collection process\n",
            "Not collected by this project: the photos come from the public sets below, gathered by their authors "
            "from the web and clinical sources (see their papers for consent and provenance).\n\n"
            + table({s.get("name", "?"): {"group regex": f"`{s.get('group_regex')}`", "priority": s.get("priority"),
                                           "files without a group match": s.get("files_without_group_match")}
                     for s in sources}, "source"),
            "\n## Preprocessing, cleaning, labelling\n"]
    dup = report.get("duplicates", {})
    if dup:
        out.append(section("duplicates found", dup, 3))
    rejected = report.get("rejected", {})  # {reason: count}
    out.append(f"Rejected files: {sum(rejected.values()):,}"
               + (" (" + ", ".join(f"{r} {n:,}" for r, n in rejected.items()) + ")" if rejected else "")
               + f". Label conflicts (excluded): {len(report.get('conflicts', []))}.\n\n")
    joined = groups.get("joined_by_shared_pictures", [])
    if joined:
        out.append("Patients joined because they share a picture: "
                   + ", ".join(f"{j['patient']} into {j['now_in']}" for j in joined) + ".\n\n")
    leaks = report.get("imported_fold_leaks", {})
    if leaks:
        out.append("Imported splits that put one patient group on both sides (such groups are why the patient-grouped "
                   "folds are the primary protocol): "
                   + "; ".join(f"{fold}: {', '.join(g)}" for fold, g in leaks.items()) + ".\n\n")
    if report.get("options"):
        out.append(section("curation settings", report["options"], 3))
    out += ["## Uses\n",
            "Training and cross-validating the screening model (the model card's protocols); not for diagnosis, and "
            "not for commercial use.\n",
            "## Distribution\n",
            f"Not redistributed: the photos stay in their sources (read from `../shared/data`). Licence of the "
            f"sources: {data.get('licence', 'see the sources')}. Cite: {data.get('citation', 'the sources')}.\n",
            "## Maintenance\n",
            "Rebuilt by `mpoxscan curate` (the command-line reference lists its options) whenever a source changes; "
            "the report's `mpoxscan_curate_version` names the curation rules it was made with "
            f"(this one: {report.get('mpoxscan_curate_version', 'n/a')}).\n"]
    return "\n".join(out)


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
