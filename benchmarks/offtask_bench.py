"""Measure "cannot tell": off-task pictures, degraded photos and false refusals of real photos, with the shipped model.

    .venv/bin/python benchmarks/offtask_bench.py [--model src/mpoxscan/bundled/model.onnx] [--data ../shared/data]

Off-task pictures are built from what installed packages ship (scikit-image's, scikit-learn's and matplotlib's sample
photos, whole and cropped; scikit-image's faces), generated images (solid colours, noise, gradients, rendered text,
charts) and screenshots of the app's own pages (docs/screenshots). Real photos: the shipped model's held-out
photos of the pool (never used for its weights) and the MSLD v1 photos that match no v2 patient and are not in the
pool's training set (never used for anything). Nothing here is fitted on the pictures it scores: the model's thresholds were set when it was exported,
from its training and held-out photos; the false-refusal rate of the threshold procedure itself is estimated by
cross-fitting over the held-out photos (the thresholds re-derived without each fifth of them, then applied to it).
The off-task score's design (which block, how many components, the subspace residual) was chosen on an earlier
exploratory set of 59 of these pictures (skimage, sklearn, matplotlib, solid colours, noise, text, screenshots, 10
faces); the crops, the other faces, the charts and the other generated images were not part of that choice.

Results: benchmarks/results/offtask/{offtask.json, offtask.md, offtask.png}.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont
from scipy.special import logsumexp
from tqdm import tqdm

from mpoxscan.deploy.answer import QUALITY_MEASURES, AnswerRule, fit_rule
from mpoxscan.deploy.runtime import Screener, bundled_model
from mpoxscan.errors import MpoxscanError
from mpoxscan.images import load_image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "offtask"


# ---------------------------------------------------------------- off-task pictures


def _packaged_photos() -> dict[str, Image.Image]:
    import matplotlib.cbook as cbook
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    out = {}
    for name in ("astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "grass", "gravel", "horse",
                 "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
                 "rocket", "text", "clock", "checkerboard", "cat", "colorwheel", "skin", "eagle"):
        try:
            array = getattr(sd, name)()
        except Exception:  # noqa: BLE001 - a sample this scikit-image lacks, or one it would have to download
            continue
        out[f"skimage {name}"] = Image.fromarray(array if array.dtype == np.uint8 else
                                                 (255 * (array / max(array.max(), 1e-9))).astype(np.uint8)).convert("RGB")
    for name, array in zip(("china", "flower"), load_sample_images().images):
        out[f"sklearn {name}"] = Image.fromarray(array)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with cbook.get_sample_data(name) as fh:
            out[f"matplotlib {name}"] = Image.open(fh).convert("RGB")
    return out


def _crops(photos: dict[str, Image.Image], per_photo: int, rng: np.random.Generator) -> dict[str, Image.Image]:
    """Close-ups: a random square of 30-60 % of the short side (what a phone pointed at the thing would see)."""
    out = {}
    for name, im in photos.items():
        w, h = im.size
        for k in range(per_photo):
            side = int(min(w, h) * rng.uniform(0.3, 0.6))
            if side < 64:
                continue
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            out[f"{name} crop{k}"] = im.crop((x, y, x + side, y + side))
    return out


def _faces(rng: np.random.Generator) -> dict[str, Image.Image]:
    import skimage.data as sd

    faces = np.load(Path(sd.__file__).parent / "lfw_subset.npy")[:100]  # the first 100 are faces (25 x 25)
    return {f"face {k}": Image.fromarray((255 * f).astype(np.uint8)).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
            for k, f in enumerate(faces)}


def _generated(rng: np.random.Generator) -> dict[str, dict[str, Image.Image]]:
    size = (400, 300)
    solid = {f"solid {c}": Image.new("RGB", size, c) for c in
             [(0, 0, 0), (255, 255, 255), (128, 128, 128)] + [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(21)]}
    noise = {}
    for k in range(12):
        kind = k % 3
        if kind == 0:
            a = rng.integers(0, 256, (300, 400, 3))
        elif kind == 1:
            a = np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (300, 400, 3)), 0, 255)
        else:
            a = np.where(rng.random((300, 400, 1)) < 0.5, 0, 255).repeat(3, 2)
        noise[f"noise {k}"] = Image.fromarray(a.astype(np.uint8))
    gradients = {}
    for k in range(12):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, 400)[None, :, None] if k % 2 else np.linspace(0, 1, 300)[:, None, None]
        g = (a * (1 - t) + b * t)
        gradients[f"gradient {k}"] = Image.fromarray(np.broadcast_to(g, (300, 400, 3)).astype(np.uint8))
    texts = {}
    lines = ["Hello world", "mpox screening", "Lorem ipsum dolor sit amet", "Take a photo of the lesion",
             "Invoice #2291", "def main():\n    return 0", "Mpox is a viral infection", "12:45  Battery 87 %",
             "Ministry of Health", "Consent form: I agree"]
    for k, line in enumerate(lines):
        im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(180, 256, 3)))
        ImageDraw.Draw(im).multiline_text((12, 60), line, fill=tuple(int(v) for v in rng.integers(0, 90, 3)),
                                          font=ImageFont.load_default(size=int(rng.integers(24, 48))))
        texts[f"text {k}"] = im
    charts = {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for k in range(10):
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        x = np.arange(20)
        [ax.plot, ax.bar, ax.scatter][k % 3](x, rng.normal(size=20).cumsum())
        ax.set_title(f"chart {k}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts[f"chart {k}"] = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return {"solid colours": solid, "noise": noise, "gradients": gradients, "rendered text": texts, "charts": charts}


def offtask_sets(seed: int = 0) -> dict[str, dict[str, Image.Image]]:
    """Source -> {name: picture}."""
    rng = np.random.default_rng(seed)
    photos = _packaged_photos()
    screenshots = {f"screenshot {p.stem}": Image.open(p).convert("RGB")
                   for p in sorted((REPO / "docs" / "screenshots").glob("*.png"))}
    return {"packaged photos": photos, "packaged photos, close-up crops": _crops(photos, 3, rng),
            "faces (scikit-image LFW)": _faces(rng), **_generated(rng), "app screenshots": screenshots}


# ---------------------------------------------------------------- degraded photos


def _jpeg(im: Image.Image, quality: int, input_size: int) -> Image.Image:
    """The photo saved at this JPEG quality, opened again as the app opens an upload (a large one at reduced scale)."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return load_image(buf.getvalue(), min_side=input_size, name="degraded photo")


