"""The phone page's WebAssembly kernels (src/mpoxscan/web/wasm/): the committed build is the source's build. Their
arithmetic is tested in the browser, pixel for pixel against Pillow (test_web.py, the page cuts the network input)."""

from __future__ import annotations

import pytest

from mpoxscan.web import wasm


def test_the_committed_resize_wasm_is_the_build_of_resize_c(tmp_path):
    built = wasm.build(target=tmp_path / "resize.wasm")
    assert built.read_bytes()[:4] == b"\0asm"
    assert built.read_bytes() == wasm.TARGET.read_bytes(), "static/resize.wasm is stale: run `make wasm`"


def test_a_compile_error_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("int f(void) { return missing; }\n")
    with pytest.raises(RuntimeError, match="zig cc failed on broken.c:.*missing"):
        wasm.build(broken, tmp_path / "broken.wasm")
    assert not (tmp_path / "broken.wasm").exists()
