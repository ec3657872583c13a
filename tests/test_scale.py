"""Issue 15: several server processes on shared state (the database photo store, rate limits in Redis, `serve
--workers N`) and https (`serve --tls-cert/--tls-key`, the nginx recipe in deploy/)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from test_cases import PASSWORD, _case_body, _client, _db, _expert, _form, _photo_bytes, _send, _sign_in

from mpoxscan.cli import cli
from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import cases as service
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import Settings
from mpoxscan.web.store import DatabasePhotoStore, StorageUnavailable
from mpoxscan.web.tables import Case, StoredPhoto

REPO = Path(__file__).resolve().parents[1]


def _redis_url() -> str:
    """The throwaway Redis of .ci/run (MPOXSCAN_TEST_REDIS), emptied; a skip without one (a failure in CI)."""
    url = os.environ.get("MPOXSCAN_TEST_REDIS")
    if not url:
        message = "needs a Redis server: MPOXSCAN_TEST_REDIS=redis://127.0.0.1:PORT (.ci/run starts one: .ci/redis)"
        if os.environ.get("MPOXSCAN_REQUIRE_REDIS"):
            pytest.fail(message)
        pytest.skip(message)
    import redis

    redis.Redis.from_url(url).flushdb()  # counts left by an earlier test
    return url


def _settings(tmp_path, database, **changes) -> Settings:
    values = dict(model=bundled_model(), data_dir=tmp_path / "data", db=database, upload_limit="1000/hour",
                  login_limit="1000/hour", photo_store="db")
    values.update(changes)
    return Settings(**values)


def _rows(app) -> list[str]:
    with _db(app) as db:
        return sorted(db.scalars(select(StoredPhoto.name)))


# The database photo store.

def test_the_database_store_keeps_photos_and_heat_maps_as_rows_and_deletes_them_with_their_case(database, tmp_path):
    app = create_app(_settings(tmp_path, database))
    with _client(app) as client:
        assert isinstance(app.state.photos, DatabasePhotoStore)
        jpeg = _photo_bytes(3)
        sent = _send(client, jpeg)
        assert sent.status_code == 201, sent.text
        with _db(app) as db:
            case = service.case_by_number(db, sent.json()["number"])
            stem = Path(case.photo_file).stem
            stored = db.scalar(select(StoredPhoto.data).where(StoredPhoto.name == case.photo_file))
        assert _rows(app) == [f"{stem}.heatmap.png", f"{stem}.jpg"]
        assert not list((tmp_path / "data" / "photos").glob("*"))  # nothing in the folder
        import hashlib

        assert hashlib.sha256(stored).hexdigest() == case.photo_sha256
        _expert(app)
        assert _sign_in(client).status_code == 303
        photo = client.get(f"/expert/cases/{case.number}/photo.jpg")
        assert photo.status_code == 200 and photo.content == stored and photo.headers["content-type"] == "image/jpeg"
        heat = client.get(f"/expert/cases/{case.number}/heatmap.png")
        assert heat.status_code == 200 and heat.content.startswith(b"\x89PNG")
        with _db(app) as db:  # a case stored before maps were kept: its map is drawn on first view, and kept
            db.query(StoredPhoto).filter(StoredPhoto.name == f"{stem}.heatmap.png").delete()
            db.commit()
        again = client.get(f"/expert/cases/{case.number}/heatmap.png")
        assert again.status_code == 200 and again.content.startswith(b"\x89PNG") and len(_rows(app)) == 2
        assert client.get("/healthz").json()["checks"]["photos"] == "ok"
        token = sent.json()["follow_up"].rsplit("/", 1)[-1]
        assert client.post(f"/c/{token}/withdraw", headers={"origin": "http://testserver"}).status_code == 200
        assert _rows(app) == []


def test_the_database_store_never_keeps_a_case_without_its_photo_nor_a_photo_without_its_case(database, tmp_path,
                                                                                                monkeypatch):
    app = create_app(_settings(tmp_path, database))
    with _client(app) as client:
        def refused(*_args):
            raise StorageUnavailable("cannot store the photo: the database is read-only")

        with monkeypatch.context() as m:  # the photo cannot be stored: 503, and no case
            m.setattr(DatabasePhotoStore, "_write", refused)
            r = _send(client)
        assert r.status_code == 503 and r.json()["detail"] == "cannot store the photo: the database is read-only"

        def no_number():
            raise RuntimeError("the case row cannot be committed")

        with monkeypatch.context() as m:  # the photo was stored, then the case failed: the photo goes again
            m.setattr(service, "new_case_number", no_number)
            with pytest.raises(RuntimeError):  # the test client raises what the server answers as a 500
                _send(client)
        with _db(app) as db:
            assert db.scalar(select(func.count()).select_from(Case)) == 0
        assert _rows(app) == []
        assert _send(client).status_code == 201 and len(_rows(app)) == 2


def test_the_database_store_sweep_spares_photos_in_flight_while_another_worker_serves(database, tmp_path):
    """What the lock file does for the folder, PostgreSQL's advisory lock does for the rows: while a worker serves,
    a sweep elsewhere removes only old unowned rows; with no worker serving, every unowned row goes. (SQLite has no
    such lock: there a sweep always spares young rows.)"""
    from mpoxscan.web.db import make_engine

    app = create_app(_settings(tmp_path, database))
    with _client(app) as client:
        assert _send(client).status_code == 201
        in_flight = app.state.photos.save(_photo_bytes(9))  # written, its case not committed yet
        other = DatabasePhotoStore(make_engine(app.state.db_url))  # `cases purge` on another host
        with _db(app) as db:
            referenced = list(db.scalars(select(Case.photo_file)))
        report = other.sweep(referenced)
        assert report.removed == [] and report.kept_young == 1 and not report.exclusive
        assert in_flight in _rows(app)
    # No worker serves now: the orphan of a crashed submission goes at once where the lock says so (PostgreSQL).
    report = other.sweep(referenced)
    if database.startswith("postgresql"):
        assert report.exclusive and report.removed == [in_flight]
    else:
        assert not report.exclusive and report.removed == [] and report.kept_young == 1
        assert other.sweep(referenced, grace_s=0).removed == [in_flight]
    other.engine.dispose()


def test_cases_purge_sweeps_the_database_store(database, tmp_path):
    app = create_app(_settings(tmp_path, database))
    with _client(app) as _c:
        orphan = app.state.photos.save(_photo_bytes(4))
    r = CliRunner().invoke(cli, ["cases", "purge", "--data-dir", str(tmp_path / "data"), "--db", database,
                                 "--photo-store", "db"])
    assert r.exit_code == 0, r.output
    removed = 1 if database.startswith("postgresql") else 0  # SQLite: the grace period spares a young orphan
    assert f"{removed} file(s) no case owns removed" in r.output
    with _client(app):
        assert (orphan in _rows(app)) == (removed == 0)


# Rate limits shared through Redis.

def test_rate_limits_in_redis_are_one_limit_across_workers_and_survive_a_restart(tmp_path):
    url = _redis_url()

    def worker(name: str):
        return create_app(Settings(model=bundled_model(), data_dir=tmp_path / name, upload_limit="3/hour",
                                   limits_storage=url))

    codes = []
    with _client(worker("a")) as a, _client(worker("b")) as b:
        for client in (a, b, a, b):
            codes.append(_send(client, _photo_bytes(len(codes))).status_code)
    assert codes == [201, 201, 201, 429]  # one count for both workers
    with _client(worker("c")) as restarted:  # a new process: the count is still there
        assert _send(restarted).status_code == 429
    # The same with memory://: each worker counts alone, and a restart forgets.
    apps = [create_app(Settings(model=bundled_model(), data_dir=tmp_path / f"m{k}", upload_limit="3/hour"))
            for k in range(2)]
    with _client(apps[0]) as a, _client(apps[1]) as b:
        assert [_send(c, _photo_bytes(k)).status_code for k, c in enumerate((a, b, a, b))] == [201] * 4


def test_a_rate_limit_storage_that_goes_down_is_a_503_with_a_reason_and_healthz_says_so(tmp_path):
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "d", limits_storage="redis://127.0.0.1:1"))
    with _client(app) as client:  # Redis went down after `serve` checked it (nothing listens on port 1)
        r = client.post("/api/screen", files={"photo": ("p", _photo_bytes(), "application/octet-stream")})
        assert r.status_code == 503
        assert r.json()["detail"] == "cannot count requests: the rate-limit storage cannot be reached"
        assert "content-security-policy" in r.headers
        assert _send(client).status_code == 503  # no upload goes through uncounted
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["limits"].startswith("failed: ")


def test_serve_refuses_unshared_limits_for_several_workers_and_bad_storages_in_one_line(tmp_path):
    data = ["--data-dir", str(tmp_path / "d")]
    r = CliRunner().invoke(cli, ["serve", "--workers", "2", *data])
    assert r.exit_code == 1 and r.output.startswith("error: --workers 2 needs a shared --limits-storage")
    r = CliRunner().invoke(cli, ["serve", "--limits-storage", "redis://127.0.0.1:1", *data])
    assert r.exit_code == 1 and r.output.startswith("error: cannot reach the rate-limit storage redis://")
    r = CliRunner().invoke(cli, ["serve", "--limits-storage", "nothing://x", *data])
    assert r.exit_code == 1 and r.output.startswith("error: --limits-storage") and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120, **kwargs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=2, **kwargs).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve did not become healthy")


def test_serve_with_two_workers_on_shared_state(database, tmp_path):
    """The real thing, as `mpoxscan serve --workers 2` runs it: concurrent cases each stored once with its own
    photo, and the sign-in limit one limit whichever worker answers. PostgreSQL with the database photo store (the
    tier for several hosts), and SQLite with the photo folder (several workers on one machine: SQLite's file locks
    and the folder's lock file are shared by processes on one machine)."""
    from concurrent.futures import ThreadPoolExecutor

    from mpoxscan.web.testing import free_port

    redis_url = _redis_url()
    store = "db" if database.startswith("postgresql") else "folder"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mpoxscan.cli", "serve", "--workers", "2", "--port", str(port), "--db", database,
         "--photo-store", store, "--limits-storage", redis_url, "--login-limit", "10/15minutes",
         "--data-dir", str(tmp_path / "data")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(url, process)
        with httpx.Client(base_url=url) as http:
            body = _case_body(http)
        jpegs = [_photo_bytes(100 + k) for k in range(12)]

        def send(jpeg):
            return httpx.post(url + "/api/cases", **_form({**body, "photo": jpeg}), timeout=60)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, jpegs))
        assert [r.status_code for r in answers] == [201] * 12
        numbers = [r.json()["number"] for r in answers]
        app = create_app(_settings(tmp_path / "check", database, photo_store=store,
                                   data_dir=tmp_path / "data"))
        with _client(app):
            with _db(app) as db:
                cases = {c.number: c for c in db.scalars(select(Case))}
            assert sorted(cases) == sorted(numbers)  # none lost, none twice
            import hashlib

            for jpeg_case in cases.values():
                stored = app.state.photos.read(jpeg_case.photo_file)
                assert hashlib.sha256(stored).hexdigest() == jpeg_case.photo_sha256
            assert len({c.photo_sha256 for c in cases.values()}) == 12  # each case its own photo
            _expert(app)
        codes = [httpx.post(url + "/expert/login", data={"email": "doc@example.org", "password": "wrong password x"},
                            timeout=30).status_code for _ in range(11)]  # fresh connections: either worker answers
        assert codes == [401] * 10 + [429]
        assert httpx.post(url + "/expert/login", data={"email": "doc@example.org", "password": PASSWORD},
                          timeout=30).status_code == 429
    finally:
        process.terminate()
        process.wait(timeout=30)