def degradations(input_size: int) -> dict:
    """The degraded versions of a real photo, for a network of this input size."""
    return {
        "dark (brightness x 0.25)": lambda im: ImageEnhance.Brightness(im).enhance(0.25),
        "blurred (Gaussian, 3 px at the network's input)":
            lambda im: im.filter(ImageFilter.GaussianBlur(3 * min(im.size) / input_size)),
        "JPEG quality 10": lambda im: _jpeg(im, 10, input_size),
        "tiny (48 px short side)": lambda im: im.resize((max(1, round(48 * im.width / min(im.size))),
                                                         max(1, round(48 * im.height / min(im.size)))),
                                                        Image.Resampling.BICUBIC),
    }


# ---------------------------------------------------------------- measuring


def answers(screener: Screener, images: list[Image.Image], batch: int = 32, desc: str = "") -> list[dict]:
    """The answer (and every output the rule reads) for each picture."""
    out = []
    for k in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        chunk = images[k:k + batch]
        outputs = screener.run(screener.preprocessing.batch(chunk))
        for j, im in enumerate(chunk):
            s = screener.verdict(outputs["probabilities"][j], min(im.size), screener.measures(outputs, j, im))
            out.append({"answer": s.answer, "reason": s.reason, "p_positive": s.positive_probability,
                        "max_probability": float(outputs["probabilities"][j].max()),
                        "energy": float(logsumexp(outputs["logits"][j])), **s.measures,
                        "short_side": min(im.size)})
    return out


