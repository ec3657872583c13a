"""Issue 28, item 3: the page's files on the wire. Each is served at a versioned address, precompressed once (Brotli
and gzip) when the app starts, never per request, with Content-Encoding, Vary and a year's immutable caching; the
page and the service worker name those addresses and are revalidated. The nginx recipe serves the same files
(tests/test_scale.py)."""

from __future__ import annotations

import gzip
import re

import brotli
import pytest
from fastapi.testclient import TestClient

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import assets as assets_module
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import ORT_DIST, STATIC, Settings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path_factory.mktemp("data")))
    with TestClient(app) as client:
        yield app, client


def _versioned(page: str) -> list[str]:
    return re.findall(r'"(/assets/[0-9a-f]{16}/[^"]+)"', page)


def test_the_page_names_versioned_files_that_are_served_compressed_and_cached_for_good(served):
    app, client = served
    page = client.get("/", headers={"accept-encoding": "identity"})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assert page.headers["content-type"].startswith("text/html")
    urls = _versioned(page.text)
    names = {u.rsplit("/", 1)[1] for u in urls}
    assert {"app.js", "resize.js", "answer.js", "messages.js", "outbox.js", "style.css"} <= names
    meta = re.search(r'<meta name="mpoxscan-files" content="([^"]+)">', page.text).group(1)
    assert "/assets/" in meta and "model.onnx" in meta and "en.json" in meta
    for url in urls:
        source = app.state.assets.files[url]
        assert url.split("/")[2] == assets_module.digest(source)  # the address is the content's
        plain = client.get(url, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200 and plain.content == source.read_bytes()
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" in plain.headers  # the app's security headers wrap these answers too
        if url.endswith(".png"):
            continue  # compressed already: served as is
        assert plain.headers["vary"] == "Accept-Encoding" and "content-encoding" not in plain.headers
        br = client.get(url, headers={"accept-encoding": "gzip, deflate, br"})
        assert br.headers["content-encoding"] == "br" and br.headers["vary"] == "Accept-Encoding"
        assert int(br.headers["content-length"]) < len(source.read_bytes())
        assert br.content == source.read_bytes()  # httpx decodes it: the same bytes
        gz = client.get(url, headers={"accept-encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip" and gz.content == source.read_bytes()
        refused = client.get(url, headers={"accept-encoding": "br;q=0, gzip"})
        assert refused.headers["content-encoding"] == "gzip"
    # The same file asked again with its ETag: 304, nothing sent.
    url = urls[0]
    tag = client.get(url, headers={"accept-encoding": "br"}).headers["etag"]
    assert client.get(url, headers={"accept-encoding": "br", "if-none-match": tag}).status_code == 304
    assert client.get("/assets/0123456789abcdef/app.js").status_code == 404  # no such version


@pytest.mark.skipif(not ORT_DIST.is_dir(), reason="needs onnxruntime-web (make setup runs npm ci)")
def test_the_runtime_and_the_model_go_compressed(served):
    """The 14.2 MB WebAssembly runtime was sent as is (18.48 MB for a first visit): now Brotli's copy."""
    app, client = served
    for name in ("ort/ort-wasm-simd-threaded.wasm", "model.onnx"):
        url = app.state.assets.urls[name]
        source = app.state.assets.files[url]
        head = client.get(url, headers={"accept-encoding": "br"})
        assert head.headers["content-encoding"] == "br"
        raw = source.with_name(source.name + ".br").read_bytes()
        assert brotli.decompress(raw) == source.read_bytes()
        assert gzip.decompress(source.with_name(source.name + ".gz").read_bytes()) == source.read_bytes()
        assert int(head.headers["content-length"]) == len(raw)
    wasm = app.state.assets.files[app.state.assets.urls["ort/ort-wasm-simd-threaded.wasm"]]
    assert len(wasm.with_name(wasm.name + ".br").read_bytes()) < 0.2 * wasm.stat().st_size


def test_the_service_worker_keeps_exactly_what_the_page_loads(served):
    app, client = served
    worker = client.get("/sw.js")
    assert worker.status_code == 200 and worker.headers["cache-control"] == "no-cache"
    assert "__ASSETS__" not in worker.text and "__OUTBOX__" not in worker.text
    kept = set(re.findall(r'"(/assets/[^"]+)"', worker.text))
    page = client.get("/").text
    assert set(_versioned(page)) - {app.state.assets.urls["static/icon-192.png"]} <= kept
    for name in ("model.onnx", "ort/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.wasm",
                 *(f"static/locales/{c}.json" for c in ("en", "fr", "pt", "es", "sw"))):
        if name.startswith("ort/") and not ORT_DIST.is_dir():
            continue
        assert app.state.assets.urls[name] in kept, name
    assert f'importScripts("{app.state.assets.urls["static/outbox.js"]}")' in worker.text
    assert app.state.assets.version in worker.text  # the cache's name: the page and the worker's versions


def test_files_are_compressed_once_at_start_never_per_request(tmp_path, monkeypatch):
    """A fresh folder: the first start writes each file with its .br and .gz (readable by a proxy); a second start
    and every request write nothing (compress is not called again); a changed file gets a new address and the
    old one stays valid for pages already open. A build interrupted half-way leaves no half file in place."""
    calls = []
    real = assets_module.compress
    monkeypatch.setattr(assets_module, "ORT_DIST", tmp_path / "no-runtime")  # the runtime is tested above
    monkeypatch.setattr(assets_module, "compress", lambda path: calls.append(path.name) or real(path))
    folder = tmp_path / "assets"
    model = tmp_path / "model.onnx"
    model.write_bytes(bundled_model().read_bytes())
    first = assets_module.build_assets(model, folder)
    assert len(calls) == len(first.files)  # every file once, the page and the worker included
    for url, path in first.files.items():
        assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o644"
        if not path.suffix == ".png":
            assert path.with_name(path.name + ".br").is_file() and path.with_name(path.name + ".gz").is_file()
    calls.clear()
    again = assets_module.build_assets(model, folder)
    assert calls == [] and again.files == first.files and again.version == first.version
    app = create_app(Settings(model=model, data_dir=tmp_path / "data", assets_dir=folder))
    with TestClient(app) as client:
        for url in app.state.assets.files:
            client.get(url, headers={"accept-encoding": "br"})
    assert calls == []
    # A new model: a new address, a new version; the old file stays where it was.
    model.write_bytes(model.read_bytes() + b"\0")
    changed = assets_module.build_assets(model, folder)
    assert changed.urls["model.onnx"] != first.urls["model.onnx"] and changed.version != first.version
    assert first.files[first.urls["model.onnx"]].is_file()
    assert not list(folder.glob(".building-*"))  # no temporary folder left behind

    def fails(path):
        raise OSError("disk full")

    monkeypatch.setattr(assets_module, "compress", fails)
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(OSError):
        assets_module.build_assets(model, folder)
    assert not (folder / assets_module.digest(model) / "model.onnx").exists()  # no file without its copies
    assert not list(folder.glob(".building-*"))


def test_the_server_s_own_pages_load_versioned_files(served):
    """The follow-up page and the dashboard link the style sheet and their scripts at versioned addresses too."""
    _app, client = served
    missing = client.get("/c/not-a-token").text
    assert re.search(r'href="/assets/[0-9a-f]{16}/style.css"', missing)
    assert re.search(r'src="/assets/[0-9a-f]{16}/followup.js"', missing)
    assert f'href="{assets_module.static_url("style.css")}"' in missing
    assert assets_module.static_url("style.css").endswith("/" + "style.css")
    assert (STATIC / "style.css").read_bytes() == client.get(assets_module.static_url("style.css")).content


def test_serve_says_in_one_line_when_it_cannot_write_the_compressed_files(tmp_path):
    from click.testing import CliRunner

    from mpoxscan.cli import cli

    (tmp_path / "a-file").write_text("x")
    r = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "data"),
                                 "--assets-dir", str(tmp_path / "a-file" / "assets")])
    assert r.exit_code == 1 and r.output.startswith("error: cannot write the page's compressed files into")
    assert "Traceback" not in r.output
