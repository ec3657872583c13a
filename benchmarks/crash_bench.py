"""Crash test of the case store (issue 14): concurrent submissions, `kill -9` mid-way, restart; what was lost and
what was left behind.

    .venv/bin/python benchmarks/crash_bench.py [--cases 50] [--rounds 3] [--kill-after 25]

Starts `mpoxscan serve` as its own process on SQLite (a fresh data folder, the upload limit raised), posts CASES
distinct photo-sized JPEGs at once (the phone page's request: a multipart form, the photo as its file), and `kill -9`s the server
as soon as KILL_AFTER have answered 201. Then it restarts the server (its start-up sweep runs before it answers) and
reads the database and the photo folder back: every 201 must be stored with its own photo (the stored file's sha256
is what the server makes of that sender's photo: metadata stripped, re-encoded), and no file may lack its case.
ROUNDS times on the same data folder. Results: benchmarks/results/web/crash.json and crash.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "web"


def main() -> None:
    from mpoxscan.web.crashtest import ServeProcess, check_store, crash_round, photo_folder_census

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=25, help="kill -9 once this many have answered 201")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mpoxscan-crash-"))
    server = ServeProcess(data).start()
    rounds, accepted = [], []
    try:
        for k in range(args.rounds):
            cases_before = check_store(data, [])["cases"]
            r = crash_round(server, list(range(10_000 * k, 10_000 * k + args.cases)), args.kill_after)
            accepted += r.accepted
            before = photo_folder_census(data)
            t0 = time.perf_counter()
            server = ServeProcess(data).start()
            restart_s = time.perf_counter() - t0
            found = check_store(data, accepted)
            round_accepted = len(r.accepted)
            row = {"round": k + 1, "sent": args.cases, "answered_2xx": round_accepted,
                   "no_answer": sum(s.status is None for s in r.submissions),
                   "other_answers": sorted({s.status for s in r.submissions if s.status not in (None, 201)}),
                   "killed_after_2xx": r.killed_after,
                   "stored_without_answer": found["cases"] - cases_before - round_accepted,
                   "files_before_sweep": before["files"], "part_files_before_sweep": before["part"],
                   "unowned_before_sweep": before["files"] - found["cases"],
                   "lost_2xx_cases": len(found["lost"]), "wrong_photo": len(found["wrong_photo"]),
                   "orphans_after_sweep": len(found["orphans"]), "part_after_sweep": len(found["part"]),
                   "cases_without_photo": len(found["missing_photo"]),
                   "round_s": round(r.seconds, 2), "restart_with_sweep_s": round(restart_s, 2)}
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    total = {key: sum(r[key] for r in rounds) for key in
             ("answered_2xx", "no_answer", "stored_without_answer", "unowned_before_sweep", "part_files_before_sweep",
              "lost_2xx_cases", "wrong_photo", "orphans_after_sweep", "part_after_sweep", "cases_without_photo")}
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crash.json").write_text(json.dumps({"machine": machine, "cases": args.cases, "rounds": rounds,
                                                    "kill_after": args.kill_after, "total": total}, indent=1) + "\n")
    lines = [f"# Crash test: {args.rounds} rounds of {args.cases} concurrent submissions, `kill -9` mid-way", "",
             f"`.venv/bin/python benchmarks/crash_bench.py` on {machine['cpus']} CPUs, SQLite, one `mpoxscan serve` "
             f"process killed (SIGKILL) once {args.kill_after} submissions had answered 201, then restarted; its "
             "start-up sweep runs before it answers. A 2xx case is lost when its number is missing after the restart "
             "or holds another photo than its sender's (sha256 of what the server stores for it).", "",
             "| round | answered 201 | no answer (cut by the kill) | stored, sender got no answer | files left by the "
             "kill (unowned, of them .part) | **2xx cases lost** | wrong photo | **orphan files after the sweep** | "
             ".part after | cases without photo | restart with sweep |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r['round']} | {r['answered_2xx']} | {r['no_answer']} | {r['stored_without_answer']} | "
                     f"{r['unowned_before_sweep']} ({r['part_files_before_sweep']}) | **{r['lost_2xx_cases']}** | "
                     f"{r['wrong_photo']} | **{r['orphans_after_sweep']}** | {r['part_after_sweep']} | "
                     f"{r['cases_without_photo']} | {r['restart_with_sweep_s']:.1f} s |")
    t = total
    lines.append(f"| all | {t['answered_2xx']} | {t['no_answer']} | {t['stored_without_answer']} | "
                 f"{t['unowned_before_sweep']} ({t['part_files_before_sweep']}) | **{t['lost_2xx_cases']}** | "
                 f"{t['wrong_photo']} | **{t['orphans_after_sweep']}** | {t['part_after_sweep']} | "
                 f"{t['cases_without_photo']} | |")
    lines += ["", "Aims (issue 14): 0 lost 2xx cases, 0 orphan files after the start-up sweep. \"Stored, sender got no "
              "answer\": the case row was committed but the kill came before the answer left; unavoidable for any "
              "server (the person sees an error and may send again; the case waits for the expert as usual). The "
              "files the kill left are photos written (fsynced, renamed) whose case row was not committed yet, and "
              "half-written `.part` files; the sweep removes them because no other server process held the photo "
              "folder's lock (mpoxscan.web.store).", ""]
    (RESULTS / "crash.md").write_text("\n".join(lines))
    print((RESULTS / "crash.md").read_text())


if __name__ == "__main__":
    main()