def cross_fitted_refusals(screener: Screener, held: list[dict], reference_quality: np.ndarray,
                          reference_blockiness: np.ndarray, held_blockiness: np.ndarray, groups: list[str],
                          folds: int = 5, seed: int = 0) -> dict:
    """The threshold procedure's own false-refusal rate: for each fifth of the held-out photos (by patient), the
    off-task limit is re-derived from the other held-out photos and the quality limits from every other photo, then
    applied to that fifth."""
    from sklearn.model_selection import GroupKFold

    base = AnswerRule(screener.rule.screening_threshold, screener.rule.positive_class)
    refused, reasons = np.zeros(len(held), bool), {}
    held_quality = quality_columns(held)
    offtask = np.array([h["offtask"] for h in held])
    for fit_idx, test_idx in GroupKFold(folds).split(offtask, groups=groups):
        rule = fit_rule(base, np.concatenate([reference_quality, held_quality[fit_idx]]), offtask[fit_idx],
                        np.concatenate([reference_blockiness, held_blockiness[fit_idx]]))
        for k in test_idx:
            why = rule.refusal(held[k]["short_side"], held[k])
            refused[k] = why is not None
            if why:
                reasons[why] = reasons.get(why, 0) + 1
    return {"refused": int(refused.sum()), "n": len(held), "rate": float(refused.mean()), "reasons": reasons,
            "refused_mask": refused}


def quality_columns(got: list[dict]) -> np.ndarray:
    """The ``quality`` measures of each answer, as the columns :func:`fit_rule` takes."""
    return np.array([[a[n] for n in QUALITY_MEASURES] for a in got])


def blockiness_column(got: list[dict]) -> np.ndarray:
    """The blockiness of each answer's photo as screening measured it (NaN where it did not)."""
    return np.array([a.get("blockiness", np.nan) for a in got], float)


def auroc(real: list[float], off: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    # A non-finite score (an overflowing picture) ranks as the most unusual, as the rule treats it.
    scores = np.nan_to_num(np.r_[real, off], nan=np.inf)
    scores = np.clip(scores, -1e30, 1e30)
    return float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(off))], scores))


def run(model: Path, data: Path, work: Path) -> dict:
    from mpoxscan.data.manifest import read_manifest
    from mpoxscan.deploy.bundle import training_manifest
    from mpoxscan.training.cv import kept_rows
    from mpoxscan.data.splits import training_split

    started = time.perf_counter()
    screener = Screener(model)
    rule = screener.rule
    if rule.max_offtask is None:
        raise SystemExit(f"{model} has no off-task threshold: export it with --calibration (make model)")
    rows = kept_rows(training_manifest(data, work / "msld2"))
    split = training_split(rows, screener.meta.get("card", {}).get("training", {}))
    load = lambda path: load_image(path, min_side=screener.input_size)  # noqa: E731
    held_rows = [rows[k] for k in split.valid]
    held_images = [load(r.path) for r in held_rows]
    held = answers(screener, held_images, desc="held-out photos")
    train = answers(screener, [load(rows[k].path) for k in split.train], desc="training photos")
    train_quality = quality_columns(train)
    # MSLD v1 photos that match no v2 patient: curate both and keep the v1 representatives.
    curated = work / "msld"
    from mpoxscan.data.curate import CurateOptions, curate, write_outputs
    from mpoxscan.data.sources import Source

    opts = CurateOptions(n_folds=5, seed=0)
    write_outputs(curate([Source("msld2", data / "msld-v2", r"^([A-Z]+_\d+)_", priority=1),
                          Source("msld1", data / "msld-v1", r"^(N?M\d+)_", {"Others": ("Chickenpox", "Measles")})], opts),
                  curated, opts, force=True)
    trained_on = {r.sha256 for r in rows}  # the pool keeps a few v1 photos for training: they are not "never used"
    v1_rows = [r for r in read_manifest(curated) if r.status == "kept" and r.source == "msld1" and r.sha256 not in trained_on]
    v1 = answers(screener, [load(r.path) for r in v1_rows], desc="MSLD v1-only photos")

    sets = offtask_sets()
    off = {source: answers(screener, list(images.values()), desc=source) for source, images in sets.items()}
    degraded = {name: answers(screener, [f(im) for im in held_images], desc=name)
                for name, f in degradations(screener.input_size).items()}

    is_pos = np.array([r.label == screener.positive_class for r in held_rows])
    # The compression limit is fitted on the photos as screening measures them (as the export does; NaN: a large
    # JPEG that screening does not measure).
    crossfit = cross_fitted_refusals(screener, held, train_quality, blockiness_column(train), blockiness_column(held),
                                     [r.group for r in held_rows])
    said_pos = np.array([h["p_positive"] >= rule.screening_threshold for h in held])
    answered_pos = np.array([h["answer"] == "positive" for h in held])
    all_off = [a for v in off.values() for a in v]
    real_scores = held + v1
    result = {
        "model": {"file": str(model), "sha256": __import__("hashlib").sha256(Path(model).read_bytes()).hexdigest(),
                  "answer_rule": rule.as_dict()},
        "offtask": {source: _summary(v, len(sets[source])) for source, v in off.items()},
        "offtask_all": _summary(all_off, len(all_off)),
        "offtask_missed": [f"{source}: {name} ({a['answer']}, p_mpox {a['p_positive']:.2f}, offtask {a.get('offtask', 0):.2f})"
                           for source, v in off.items() for name, a in zip(sets[source], v) if a["answer"] != "cannot tell"],
        "real": {
            "held_out": _summary(held, len(held)),
            "held_out_cross_fitted": {k: v for k, v in crossfit.items() if k != "refused_mask"},
            "msld_v1_only": _summary(v1, len(v1)),
            "mpox_sensitivity": {
                "probability_alone": float(said_pos[is_pos].mean()),
                "with_the_rule_shipped_thresholds": float(answered_pos[is_pos].mean()),
                "with_the_rule_cross_fitted": float((said_pos & ~crossfit["refused_mask"])[is_pos].mean()),
                "n_mpox": int(is_pos.sum())},
        },
        "scores_auroc": {name: auroc([a[name] * sign for a in real_scores], [a[name] * sign for a in all_off])
                         for name, sign in (("offtask", 1), ("max_probability", -1), ("energy", -1),
                                            ("skin_share", -1), ("sharpness", -1))},
        "degraded": {},
        "seconds": None,
        "non_finite": {name: sum(not np.isfinite(a[name]) for a in all_off + real_scores)
                       for name in ("offtask", "max_probability", "energy", "skin_share", "sharpness", "brightness")},
    }
    for name, got in degraded.items():
        same = [g["answer"] == "cannot tell" or g["answer"] == c["answer"] for g, c in zip(got, held)]
        result["degraded"][name] = {**_summary(got, len(got)), "cannot_tell_or_same_answer": float(np.mean(same)),
                                    "answered_differently": int(len(same) - sum(same)),
                                    "specificity_probability_alone": float(np.mean([g["p_positive"] < rule.screening_threshold
                                                                                    for g, p in zip(got, is_pos) if not p])),
                                    "sensitivity_probability_alone": float(np.mean([g["p_positive"] >= rule.screening_threshold
                                                                                    for g, p in zip(got, is_pos) if p]))}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["plot_data"] = {"real": [a["offtask"] for a in real_scores], "off": [a["offtask"] for a in all_off]}
    return result


