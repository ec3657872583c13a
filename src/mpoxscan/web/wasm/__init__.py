"""The phone page's WebAssembly kernels, built from C (resize.c) with the clang of PyPI's ``ziglang`` (the dev
extra): ``make wasm``, or ``python -m mpoxscan.web.wasm``. The built file (static/resize.wasm) is committed, so that
neither a user nor a server needs a compiler; the build is deterministic (no names, no time stamps), which lets the
tests check that the committed file is this source's build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mpoxscan.web.settings import STATIC

SOURCE = Path(__file__).with_name("resize.c")
TARGET = STATIC / "resize.wasm"
#: wasm32 without an operating system, 128-bit SIMD (every browser that runs ONNX Runtime Web's SIMD build has it),
#: no C library, no start function; stripped of names (smaller and byte-for-byte reproducible). __heap_base tells the
#: page where its own buffers may start.
FLAGS = ("--target=wasm32-freestanding", "-O3", "-msimd128", "-nostdlib", "-Wl,--no-entry", "-Wl,--strip-all",
         "-Wl,--export=__heap_base")


def build(source: Path = SOURCE, target: Path = TARGET) -> Path:
    """Compile ``source`` to ``target``; a missing compiler or a compile error raises RuntimeError with its text."""
    try:
        import ziglang  # noqa: F401  (only to say clearly what is missing)
    except ImportError as err:
        raise RuntimeError("the WebAssembly build needs PyPI's ziglang (pip install -e '.[dev]')") from err
    done = subprocess.run([sys.executable, "-m", "ziglang", "cc", *FLAGS, "-o", str(target), str(source)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"zig cc failed on {source.name}: {done.stderr.strip()}")
    target.chmod(0o644)  # a file served, not run
    return target

