"""Technical validation of the explanations (`mpoxscan explain --validate`): numbers, not pictures.

- Model randomisation (Adebayo et al., 2018): Grad-CAM of the trained network against Grad-CAM after re-initialising
  its top layers, cascading downwards; a map that follows the model changes (low rank correlation).
- Deletion and insertion (Petsiuk et al., 2018): remove (or reveal) pixels in the map's order and follow the class
  probability; a faithful map makes it fall fast (low deletion AUC) and rise fast (high insertion AUC). Compared
  with a random order and with a centre prior (a Gaussian centred on the photo).
- Where the map falls: its share in the centre and in the border band, against the share of the area.
- On-device maps: the exported model's ``cam`` output against captum's Grad-CAM on the PyTorch model.
"""

from __future__ import annotations

import copy

import numpy as np

from mpoxscan.explain.attribution import gradcam_maps


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float(np.ptp(a) == np.ptp(b))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(np.nanmean(v)), "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def randomisation_levels(model) -> dict[str, list]:
    """Cascading re-initialisation, top first: the classifier; + the head and the last block; + the last 5 blocks."""
    n = model.num_blocks
    return {"classifier": [model.get_classifier()],
            "classifier + last block": [model.get_classifier(), *model.modules_from(n - 1)],
            "classifier + last 5 blocks": [model.get_classifier(), *model.modules_from(max(0, n - 5))]}


def sanity_check(model, x, targets, seed: int = 0) -> dict:
    """Mean rank correlation between the trained model's Grad-CAM and the randomised models' Grad-CAM."""
    import torch

    trained = gradcam_maps(model, x, targets).detach().numpy()
    out = {}
    for level in randomisation_levels(model):
        torch.manual_seed(seed)
        clone = copy.deepcopy(model)
        for module in randomisation_levels(clone)[level]:
            for m in module.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
        random_maps = gradcam_maps(clone.eval(), x, targets).detach().numpy()
        out[level] = _stats([_spearman(a, b) for a, b in zip(trained, random_maps)])
    return out


def centre_prior(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    c, s = (size - 1) / 2, size / 4
    return np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * s * s)).astype(np.float32)


def _blur(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, 8, 8))


