"""A fresh process that loads a model and screens one photo, then reports its own peak memory.

``python -m mpoxscan.deploy.probe MODEL IMAGE``: what `mpoxscan bench` starts to measure cold start and memory.
"""

import json
import resource
import sys

from mpoxscan.deploy.runtime import Screener
from mpoxscan.images import load_image


def main() -> None:
    screener = Screener(sys.argv[1], threads=int(sys.argv[3]) if len(sys.argv) > 3 else None)
    answer = screener.screen(load_image(sys.argv[2], min_side=screener.input_size))
    # ru_maxrss is in kilobytes on Linux; the process's whole life (imports, session, one inference) is included.
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "predicted": answer.predicted, "torch_imported": "torch" in sys.modules}))


if __name__ == "__main__":
    main()