# https: uvicorn's own TLS, and the nginx recipe.

def test_serve_refuses_a_missing_or_mismatched_certificate_in_one_line(tmp_path):
    from mpoxscan.web.testing import self_signed_certificate

    cert_a, key_a, _ = self_signed_certificate(tmp_path / "a")
    _cert_b, key_b, _ = self_signed_certificate(tmp_path / "b")
    data = ["--data-dir", str(tmp_path / "d")]
    cases = [(["--tls-cert", str(cert_a)], "error: --tls-cert and --tls-key go together"),
             (["--tls-cert", str(cert_a), "--tls-key", str(tmp_path / "none.pem")], "error: --tls-key "),
             (["--tls-cert", str(cert_a), "--tls-key", str(key_b)], f"error: --tls-key {key_b} is not the private key"),
             (["--tls-cert", str(key_a), "--tls-key", str(key_a)], "error: cannot use --tls-cert")]
    for args, start in cases:
        r = CliRunner().invoke(cli, ["serve", *args, *data])
        assert r.exit_code == 1 and r.output.startswith(start), r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_serve_over_tls_sends_hsts_and_secure_cookies_by_default(tmp_path, monkeypatch):
    from mpoxscan.web import app as web_app
    from mpoxscan.web.testing import ServerThread, self_signed_certificate

    cert, key, _ = self_signed_certificate(tmp_path / "tls")
    built = {}

    class NotYet:
        def run(self):
            pass

    def make_server(app, host, port, trusted_proxies=None, **tls):
        built.update(app=app, tls=tls)
        return NotYet()

    monkeypatch.setattr(web_app, "make_server", make_server)
    r = CliRunner().invoke(cli, ["serve", "--tls-cert", str(cert), "--tls-key", str(key), "--data-dir",
                                 str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "open https://127.0.0.1:8000" in r.output and built["tls"] == {"tls_cert": str(cert), "tls_key": str(key)}
    app = built["app"]
    assert app.state.settings.secure_cookies  # on by default under TLS
    with ServerThread(app, **built["tls"]) as server:
        assert server.url.startswith("https://")
        with app.state.sessions() as db:
            service.add_expert(db, "doc@example.org", PASSWORD)
        import ssl

        trust = ssl.create_default_context(cafile=str(cert))  # verified against the certificate
        with httpx.Client(base_url=server.url, verify=trust) as https:
            page = https.get("/")
            assert page.status_code == 200 and page.headers["strict-transport-security"] == "max-age=31536000"
            login = https.post("/expert/login", data={"email": "doc@example.org", "password": PASSWORD},
                               headers={"origin": server.url})
            cookie = login.headers["set-cookie"]
            assert login.status_code == 303 and "; secure" in cookie.lower() and "httponly" in cookie.lower()
        with pytest.raises(httpx.HTTPError):  # plain http to the https port is no answer at all
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_over_https_on_a_real_host_name_the_service_worker_registers_and_the_page_screens_offline(tmp_path):
    """A phone reaches the server by a name on the network, not localhost: only https makes that a secure context, and
    only a secure context gets a service worker (offline use). Chromium maps mpoxscan.test to this machine and trusts
    exactly the test's certificate (by its public key); over plain http the same name gets no service worker."""
    from conftest import chromium, encode, make_photo
    from browser import phone, screen, wait

    from mpoxscan.web.settings import ORT_DIST
    from mpoxscan.web.testing import ServerThread, count_requests, self_signed_certificate

    if not ORT_DIST.is_dir():
        message = "needs onnxruntime-web (make setup runs npm ci)"
        if os.environ.get("MPOXSCAN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    host = "mpoxscan.test"
    cert, key, spki = self_signed_certificate(tmp_path / "tls", host)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(make_photo(1, (320, 256)), "JPEG", quality=92))
    driver = phone(chromium(tmp_path / "profile", extra_args=(
        f"--host-resolver-rules=MAP {host} 127.0.0.1", f"--ignore-certificate-errors-spki-list={spki}")))
    plain = ServerThread(create_app(_settings(tmp_path / "plain", None, photo_store="folder")), host=host).start()
    app = create_app(_settings(tmp_path, None, photo_store="folder"))
    requests = count_requests(app)
    server = ServerThread(app, tls_cert=str(cert), tls_key=str(key), host=host).start()
    try:
        driver.get(plain.url + "/")  # the control: a network name over http
        assert driver.execute_script("return window.isSecureContext") is False
        assert driver.execute_script("return 'serviceWorker' in navigator") is False
        plain.stop()
        driver.get(server.url + "/")
        assert driver.execute_script("return window.isSecureContext") is True
        wait(driver, "return document.body.dataset.ready")
        assert wait(driver, "return document.body.dataset.offline") == "1"  # the service worker has the page
        scope = driver.execute_async_script(
            "const done = arguments[0]; navigator.serviceWorker.ready.then(r => done(r.scope))")
        assert scope == server.url + "/"
        server.stop()  # offline now
        driver.refresh()
        wait(driver, "return document.body.dataset.ready")
        answer = screen(driver, photo)
        assert answer and answer["computed"] == "device" and answer["predicted"]
    finally:
        driver.quit()
        server.stop()
        plain.stop()
    assert requests["/api/screen"] == 0


def test_the_nginx_recipe_serves_the_app_over_https_and_passes_the_real_client(tmp_path):
    """deploy/nginx-mpoxscan.conf itself (its site values replaced by the test's ports and certificate), Debian's
    nginx in front of the app started as the recipe says (`--proxy 127.0.0.1 --secure-cookies`)."""
    import shutil
    import ssl

    from mpoxscan.web.testing import ServerThread, free_port, self_signed_certificate

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        message = "needs Debian's nginx (apt-get install nginx-light; .ci/run installs it)"
        if os.environ.get("MPOXSCAN_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)
    cert, key, _ = self_signed_certificate(tmp_path / "tls", "localhost")
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "data", upload_limit="2/minute",
                              secure_cookies=True))
    https_port, http_port = free_port(), free_port()
    with ServerThread(app, trusted_proxies="127.0.0.1") as server:
        site = (REPO / "deploy" / "nginx-mpoxscan.conf").read_text()
        for old, new in (("server 127.0.0.1:8000", f"server {server.url.split('//')[1]}"),
                         ("listen 443 ", f"listen 127.0.0.1:{https_port} "),
                         ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                         ("mpoxscan.example.org;", "localhost;"),
                         ("/etc/letsencrypt/live/mpoxscan.example.org/fullchain.pem", str(cert)),
                         ("/etc/letsencrypt/live/mpoxscan.example.org/privkey.pem", str(key)),
                         ("client_header_timeout 10s;", "client_header_timeout 1s;"),  # (checked below, quickly)
                         ("alias /var/cache/mpoxscan/assets/;", f"alias {app.state.assets.folder}/;")):
            assert old in site, old  # the recipe still has the value this test replaces
            site = site.replace(old, new)
        temp = tmp_path / "nginx"
        temp.mkdir()
        # Debian's Brotli module (libnginx-mod-http-brotli-static, beside nginx-light: .ci/run installs it); the
        # recipe says to delete its line without it.
        brotli_module = Path("/usr/lib/nginx/modules/ngx_http_brotli_static_module.so")
        if not brotli_module.is_file():
            if os.environ.get("MPOXSCAN_REQUIRE_NGINX"):
                pytest.fail("needs libnginx-mod-http-brotli-static (.ci/run installs it)")
            site = site.replace("brotli_static on;", "")
        (tmp_path / "site.conf").write_text(site)
        (tmp_path / "nginx.conf").write_text(
            (f"load_module {brotli_module};\n" if brotli_module.is_file() else "") +
            f"daemon off; master_process off; pid {temp}/nginx.pid; error_log {temp}/error.log;\n"
            f"events {{}}\nhttp {{ client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
            f"fastcgi_temp_path {temp}/f; uwsgi_temp_path {temp}/u; scgi_temp_path {temp}/s;\n"
            f"include {tmp_path / 'site.conf'}; }}\n")
        process = subprocess.Popen([nginx, "-p", str(temp), "-c", str(tmp_path / "nginx.conf")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"https://localhost:{https_port}"
            trust = ssl.create_default_context(cafile=str(cert))
            with httpx.Client(base_url=base, verify=trust, timeout=60) as https:
                for _ in range(100):
                    try:
                        page = https.get("/")
                        break
                    except httpx.ConnectError:
                        assert process.poll() is None, process.stdout.read()
                        time.sleep(0.1)
                assert page.status_code == 200 and page.headers["strict-transport-security"] == "max-age=31536000"
                assert page.headers["cross-origin-embedder-policy"] == "require-corp"  # isolated: the runtime's threads
                assert page.headers["cross-origin-opener-policy"] == "same-origin"
                # The page's files from nginx itself (the app's folder on disk, not proxied): the copy the browser
                # accepts, cached for a year, and the same bytes as the app's.
                for url, source in app.state.assets.files.items():
                    if not url.startswith("/assets/") or url.endswith(".png"):
                        continue
                    encodings = [("gzip", ".gz")] + ([("br", ".br")] if brotli_module.is_file() else [])
                    for encoding, suffix in encodings:
                        answer = https.get(url, headers={"accept-encoding": encoding})
                        assert answer.status_code == 200 and answer.headers["content-encoding"] == encoding, url
                        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
                        assert answer.headers["cross-origin-embedder-policy"] == "require-corp", url
                        assert answer.headers["vary"] == "Accept-Encoding"
                        assert answer.content == source.read_bytes()
                        assert int(answer.headers["content-length"]) == source.with_name(source.name + suffix).stat().st_size
                        assert answer.headers["content-type"].split(";")[0] == {
                            ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                            ".json": "application/json", ".wasm": "application/wasm", ".svg": "image/svg+xml",
                            ".webmanifest": "application/manifest+json",
                            ".onnx": "application/octet-stream"}[source.suffix]
                    plain = https.get(url, headers={"accept-encoding": "identity"})
                    assert "content-encoding" not in plain.headers and plain.content == source.read_bytes()
                assert https.get("/assets/0123456789abcdef/app.js").status_code == 404
                plain = httpx.get(f"http://localhost:{http_port}/expert", follow_redirects=False)
                assert plain.status_code == 301 and plain.headers["location"] == "https://localhost/expert"
                body = _case_body(https)
                # Through the proxy the limit counts the real client, whatever X-Forwarded-For the client sends.
                codes = [https.post("/api/cases", **_form(body), headers={"x-forwarded-for": f"203.0.113.{k}"}
                                    ).status_code for k in range(3)]
                assert codes == [201, 201, 429]
                big = https.post("/api/screen", files={"photo": ("p", b"\xff" * (17 * 1024 * 1024))})
                assert big.status_code == 413  # nginx's own limit, just above the app's
            # Slowloris: nginx drops a request whose headers do not come in time (the recipe's 10 s, 1 s here).
            import socket

            half = trust.wrap_socket(socket.create_connection(("127.0.0.1", https_port)), server_hostname="localhost")
            half.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            half.settimeout(10)
            started = time.monotonic()
            try:
                while half.recv(4096):  # nginx may say 408 before it closes
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass
            assert time.monotonic() - started < 5
            half.close()
        finally:
            process.terminate()
            process.wait(timeout=10)
