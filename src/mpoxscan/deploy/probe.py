"""A fresh process that runs `mpoxscan predict MODEL IMAGE` (the real command, in-process), then reports its own
peak memory: what `mpoxscan bench` starts to measure the cold start and the memory of a screening.

``python -m mpoxscan.deploy.probe MODEL IMAGE [THREADS]``
"""

import contextlib
import io
import json
import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (imports, session, one inference).

    Linux: VmHWM, which starts afresh at exec; ru_maxrss would also count the parent's memory that the forked child
    held before exec (a benchmark parent holding 3 GB of images made every model look 3 GB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, kilobytes elsewhere


def main() -> None:
    from mpoxscan.cli import cli

    args = ["predict", sys.argv[2], "--model", sys.argv[1], "--json"] + (["--threads", sys.argv[3]] if len(sys.argv) > 3 else [])
    answer = io.StringIO()
    with contextlib.redirect_stdout(answer):
        cli.main(args, prog_name="mpoxscan", standalone_mode=False)
    result = json.loads(answer.getvalue())["results"][0]
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "predicted": result["predicted"],
                      "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    main()
