"""The clinical review gallery (`mpoxscan explain --gallery RUN`) and the summary of a reviewer's marks.

The gallery is one static HTML page over a cross-validation run's test images: each photo beside its heat map (the
on-device CAM of the fold's own exported model, which never saw that photo), the true and predicted class and the
probabilities, grouped by outcome. A reviewer marks each explanation plausible or not, with a note; the page keeps
the marks in the browser and saves them as a CSV file, which `mpoxscan explain --summarise` reads.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError

OUTCOMES = {"false-negative": "False negatives: mpox missed by the screening threshold",
            "false-positive": "False positives: flagged as mpox, but not mpox",
            "misclassified": "Other misclassifications (screening verdict right)",
            "correct": "Correct"}
MARK_FIELDS = ["image", "sha256", "fold", "true", "predicted", "outcome", "mark", "note"]


def outcome(true: str, predicted: str, flagged: bool, positive: str) -> str:
    if true == positive and not flagged:
        return "false-negative"
    if true != positive and flagged:
        return "false-positive"
    return "correct" if true == predicted else "misclassified"


def build_gallery(run: Path, out: Path, model: str | None = None, limit: int | None = None, progress: bool = True) -> Path:
    """Write ``out/index.html`` and its images for the test images of ``run`` (a `mpoxscan cv --exports` run)."""
    from tqdm import tqdm

    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.explain.overlay import overlay
    from mpoxscan.images import load_image

    run, out = Path(run), Path(out)
    results_path = run / "results.json"
    if not results_path.exists():
        raise MpoxscanError(f"{run}: not a cross-validation run (no results.json)")
    results = json.loads(results_path.read_text())
    strategy = results["config"]["strategy"]
    models_dir = run / "models"
    available = sorted({p.name.split("__")[0] for p in models_dir.glob("*.fp32.onnx")})
    if not available:
        raise MpoxscanError(f"{run}: no fold models to explain: run `mpoxscan cv` with --exports (it keeps each fold's model)")
    model = model or max(available, key=lambda m: results["models"].get(m, {}).get("summary", {}).get("accuracy", {}).get("mean", 0))
    if model not in available:
        raise MpoxscanError(f"{run}: no fold models for '{model}' (available: {', '.join(available)})")
    (out / "img").mkdir(parents=True, exist_ok=True)
    cards = []
    folds = [s["name"] for s in results["splits"] if (models_dir / f"{model}__{strategy}__{s['name']}.fp32.onnx").exists()]
    for fold in folds:
        screener = Screener(models_dir / f"{model}__{strategy}__{fold}.fp32.onnx")
        with open(run / "predictions" / f"{model}__{strategy}__{fold}__onnx-fp32.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        rows = rows[:limit] if limit else rows
        for row in tqdm(rows, desc=f"gallery {fold}", unit="img", disable=not progress):
            photo = load_image(row["path"], min_side=screener.input_size)
            seen = screener.preprocessing.resize_crop(photo)
            outputs = screener.run(screener.preprocessing.normalize(seen)[None])
            proba, cam = outputs["probabilities"][0], outputs["cam"][0]
            answer = screener.verdict(proba)
            stem = row["sha256"][:16]
            seen.resize((224, 224)).save(out / "img" / f"{stem}.jpg", quality=88)
            heat = np.asarray(cam, np.float32)
            overlay(seen, heat, None, width=224).save(out / "img" / f"{stem}.cam.jpg", quality=88)
            cards.append({"image": Path(row["path"]).name, "sha256": row["sha256"], "fold": fold, "true": row["label"],
                          "predicted": answer.predicted, "p_predicted": answer.probabilities[answer.predicted],
                          "p_positive": answer.positive_probability, "flagged": answer.positive, "stem": stem,
                          "outcome": outcome(row["label"], answer.predicted, answer.positive, answer.positive_class)})
    page = out / "index.html"
    page.write_text(_page(cards, run.name, model, screener.positive_class))
    (out / "cases.json").write_text(json.dumps(cards, indent=1))
    return page


def _card_html(c: dict, positive: str) -> str:
    e = html.escape
    return (f'<figure class="case" data-sha="{e(c["sha256"])}" data-image="{e(c["image"])}" data-fold="{e(c["fold"])}" '
            f'data-true="{e(c["true"])}" data-predicted="{e(c["predicted"])}" data-outcome="{e(c["outcome"])}">'
            f'<div class="pair"><img src="img/{c["stem"]}.jpg" alt="photo"><img src="img/{c["stem"]}.cam.jpg" alt="heat map"></div>'
            f'<figcaption><b>true</b> {e(c["true"])} · <b>predicted</b> {e(c["predicted"])} ({100 * c["p_predicted"]:.0f} %)'
            f' · {e(positive)} {100 * c["p_positive"]:.1f} %{" · <b>flagged</b>" if c["flagged"] else ""}<br>'
            f'<small>{e(c["image"])} · {e(c["fold"])}</small><br>'
            f'<label><input type="radio" name="m-{e(c["sha256"])}" value="plausible"> plausible</label> '
            f'<label><input type="radio" name="m-{e(c["sha256"])}" value="not plausible"> not plausible</label>'
            f'<textarea placeholder="note (optional)" rows="1"></textarea></figcaption></figure>')


def _page(cards: list[dict], run_name: str, model: str, positive: str) -> str:
    sections = []
    for key, title in OUTCOMES.items():
        group = [c for c in cards if c["outcome"] == key]
        group.sort(key=lambda c: -c["p_predicted"])
        sections.append(f'<section><h2>{html.escape(title)} <small>({len(group)})</small></h2>'
                        + "".join(_card_html(c, positive) for c in group) + "</section>")
    storage_key = json.dumps(f"mpoxscan-marks:{run_name}:{model}")
    fields = json.dumps(MARK_FIELDS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpoxscan review: {html.escape(run_name)} ({html.escape(model)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; color: #222; }}
header {{ position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ccc; z-index: 1; }}
section {{ display: flex; flex-wrap: wrap; gap: .75rem; }} section h2 {{ width: 100%; margin: 1rem 0 0; }}
.case {{ margin: 0; width: 460px; border: 1px solid #ddd; border-radius: 6px; padding: .4rem; }}
.case.marked {{ background: #f1f8f1; }} .pair img {{ width: 224px; height: 224px; }}
textarea {{ width: 100%; box-sizing: border-box; }}
</style></head><body>
<header><h1>Explanation review: {html.escape(model)}, run {html.escape(run_name)}</h1>
<p>Left: the photo as the network saw it. Right: where the network looked (class activation map of its answer, from
the fold's own model, which never saw the photo). Is the highlighted area the lesion, i.e. is the explanation
clinically plausible? Marks stay in this browser until you save them.</p>
<button id="save">Save marks (CSV)</button> <span id="count"></span></header>
{"".join(sections)}
<script>
const KEY = {storage_key}, FIELDS = {fields};
const marks = JSON.parse(localStorage.getItem(KEY) || "{{}}");
const cases = [...document.querySelectorAll(".case")];
function refresh() {{
  const n = Object.values(marks).filter(m => m.mark).length;
  document.getElementById("count").textContent = n + " of " + cases.length + " marked";
}}
for (const fig of cases) {{
  const sha = fig.dataset.sha, saved = marks[sha] || {{}};
  for (const r of fig.querySelectorAll("input[type=radio]")) {{
    r.checked = saved.mark === r.value;
    r.addEventListener("change", () => {{ marks[sha] = {{...(marks[sha] || {{}}), mark: r.value}}; store(fig); }});
  }}
  const note = fig.querySelector("textarea");
  note.value = saved.note || "";
  note.addEventListener("input", () => {{ marks[sha] = {{...(marks[sha] || {{}}), note: note.value}}; store(fig); }});
  fig.classList.toggle("marked", !!saved.mark);
}}
function store(fig) {{ localStorage.setItem(KEY, JSON.stringify(marks)); fig.classList.toggle("marked", !!(marks[fig.dataset.sha] || {{}}).mark); refresh(); }}
function csvCell(v) {{ v = String(v ?? ""); return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }}
function toCSV() {{
  const lines = [FIELDS.join(",")];
  for (const fig of cases) {{
    const m = marks[fig.dataset.sha];
    if (!m || !m.mark) continue;
    const d = fig.dataset;
    lines.push([d.image, d.sha, d.fold, d.true, d.predicted, d.outcome, m.mark, m.note || ""].map(csvCell).join(","));
  }}
  return lines.join("\\n") + "\\n";
}}
document.getElementById("save").addEventListener("click", () => {{
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([toCSV()], {{type: "text/csv"}}));
  a.download = "marks.csv"; document.body.appendChild(a); a.click(); a.remove();
}});
window.mpoxscanMarksCSV = toCSV;
refresh();
</script></body></html>
"""


def summarise_marks(path: Path) -> dict:
    """Share of explanations marked plausible, per true class and per outcome."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise MpoxscanError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MpoxscanError(f"{path}: not a marks CSV ({exc})") from None
    if rows and not {"true", "outcome", "mark"} <= set(rows[0]):
        raise MpoxscanError(f"{path}: not a marks CSV from the review gallery (needs columns true, outcome, mark)")
    bad = sorted({r["mark"] for r in rows} - {"plausible", "not plausible"})
    if bad:
        raise MpoxscanError(f"{path}: unknown mark(s) {', '.join(map(repr, bad))} (expected 'plausible' or 'not plausible')")

    def table(key: str) -> dict:
        out = {}
        for value in sorted({r[key] for r in rows}):
            group = [r for r in rows if r[key] == value]
            out[value] = {"marked": len(group), "plausible": sum(r["mark"] == "plausible" for r in group),
                          "share_plausible": sum(r["mark"] == "plausible" for r in group) / len(group)}
        return out

    return {"marked": len(rows), "plausible": sum(r["mark"] == "plausible" for r in rows),
            "by_class": table("true"), "by_outcome": table("outcome")}
