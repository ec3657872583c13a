"""The phone page's files on the wire: versioned, precompressed, cached for good.

Each file the page loads (scripts, styles, catalogues, the ONNX Runtime Web files, the model) is served at
``/assets/<digest>/<name>``, where ``<digest>`` is the start of its content's sha256: a new version is a new
address, so every such answer may be cached by the browser for a year as immutable. Beside each file lie its Brotli
(``.br``) and gzip (``.gz``) copies, made once, when the app starts and finds them missing (never per request),
in a folder shared by every worker and readable by a reverse proxy (``serve --assets-dir``; nginx's
``gzip_static`` / ``brotli_static`` serve the same files: deploy/nginx-mpoxscan.conf). The page itself (``/``) and
the service worker (``/sw.js``) are rendered once with those addresses and precompressed the same way, but are
revalidated on every visit (a new version must reach the phone).

Writes are crash- and race-safe: each digest's folder is built under a temporary name and renamed into place, so a
reader (another worker, nginx) sees a complete folder or none.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from mpoxscan.web.settings import ORT_DIST, STATIC

#: The environment variable that moves the default folder (``serve --assets-dir`` sets it for the workers too).
ASSETS_ENV = "MPOXSCAN_ASSETS_DIR"
#: The page's own files (under static/), each served at a versioned address.
PAGE_FILES = ("app.js", "resize.js", "resize.wasm", "answer.js", "messages.js", "outbox.js", "style.css", "manifest.webmanifest",
              "icon.svg", "icon-192.png", "followup.js", "queue.js")
#: ONNX Runtime Web: the script the page loads, and the module and WebAssembly binary it loads itself.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
#: Already compressed: not worth a second pass.
STORED_AS_IS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico")
#: Brotli's best quality, except for model weights. Measured on this repository's files (benchmarks/results/web/
#: wire.md): the 14.2 MB WebAssembly runtime shrinks to 2.36 MB at quality 11 and 2.69 MB at 9 (32 s against
#: 1.5 s, once per version); the 6.9 MB fp16 model to 5.99 MB at 11 and 6.27 MB at 9 (16 s against 0.24 s, for
#: every model a server is given: weights barely compress).
BROTLI_QUALITY = 11
BROTLI_QUALITY_WEIGHTS = 9
#: A compressed copy is kept only when it saves at least this share (nginx and the app then serve the file as is).
MIN_SAVING = 0.05
DIGEST_CHARS = 16
#: Revalidated on every visit: the page and the service worker name the current versions.
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


def default_assets_dir() -> Path:
    """$MPOXSCAN_ASSETS_DIR, else the user's cache folder (XDG): shared by every data folder on this machine, since
    a file's address depends on its content only."""
    if os.environ.get(ASSETS_ENV):
        return Path(os.environ[ASSETS_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mpoxscan" / "assets"


@cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()[:DIGEST_CHARS]


def digest(path: Path) -> str:
    """The start of the file's sha256 (remembered while the file keeps its size and time)."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


def static_url(name: str) -> str:
    """The versioned address of a file of static/ (e.g. "style.css"), for the server's own pages."""
    return f"/assets/{digest(STATIC / name)}/{Path(name).name}"


def compress(path: Path) -> list[Path]:
    """Write ``path``.br and ``path``.gz beside ``path`` where they save at least MIN_SAVING (never for formats that
    are compressed already). Deterministic: the same file gives the same bytes (gzip's time stamp is 0)."""
    import brotli

    if path.suffix.lower() in STORED_AS_IS:
        return []
    data = path.read_bytes()
    quality = BROTLI_QUALITY_WEIGHTS if path.suffix == ".onnx" else BROTLI_QUALITY
    written = []
    for suffix, packed in ((".br", lambda: brotli.compress(data, quality=quality)),
                           (".gz", lambda: gzip.compress(data, compresslevel=9, mtime=0))):
        body = packed()
        if len(body) <= (1 - MIN_SAVING) * len(data):
            target = path.with_name(path.name + suffix)
            target.write_bytes(body)
            written.append(target)
    return written


def _publish(folder: Path, key: str, name: str, write: Callable[[Path], None]) -> Path:
    """``folder/key/name`` with its compressed copies: written and compressed in a temporary folder, then each
    renamed into place, the copies before the file itself, so that whoever finds the file finds its copies too
    (another process building the same file renames the same bytes over them: no harm). Nothing is done when the
    file is there already."""
    final = folder / key / name
    if final.is_file():
        return final
    building = folder / f".building-{uuid.uuid4().hex}"
    building.mkdir(parents=True)
    try:
        write(building / name)
        copies = compress(building / name)
        final.parent.mkdir(exist_ok=True)
        os.chmod(final.parent, 0o755)  # read by a reverse proxy running as another user
        for part in (*copies, building / name):
            os.chmod(part, 0o644)
            os.replace(part, final.parent / part.name)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


@dataclass
class Assets:
    """What the app serves from the assets folder: ``urls`` maps a file's name (``static/app.js``, ``ort/...``,
    ``model.onnx``) to its versioned address, ``files`` maps each address the app serves (the versioned ones, ``/``
    and ``/sw.js``) to the file on disk; ``version`` names the whole set (the offline cache's name)."""

    folder: Path
    urls: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    version: str = ""

    def add(self, name: str, source: Path) -> str:
        key = digest(source)
        path = _publish(self.folder, key, source.name, lambda target: shutil.copyfile(source, target))
        url = f"/assets/{key}/{source.name}"
        self.urls[name], self.files[url] = url, path
        return url

    def add_rendered(self, url: str, name: str, text: str) -> Path:
        data = text.encode("utf-8")
        key = hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
        path = _publish(self.folder, key, name, lambda target: target.write_bytes(data))
        self.files[url] = path
        return path

    def offline(self) -> list[str]:
        """What the service worker keeps for offline use: the page, the model's description and every versioned
        file the phone page loads (not the follow-up page's or the dashboard's)."""
        kept = [u for n, u in self.urls.items() if not n.endswith(("followup.js", "queue.js"))]
        return ["/", "/api/model", *kept]

    def page_files(self) -> dict:
        """The addresses the page's scripts load themselves (the model, ONNX Runtime's module and binary, the
        resize's kernels, the catalogues), handed to them in the page (index.html's <meta name="mpoxscan-files">)."""
        return {"model": self.urls.get("model.onnx"), "ortMjs": self.urls.get("ort/ort-wasm-simd-threaded.mjs"),
                "ortWasm": self.urls.get("ort/ort-wasm-simd-threaded.wasm"),
                "resizeWasm": self.urls.get("static/resize.wasm"),
                "locales": {n.split("/")[-1][:-5]: u for n, u in self.urls.items() if n.startswith("static/locales/")}}


def render_page(template: str, assets: Assets) -> str:
    """index.html with its files' versioned addresses, and the addresses its scripts load in its <meta>."""
    def versioned(match: re.Match) -> str:
        prefix, name = match.group(1), match.group(2)
        return '"' + assets.urls.get(f"{prefix}/{name}", f"/{prefix}/{name}") + '"'

    page = re.sub(r'"/(static|ort)/([^"]+)"', versioned, template)
    files = html.escape(json.dumps(assets.page_files(), separators=(",", ":")), quote=True)
    return page.replace('<meta name="mpoxscan-files" content="">', f'<meta name="mpoxscan-files" content="{files}">')


def build_assets(model: Path, folder: Path | None = None, log: Callable[[str], None] | None = None) -> Assets:
    """Version and precompress the page's files, the runtime and ``model`` in ``folder`` (default:
    default_assets_dir()), and render the page and the service worker with their addresses. Quick once done (a
    checksum of each file); the first time, Brotli's best quality takes about a minute for the runtime."""
    from mpoxscan.web.i18n import LANGUAGES

    assets = Assets(Path(folder or default_assets_dir()))
    sources = [(f"static/{name}", STATIC / name) for name in PAGE_FILES]
    sources += [(f"static/locales/{code}.json", STATIC / "locales" / f"{code}.json") for code in LANGUAGES]
    if ORT_DIST.is_dir():
        sources += [(f"ort/{name}", ORT_DIST / name) for name in ORT_FILES]
    sources.append(("model.onnx", Path(model)))
    missing = [s for _n, s in sources if not (assets.folder / digest(s) / s.name).is_file()]
    if missing and log:
        log(f"compressing {len(missing)} file(s) of the page once, into {assets.folder} "
            f"(Brotli's best quality: up to a minute)")
    for name, source in sources:
        assets.add(name, source)
    page = render_page((STATIC / "index.html").read_text(encoding="utf-8"), assets)
    page_path = assets.add_rendered("/", "index.html", page)
    # The offline cache's name: the page (which names every file's version) and the service worker's own text.
    worker_template = (STATIC / "sw.js").read_text(encoding="utf-8")
    assets.version = hashlib.sha256(page_path.read_bytes() + worker_template.encode()).hexdigest()[:DIGEST_CHARS]
    worker = (worker_template.replace("__VERSION__", assets.version)
              .replace('["__ASSETS__"]', json.dumps(assets.offline()))
              .replace('"__OUTBOX__"', json.dumps(assets.urls["static/outbox.js"])))
    assets.add_rendered("/sw.js", "sw.js", worker)
    return assets


def asset_server(assets: Assets):
    """The ASGI middleware that answers the assets' addresses (ServeStatic: the precompressed copy the browser
    accepts, with Content-Encoding, Vary, ETag and Range) and passes every other request on."""
    from servestatic.asgi import ServeStaticASGI

    class AssetServer(ServeStaticASGI):
        def __init__(self, app) -> None:
            super().__init__(app, max_age=0, allow_all_origins=False,
                             immutable_file_test=lambda _path, url: url.startswith("/assets/"),
                             mimetypes={".webmanifest": "application/manifest+json"},
                             add_headers_function=_cache_headers)
            for url, path in assets.files.items():
                self.add_file_to_dictionary(url, str(path))

    return AssetServer


def _cache_headers(headers, _path: str, url: str) -> None:
    headers["Cache-Control"] = IMMUTABLE if url.startswith("/assets/") else REVALIDATE