def _summary(items: list[dict], n: int) -> dict:
    reasons: dict[str, int] = {}
    for a in items:
        if a["reason"]:
            reasons[a["reason"]] = reasons.get(a["reason"], 0) + 1
    return {"n": n, "cannot_tell": float(np.mean([a["answer"] == "cannot tell" for a in items])) if items else 0.0,
            "positive": float(np.mean([a["answer"] == "positive" for a in items])) if items else 0.0,
            "reasons": reasons}


def markdown(r: dict) -> str:
    rule = r["model"]["answer_rule"]
    lines = ["# Cannot tell: off-task pictures, degraded photos, false refusals", "",
             f"Model: `{Path(r['model']['file']).name}` (sha256 {r['model']['sha256'][:12]}...). Thresholds from its "
             f"metadata: min side {rule['min_side']} px, brightness >= {rule['min_brightness']:.3f}, sharpness >= "
             f"{rule['min_sharpness']:.2f}, skin share >= {rule['min_skin_share']:.3f}, "
             + (f"blockiness <= {rule['max_blockiness']:.2f}, " if rule.get("max_blockiness") is not None else "")
             + "off-task score <= "
             f"{rule['max_offtask']:.3f}; screening threshold {rule['screening_threshold']:.4f}.", "",
             "## Off-task pictures", "",
             "| source | pictures | cannot tell % | screened positive % | reasons |", "|---|---:|---:|---:|---|"]
    for source, s in r["offtask"].items():
        lines.append(f"| {source} | {s['n']} | {100 * s['cannot_tell']:.1f} | {100 * s['positive']:.1f} | "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(s["reasons"].items(), key=lambda kv: -kv[1])) + " |")
    a = r["offtask_all"]
    lines += [f"| **all** | **{a['n']}** | **{100 * a['cannot_tell']:.1f}** | **{100 * a['positive']:.1f}** | |", "",
              "Not refused: " + ("; ".join(r["offtask_missed"]) if r["offtask_missed"] else "none") + ".", "",
              "AUROC of each score, real photos (held-out + MSLD v1-only) against all off-task pictures: "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["scores_auroc"].items()) + ".", "",
              "## Real photos", "",
              "| photos | n | cannot tell % | reasons |", "|---|---:|---:|---|"]
    real = r["real"]
    for label, key in (("held-out photos of the pool (shipped thresholds; the off-task limit was set on them)", "held_out"),
                       ("held-out photos of the pool, cross-fitted (limits re-derived without each fifth)", "held_out_cross_fitted"),
                       ("MSLD v1 photos of no v2 patient, not in the pool's training set (never used)", "msld_v1_only")):
        s = real[key]
        rate = s.get("cannot_tell", s.get("rate"))
        lines.append(f"| {label} | {s['n']} | {100 * rate:.1f} | "
                     + ", ".join(f"{k}: {v}" for k, v in s["reasons"].items()) + " |")
    sens = real["mpox_sensitivity"]
    lines += ["", f"Mpox sensitivity on the {sens['n_mpox']} held-out mpox photos: {100 * sens['probability_alone']:.1f} % "
              f"on probability alone, {100 * sens['with_the_rule_shipped_thresholds']:.1f} % with the rule (shipped "
              f"thresholds), {100 * sens['with_the_rule_cross_fitted']:.1f} % with cross-fitted thresholds.", "",
              "## Degraded held-out photos", "",
              "| degradation | cannot tell % | answered, and differently from the clean photo | cannot tell or same answer % | "
              "specificity / sensitivity on probability alone % |", "|---|---:|---:|---:|---:|"]
    for name, s in r["degraded"].items():
        lines.append(f"| {name} | {100 * s['cannot_tell']:.1f} | {s['answered_differently']} | "
                     f"{100 * s['cannot_tell_or_same_answer']:.1f} | {100 * s['specificity_probability_alone']:.1f} / "
                     f"{100 * s['sensitivity_probability_alone']:.1f} |")
    lines += ["", f"Run time: {r['seconds']} s on this machine.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(0, max(max(r["plot_data"]["off"]), r["model"]["answer_rule"]["max_offtask"]) * 1.05, 60)
    a.hist(r["plot_data"]["real"], bins=bins, alpha=0.7, label="real skin photos (held-out, v1-only)", density=True)
    a.hist(r["plot_data"]["off"], bins=bins, alpha=0.6, label="off-task pictures", density=True)
    a.axvline(r["model"]["answer_rule"]["max_offtask"], color="k", ls="--", label="shipped limit")
    a.set_xlabel("off-task score (distance from the training photos' subspace)")
    a.set_ylabel("density")
    a.legend()
    names = list(r["offtask"]) + list(r["degraded"])
    values = [100 * r["offtask"][n]["cannot_tell"] for n in r["offtask"]] + \
             [100 * r["degraded"][n]["cannot_tell_or_same_answer"] for n in r["degraded"]]
    colours = ["tab:orange"] * len(r["offtask"]) + ["tab:green"] * len(r["degraded"])
    b.barh(range(len(names)), values, color=colours)
    b.set_yticks(range(len(names)), names, fontsize=8)
    b.invert_yaxis()
    b.axvline(95, color="tab:orange", ls=":")
    b.axvline(90, color="tab:green", ls=":")
    b.set_xlabel("% cannot tell (off-task, orange) / % cannot tell or same answer (degraded, green)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=bundled_model())
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "offtask")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where offtask.md/json/png go (another folder for a candidate model than the shipped one)")
    args = parser.parse_args()
    try:
        result = run(args.model, args.data.resolve(), args.work)
    except MpoxscanError as exc:  # a missing or unreadable model: one line, not a traceback
        sys.exit(f"offtask_bench: {exc}")
    args.results.mkdir(parents=True, exist_ok=True)
    plot(result, args.results / "offtask.png")
    result.pop("plot_data")
    (args.results / "offtask.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "offtask.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