def deletion_insertion(predict, image: np.ndarray, heat: np.ndarray, target: int, steps: int = 16,
                       patch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(deletion curve, insertion curve): the probability of ``target`` as pixels of one preprocessed image
    (3, S, S) are removed, or revealed, in the order given by ``heat`` (``steps + 1`` points from 0 to 100 %).

    ``predict`` maps a batch (N, 3, S, S) to probabilities. Deleted pixels become 0 (the normalised mean colour);
    insertion starts from a heavily blurred copy (Petsiuk et al.'s choices). With ``patch`` > 1 whole squares of
    that side are removed together, ranked by their mean heat: a random order then no longer sprinkles isolated
    grey pixels, which a CNN reads as noise and which make pixel-wise random deletion an unfairly strong baseline."""
    size = image.shape[-1]
    if patch > 1:
        cells = -(-size // patch)
        padded = np.pad(heat, ((0, cells * patch - size), (0, cells * patch - size)), mode="edge")
        cell_heat = padded.reshape(cells, patch, cells, patch).mean((1, 3))
        # Each pixel inherits its cell's rank; ties inside a cell keep pixel order, so cells are removed whole.
        rank = np.argsort(np.argsort(-cell_heat.ravel(), kind="stable"), kind="stable").reshape(cells, cells)
        heat = -np.kron(rank, np.ones((patch, patch)))[:size, :size]
    order = np.argsort(-heat.ravel(), kind="stable")
    blurred = _blur(image)
    batch_del, batch_ins = [], []
    for k in range(steps + 1):
        mask = np.zeros(size * size, bool)
        mask[order[: round(k / steps * size * size)]] = True
        mask = mask.reshape(size, size)
        batch_del.append(np.where(mask, 0.0, image))
        batch_ins.append(np.where(mask, image, blurred))
    p = predict(np.stack(batch_del + batch_ins).astype(np.float32))[:, target]
    return p[: steps + 1], p[steps + 1:]


def auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, np.linspace(0, 1, len(curve))))


def location_shares(heat: np.ndarray) -> dict:
    """Share of the map's mass in the central square (half the side) and in the border band (outer eighth)."""
    size = heat.shape[-1]
    total = float(heat.sum()) or 1.0
    q, e = size // 4, size // 8
    centre = float(heat[q:size - q, q:size - q].sum()) / total
    inner = float(heat[e:size - e, e:size - e].sum()) / total
    return {"centre": centre, "border": 1 - inner}


def area_shares(size: int) -> dict:
    q, e = size // 4, size // 8
    return {"centre": (size - 2 * q) ** 2 / size**2, "border": 1 - (size - 2 * e) ** 2 / size**2}


def validate(checkpoint, manifest, out, onnx_files=(), limit: int | None = None, seed: int = 0,
             progress: bool = True) -> dict:
    """Every check above on the checkpoint's held-out images; writes ``validation.json``, ``validation.md`` and
    ``validation.png`` to ``out`` and returns the numbers."""
    import json
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from mpoxscan.deploy.export import checkpoint_split, preprocessed, to_onnx_fp32
    from mpoxscan.deploy.runtime import Screener
    from mpoxscan.explain.attribution import attribute
    from mpoxscan.models.checkpoint import load_checkpoint

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, card = load_checkpoint(checkpoint)
    rows, split, unseen = checkpoint_split(manifest, card)
    indices = split.valid[:limit] if limit else split.valid
    x = preprocessed(rows, indices, card)
    size = x.shape[-1]
    reference = Screener(to_onnx_fp32(model, card).SerializeToString())
    predict = lambda batch: np.concatenate([reference.run(batch[k:k + 34])["probabilities"] for k in range(0, len(batch), 34)])  # noqa: E731
    targets = predict(x).argmax(1)
    rng = np.random.default_rng(seed)
    results: dict = {"checkpoint": str(checkpoint), "images": len(indices), "held_out_is_unseen": unseen,
                     "architecture": card["architecture"], "strategy": card["strategy"]}

    sanity, cams, heats = [], [], []
    for k in tqdm(range(0, len(x), 16), desc="Grad-CAM and randomisation", unit="batch", disable=not progress):
        xb, tb = torch.from_numpy(x[k:k + 16]), torch.from_numpy(targets[k:k + 16])
        sanity.append((len(xb), sanity_check(model, xb, tb, seed)))
        cams.append(gradcam_maps(model, xb, tb).detach().numpy())
        heats.append(attribute(model, xb, tb.tolist(), "gradcam"))
    cams, heats = np.concatenate(cams), np.concatenate(heats)
    results["randomisation"] = {level: {"mean_spearman": float(sum(n * s[level]["mean"] for n, s in sanity) / len(x))}
                                for level in sanity[0][1]}

    orders = {"grad-cam": lambda i: heats[i], "random": lambda i: rng.random((size, size)),
              "centre prior": lambda i: centre_prior(size)}
    all_curves: dict = {}
    for patch in (1, 16):  # pixel by pixel (Petsiuk et al.), and 16-pixel squares (a fairer random baseline)
        curves: dict = {name: {"deletion": [], "insertion": []} for name in orders}
        for i in tqdm(range(len(x)), desc=f"deletion / insertion ({patch} px)", unit="img", disable=not progress):
            for name, heat in orders.items():
                d, ins = deletion_insertion(predict, x[i], heat(i), int(targets[i]), patch=patch)
                curves[name]["deletion"].append(d)
                curves[name]["insertion"].append(ins)
        all_curves[patch] = curves
        results["deletion_insertion" if patch == 1 else f"deletion_insertion_{patch}px"] = {
            name: {kind: _stats([auc(c) for c in v[kind]]) for kind in ("deletion", "insertion")} for name, v in curves.items()}
    curves = all_curves
    shares = [location_shares(h) for h in heats]
    results["location"] = {"grad-cam": {k: _stats([s[k] for s in shares]) for k in ("centre", "border")},
                           "area": area_shares(size), "centre prior": location_shares(centre_prior(size))}

    on_device = {"fp32 (in memory)": reference}
    for f in onnx_files:
        on_device[f"{Path(f).parent.name}/{Path(f).name}"] = Screener(f)
    results["on_device_cam"] = {}
    for name, screener in on_device.items():
        got = np.concatenate([screener.run(x[k:k + 32])["cam"] for k in range(0, len(x), 32)])
        same = [k for k in range(len(x)) if screener.run(x[k:k + 1])["probabilities"].argmax() == targets[k]]
        corr = [_pearson(got[k], cams[k]) for k in same]
        results["on_device_cam"][name] = {"pearson_with_captum_gradcam": _stats(corr),
                                          "min": float(np.min(corr)) if corr else float("nan"),
                                          "images_same_answer": len(same)}
    results["cam_latency"] = cam_overhead(model, card)
    (out / "validation.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot_curves(curves, out / "validation.png")
    (out / "validation.md").write_text(markdown(results))
    return results


def cam_overhead(model, card: dict, runs: int = 60) -> dict:
    """Median one-image latency (1 thread, fp32 ONNX Runtime) with and without the ``cam`` output."""
    from mpoxscan.deploy.bench import latencies
    from mpoxscan.deploy.export import to_onnx_fp32
    from mpoxscan.deploy.runtime import Screener

    size = card["preprocessing"]["input_size"]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    timing = {}
    for name, cam in (("without_cam", False), ("with_cam", True)):
        s = Screener(to_onnx_fp32(model, card, cam=cam).SerializeToString(), threads=1)
        timing[name] = float(np.median(latencies(s, x, runs, warmup=5)) * 1000)
    timing["overhead_percent"] = 100 * (timing["with_cam"] / timing["without_cam"] - 1)
    return timing


def _plot_curves(curves_by_patch: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves_by_patch), 2, figsize=(10, 4 * len(curves_by_patch)), squeeze=False)
    for row, (patch, curves) in zip(axes, curves_by_patch.items()):
        for ax, kind in zip(row, ("deletion", "insertion")):
            for name, v in curves.items():
                mean = np.mean(v[kind], axis=0)
                ax.plot(np.linspace(0, 100, len(mean)), mean, label=f"{name} (AUC {auc(mean):.3f})")
            ax.set_xlabel(f"pixels {'removed' if kind == 'deletion' else 'revealed'} (%)")
            ax.set_ylabel("probability of the predicted class")
            ax.set_title(f"{kind}, {'pixel by pixel' if patch == 1 else f'{patch}-pixel squares'}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    f = lambda s: f"{s['mean']:.3f} ± {s['sd']:.3f}"  # noqa: E731
    lines = [f"# Explanation validation: {r['architecture']} ({r['strategy']})", "",
             f"{r['images']} held-out images (unseen by the weights: {r['held_out_is_unseen']}); maps for the predicted class.", "",
             "## Model randomisation (Spearman rank correlation, trained vs re-initialised)", "",
             "| re-initialised | mean rank correlation |", "|---|---:|"]
    lines += [f"| {k} | {v['mean_spearman']:.3f} |" for k, v in r["randomisation"].items()]
    lines += ["", "## Deletion and insertion (area under the probability curve)", "",
              "| pixel order | deletion AUC (lower is better) | insertion AUC (higher is better) |", "|---|---:|---:|"]
    lines += [f"| {k} | {f(v['deletion'])} | {f(v['insertion'])} |" for k, v in r["deletion_insertion"].items()]
    if "deletion_insertion_16px" in r:
        lines += ["", "The same with 16-pixel squares removed or revealed together (a random order of single pixels "
                  "sprinkles grey noise, which a CNN reads as a strong change whatever the pixels' content):", "",
                  "| square order | deletion AUC (lower is better) | insertion AUC (higher is better) |", "|---|---:|---:|"]
        lines += [f"| {k} | {f(v['deletion'])} | {f(v['insertion'])} |" for k, v in r["deletion_insertion_16px"].items()]
    loc = r["location"]
    lines += ["", "## Where the maps fall (share of the map's mass)", "", "| | centre (middle half) | border (outer eighth) |",
              "|---|---:|---:|", f"| Grad-CAM | {f(loc['grad-cam']['centre'])} | {f(loc['grad-cam']['border'])} |",
              f"| share of the area | {loc['area']['centre']:.3f} | {loc['area']['border']:.3f} |",
              f"| centre prior | {loc['centre prior']['centre']:.3f} | {loc['centre prior']['border']:.3f} |",
              "", "## On-device maps (the exported model's `cam` output vs captum Grad-CAM on the PyTorch model)", "",
              "| model file | Pearson r, mean ± sd | min | images |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {f(v['pearson_with_captum_gradcam'])} | {v['min']:.4f} | {v['images_same_answer']} |"
              for k, v in r["on_device_cam"].items()]
    c = r["cam_latency"]
    lines += ["", f"CAM output latency (fp32, 1 thread, median): {c['without_cam']:.1f} ms without, {c['with_cam']:.1f} ms "
              f"with: {c['overhead_percent']:+.1f} %.", "", "![deletion and insertion curves](validation.png)", ""]
    return "\n".join(lines)
