"""``python -m mpoxscan.web.wasm``: rebuild static/resize.wasm from resize.c."""

import sys

from mpoxscan.web.wasm import build

try:
    print(f"wrote {build()}")
except RuntimeError as err:
    sys.exit(f"error: {err}")
