"""A fresh process that loads a model and screens one photo, then reports its own peak memory.

``python -m mpoxscan.deploy.probe MODEL IMAGE``: what `mpoxscan bench` starts to measure cold start and memory.
"""

import json
import resource
import sys

from mpoxscan.deploy.runtime import Screener
from mpoxscan.images import load_image


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
    screener = Screener(sys.argv[1], threads=int(sys.argv[3]) if len(sys.argv) > 3 else None)
    answer = screener.screen(load_image(sys.argv[2], min_side=screener.input_size))
    print(json.dumps({"peak_rss_mb": peak_rss_mb(),
                      "predicted": answer.predicted, "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    main()
