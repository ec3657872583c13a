"""Issue 30, part 5 (the simulation's first half): photos sent as cases through the real API with both consents,
concluded by a simulated expert with their true label (a share "unsure" instead), and exported for curate.

    .venv/bin/python benchmarks/expert_loop_bench.py --source FOLDER --out DIR [--unsure-share 0.05] [--limit N]
                                                      [--model FILE] [--seed 0]

FOLDER holds ``<class>/<photo>`` like any curate source (e.g. a public source held out of training); every class
must be one of the served model's (--model, default the bundled one). The app runs on a real uvicorn server thread
(``mpoxscan.web.testing.ServerThread``) on a fresh SQLite database and photo folder. For each photo, the person's side
asks /api/screen (as a phone without WebAssembly would) and posts /api/cases with the consent to send and the
training consent; the expert signs in at /expert/login and concludes each case at /expert/cases/<number>/answer with
the photo's true class as the label (``unsure_share`` of them, drawn with ``seed``, "unsure": never exported). Then
``mpoxscan cases export`` writes DIR. Beside DIR, ``DIR.mapping.csv`` says which photo became which exported case
(export id), so that a test set can be checked to share no group with any exported case.

Results: benchmarks/results/expert_loop/expert_loop.json (counts and seconds per step). The training steps that use
the export (25 / 50 / 100 %) are the lead's (issue 30, parts 4 and 5).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "expert_loop"
EXPERT = "simulated-expert@example.org"
PASSWORD = "simulated expert password"


def _verdict(label: str, positive_class: str) -> str:
    """What the simulated expert tells the person: the conclusion follows the label."""
    if label == "unsure":
        return "see-health-worker"
    return "likely-mpox" if label == positive_class else "unlikely-mpox"


def simulate(pairs: Sequence[tuple[Path, str]], out: Path, *, unsure_share: float = 0.05, seed: int = 0,
             model: Path | None = None, work: Path | None = None, timings: dict | None = None) -> Path:
    """Send each (photo path, true class) as a case through the real API with both consents, conclude each with its
    true class (round(unsure_share * n) of them, drawn with ``seed``, "unsure"), export, and return the exported
    folder ``out``. ``work``: where the server's data folder goes (a temporary one by default); ``timings``: filled
    with the seconds each step took and the counts."""
    import httpx

    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app
    from mpoxscan.web.cases import add_expert, case_by_number
    from mpoxscan.web.security import export_id
    from mpoxscan.web.settings import Settings
    from mpoxscan.web.testing import ServerThread
    from mpoxscan.web.training_export import export_cases

    if not 0 <= unsure_share <= 1:
        raise ValueError("unsure_share must lie in [0, 1]")
    timings = {} if timings is None else timings
    scratch = tempfile.TemporaryDirectory(prefix="expert-loop-") if work is None else None
    data = Path(scratch.name if scratch else work) / "data"
    unlimited = "1000000/hour"
    app = create_app(Settings(model=model or bundled_model(), data_dir=data, upload_limit=unlimited,
                              screen_limit=unlimited, login_limit=unlimited))
    rng = random.Random(seed)
    unsure = set(rng.sample(range(len(pairs)), round(unsure_share * len(pairs))))
    try:
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=120) as person, \
                httpx.Client(base_url=server.url, timeout=120) as expert:
            with app.state.sessions() as db:
                add_expert(db, EXPERT, PASSWORD)
            info = person.get("/api/model").raise_for_status().json()
            unknown = sorted({label for _path, label in pairs} - set(info["classes"]))
            if unknown:
                raise ValueError(f"classes the served model does not have: {', '.join(unknown)} (its classes: "
                                 f"{', '.join(info['classes'])}; --model picks another)")
            start = time.perf_counter()
            sent = []
            for path, label in pairs:
                photo = Path(path).read_bytes()
                files = {"photo": ("photo", photo, "application/octet-stream")}
                screened = person.post("/api/screen", files=files).raise_for_status().json()
                form = {"consent": "true", "training_consent": "true", "computed": "server",
                        "probabilities": json.dumps(screened["probabilities"]), "model_sha256": info["sha256"],
                        "language": "en"}
                case = person.post("/api/cases", data=form, files=files).raise_for_status().json()
                sent.append((path, label, case["number"]))
            timings["send_s"] = time.perf_counter() - start

            start = time.perf_counter()
            login = expert.post("/expert/login", data={"email": EXPERT, "password": PASSWORD})
            if login.status_code != 303 and not login.is_success:
                raise RuntimeError(f"the simulated expert could not sign in ({login.status_code})")
            for k, (_path, label, number) in enumerate(sent):
                given = "unsure" if k in unsure else label
                r = expert.post(f"/expert/cases/{number}/answer", data={
                    "verdict": _verdict(given, info["positive_class"]), "label": given})
                if r.status_code != 303:
                    raise RuntimeError(f"the answer to case {k} was refused ({r.status_code}): {r.text[:200]}")
            timings["conclude_s"] = time.perf_counter() - start

            start = time.perf_counter()
            with app.state.sessions() as db:
                report = export_cases(db, app.state.photos, out)
                ids = {number: export_id(number, case_by_number(db, number).token_hash) for *_, number in sent}
            timings["export_s"] = time.perf_counter() - start
        with open(Path(f"{out}.mapping.csv"), "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "true_class", "label_given", "export_id", "exported"])
            for k, (path, label, number) in enumerate(sent):
                writer.writerow([str(path), label, "unsure" if k in unsure else label, ids[number], k not in unsure])
        timings.update(cases=len(sent), unsure=len(unsure), exported_cases=report.cases,
                       exported_photos=report.photos, by_class=report.by_class)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return Path(out)


def source_pairs(folder: Path, limit: int | None = None, seed: int = 0) -> list[tuple[Path, str]]:
    """(photo, class) for every image of a ``<class>/<photo>`` folder (a random ``limit`` of them, by ``seed``)."""
    from mpoxscan.images import IMAGE_SUFFIXES

    pairs = [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))
             for p in sorted(d.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if limit is not None and limit < len(pairs):
        pairs = sorted(random.Random(seed).sample(pairs, limit))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a folder of <class>/<photo>")
    parser.add_argument("--out", type=Path, required=True, help="the export folder (new, or an earlier export's)")
    parser.add_argument("--unsure-share", type=float, default=0.05)
    parser.add_argument("--limit", type=int, help="send a random LIMIT of the photos only")
    parser.add_argument("--model", type=Path, help="the model the app serves (its classes are the labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = source_pairs(args.source, args.limit, args.seed)
    timings: dict = {}
    simulate(pairs, args.out, unsure_share=args.unsure_share, seed=args.seed, model=args.model, timings=timings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"source": str(args.source), "out": str(args.out), "unsure_share": args.unsure_share, "seed": args.seed,
              "model": str(args.model or "bundled"), "machine": platform.node(), "python": sys.version.split()[0],
              **timings}
    (RESULTS / "expert_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
