"""Fault injection on the service (issue 14): `kill -9` during concurrent submissions, a full disk, a read-only and a
deleted data folder, a photo that cannot be deleted; and the durability around them (fsync of the photo folder,
SQLite synchronous=FULL, the start-up sweep beside other workers, sign-in limits that survive a restart, no Host
header in redirects, HSTS). Select them with `pytest -m faults`."""

from __future__ import annotations

import errno
import html
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import event, select

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import cases as service
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import STATIC, Settings
from mpoxscan.web.crashtest import ServeProcess, check_store, crash_round, make_jpeg, photo_folder_census
from mpoxscan.web.tables import Case

pytestmark = pytest.mark.faults
PASSWORD = "correct horse battery staple"
SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options",
                    "permissions-policy")


_STARTED: list = []  # the test clients whose lifespans run the apps below; stopped after each test


@pytest.fixture(autouse=True)
def _stop_apps():
    yield
    while _STARTED:
        _STARTED.pop().__exit__(None, None, None)


def _app(data_dir: Path, db: str | None = None, **settings):
    """A new app, started as a worker is: its lifespan run (database, migrations, the start-up sweep, the photo
    folder's lock held) until _stop or the end of the test."""
    from fastapi.testclient import TestClient

    app = create_app(Settings(model=bundled_model(), data_dir=data_dir, db=db, upload_limit="1000/hour",
                              login_limit=settings.pop("login_limit", "1000/hour"), **settings))
    _STARTED.append(TestClient(app).__enter__())
    return app


def _stop(app) -> None:
    """The worker stops: its lifespan ends (the photo folder's lock given back, the engine disposed)."""
    for client in [c for c in _STARTED if c.app is app]:
        _STARTED.remove(client)
        client.__exit__(None, None, None)


def _client(app, **kwargs):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://testserver", **kwargs)


def _case_form(client, seed: int = 1) -> dict:
    """httpx's arguments for a case as the page sends it: a multipart form, the photo its file."""
    info = client.get("/api/model").json()
    return {"files": {"photo": ("photo", make_jpeg(seed, (320, 256)), "image/jpeg")},
            "data": {"consent": "true", "computed": "device", "model_sha256": info["sha256"],
                     "probabilities": json.dumps({c: 1 / len(info["classes"]) for c in info["classes"]})}}


def _send(client, seed: int = 0):
    return client.post("/api/cases", **_case_form(client, seed))


def _sign_in(client, password=PASSWORD):
    return client.post("/expert/login", data={"email": "doc@example.org", "password": password},
                       follow_redirects=False)


def _unavailable(r, reason: str) -> None:
    """A 503 with a one-line reason and every security header."""
    assert r.status_code == 503, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert reason in detail and "\n" not in detail and "/" not in detail  # no path in the reason
    for header in SECURITY_HEADERS:
        assert header in r.headers, header


def _numbers(app) -> set[str]:
    with app.state.sessions() as db:
        return set(db.scalars(select(Case.number)))


def _photo(app, number: str) -> Path:
    with app.state.sessions() as db:
        return app.state.photos.path(service.case_by_number(db, number).photo_file)


@pytest.fixture
def inject(monkeypatch):
    """Make the OS refuse writes (or removals) under a folder with an errno, as a full or read-only disk would."""

    def refuse(folder: Path, code: int, writes: bool = True, removals: bool = True) -> None:
        real_open, real_unlink, real_write = os.open, os.unlink, os.write
        folder = str(folder)

        def fake_open(path, flags, *args, **kwargs):
            if writes and str(path).startswith(folder) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                if code == errno.ENOSPC:  # a full disk: the file opens, the write fails half-way
                    fd = real_open(path, flags, *args, **kwargs)
                    written[fd] = True
                    return fd
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *args, **kwargs)

        def fake_write(fd, data):
            if fd in written:
                real_write(fd, bytes(data[: len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        def fake_unlink(path, *args, **kwargs):
            if removals and str(path).startswith(folder) and not str(path).endswith(".part"):
                raise OSError(code, os.strerror(code), str(path))
            return real_unlink(path, *args, **kwargs)

        written: dict[int, bool] = {}
        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "write", fake_write)
        monkeypatch.setattr(os, "unlink", fake_unlink)

    return refuse


def _sqlite_pragma(app, pragma: str) -> None:
    """Every new connection of the app's SQLite engine runs ``pragma`` (the pool is emptied first)."""
    engine = app.state.engine
    engine.dispose()
    event.listen(engine, "connect", lambda conn, _record: conn.execute(pragma))


# The crash test.

def test_kill_9_during_concurrent_submissions_loses_no_2xx_case_and_leaves_no_orphan(tmp_path):
    """Three rounds: 50 submissions at once to `mpoxscan serve` (SQLite), `kill -9` after 15 have answered 201,
    restart. Every 201 is stored with its own photo (the file's sha256 is what the server stores for that sender's
    photo), and after the start-up sweep no photo lacks its case and no .part file remains. (Before the sweep, issue
    14 found 7 orphan photos and 5 .part files after one such kill.)"""
    data = tmp_path / "data"
    server = ServeProcess(data).start()
    accepted, left_before_sweep = [], 0
    try:
        for k in range(3):
            round_ = crash_round(server, list(range(1000 * k, 1000 * k + 50)), kill_after=15)
            assert len(round_.accepted) >= 15
            assert any(s.status is None for s in round_.submissions)  # killed mid-way: some got no answer
            accepted += round_.accepted
            census = photo_folder_census(data)
            left_before_sweep += census["files"] - len(accepted)  # heat maps not counted: one file per case
            server = ServeProcess(data).start()  # the start-up sweep runs before it answers
            found = check_store(data, accepted)
            assert found["lost"] == [] and found["wrong_photo"] == [], found
            assert found["orphans"] == [] and found["part"] == [] and found["missing_photo"] == [], found
    finally:
        server.stop()
    assert left_before_sweep > 0  # the kills did leave files behind: the sweep had work to do


# Storage failures: a 503 with a reason and the security headers, and nothing that got a 2xx lost.

def test_a_full_disk_answers_503_and_leaves_no_part_file(tmp_path, inject):
    app = _app(tmp_path / "data")
    client = _client(app)
    kept = _send(client, 1).json()["number"]
    inject(app.state.photos.root, errno.ENOSPC)
    _unavailable(_send(client, 2), "the disk is full")
    assert not list(app.state.photos.root.glob("*.part")) and len(list(app.state.photos.root.iterdir())) == 2
    assert _numbers(app) == {kept} and _photo(app, kept).is_file()


def test_a_full_database_answers_503_and_removes_the_photo_it_wrote(tmp_path):
    app = _app(tmp_path / "data")
    client = _client(app)
    kept = _send(client, 1).json()["number"]

    def full(_conn, _cursor, statement, *_args):
        if statement.startswith("INSERT INTO cases"):
            raise sqlite3.OperationalError("database or disk is full")  # what SQLite says on a full disk

    event.listen(app.state.engine, "before_cursor_execute", full)
    _unavailable(_send(client, 2), "the disk is full")
    photo = _photo(app, kept)  # and its heat map: the failed case's photo and heat map are gone
    assert _numbers(app) == {kept} and sorted(p.name for p in app.state.photos.root.iterdir()) == sorted(
        [photo.name, photo.stem + ".heatmap.png"])


def test_a_read_only_data_folder_answers_503_for_every_write_and_keeps_every_case(tmp_path, inject):
    app = _app(tmp_path / "data")
    client = _client(app)
    with app.state.sessions() as db:
        service.add_expert(db, "doc@example.org", PASSWORD)
    sent = _send(client, 1).json()
    inject(tmp_path / "data", errno.EROFS)
    _sqlite_pragma(app, "PRAGMA query_only = 1")  # SQLite: "attempt to write a readonly database"
    _unavailable(_send(client, 2), "read-only")
    _unavailable(client.post(sent["follow_up"] + "/withdraw"), "read-only")
    _unavailable(_sign_in(client), "read-only")
    assert client.get(sent["follow_up"]).status_code == 200  # reading still works
    # The person's own form, from a browser: their page in their language says nothing changed (not a JSON line).
    page = client.post(sent["follow_up"] + "/withdraw?lang=fr", headers={"Accept": "text/html"})
    french = json.loads((STATIC / "locales" / "fr.json").read_text())["followup.unavailable"]
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert html.escape(french, quote=False) in page.text and page.headers["Retry-After"] == "60"
    assert all(header in page.headers for header in SECURITY_HEADERS)
    assert _numbers(app) == {sent["number"]} and _photo(app, sent["number"]).is_file()


def test_a_deleted_data_folder_answers_503_instead_of_writing_to_the_unlinked_database(tmp_path):
    """Issue 14: answers, sign-ins and withdrawals answered 2xx and went into the unlinked SQLite file."""
    app = _app(tmp_path / "data")
    client = _client(app)
    with app.state.sessions() as db:
        service.add_expert(db, "doc@example.org", PASSWORD)
    sent = _send(client, 1).json()
    assert _sign_in(client).status_code == 303
    shutil.rmtree(tmp_path / "data")
    _unavailable(_send(client, 2), "missing")
    _unavailable(client.post(sent["follow_up"] + "/withdraw"), "missing")
    _unavailable(_sign_in(client), "missing")
    _unavailable(client.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "unlikely-mpox"},
                             headers={"origin": "http://testserver"}), "missing")
    health = client.get("/healthz")
    assert health.status_code == 503 and "missing" in health.json()["checks"]["database"]
    # Put back (a restore from backup): the data of the new file is found again, and the server answers again.
    (tmp_path / "data" / "photos").mkdir(parents=True)
    _stop(app)
    assert _client(_app(tmp_path / "data")).get("/healthz").status_code == 200


def test_a_photo_that_cannot_be_deleted_keeps_its_case_whole(database, tmp_path, inject, monkeypatch):
    """withdraw deletes the file first and the row only once the file is gone: a failing delete is a 503 with the
    case and photo intact (before: a bare 500, the case gone and the photo left behind)."""
    app = _app(tmp_path / "data", database)
    client = _client(app)
    sent = _send(client, 1).json()
    photo = _photo(app, sent["number"])
    heatmap = photo.with_name(photo.stem + ".heatmap.png")  # a file kept beside the photo by the naming rule
    heatmap.write_bytes(b"png")
    inject(app.state.photos.root, errno.EACCES, writes=False)
    _unavailable(client.post(sent["follow_up"] + "/withdraw"), "not writable")
    assert sent["number"] in _numbers(app) and photo.is_file() and heatmap.is_file()
    monkeypatch.undo()  # the disk takes deletions again: withdrawing works, and takes the files beside the photo
    assert client.post(sent["follow_up"] + "/withdraw").status_code == 200
    assert sent["number"] not in _numbers(app) and not photo.exists() and not heatmap.exists()


def test_every_5xx_carries_the_security_headers(tmp_path):
    app = _app(tmp_path / "data")

    def boom():
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    r = _client(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500 and "internal error" in r.json()["detail"]
    for header in SECURITY_HEADERS:
        assert header in r.headers, header


# The sweep: .part files and photos no case owns, never what another worker has in flight.

def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_start_up_sweep_removes_what_no_case_owns_but_spares_another_workers_photos_in_flight(tmp_path):
    data = tmp_path / "data"
    worker = _app(data)  # a running worker: it holds the photo folder's lock shared while it serves
    kept = _send(_client(worker), 1).json()["number"]
    root = worker.state.photos.root
    owned = _photo(worker, kept)
    beside = root / (owned.stem + ".heatmap.png")  # the naming rule: a file starting with a case's stem is its own
    assert beside.is_file()  # the server's heat map, drawn when the case arrived
    in_flight = worker.state.photos.save(make_jpeg(2))  # written, its case row not committed yet
    part = root / ".f00d.jpg.part"
    part.write_bytes(b"half a photo")
    old_orphan, old_part = root / "0123abcd.jpg", root / ".beef.jpg.part"
    for path in (old_orphan, old_part):
        path.write_bytes(b"left by a crash long ago")
        _age(path, 2 * 3600)
    second = _app(data)  # another worker starting beside the first: only what is older than the grace period goes
    assert not old_orphan.exists() and not old_part.exists()
    assert (root / in_flight).exists() and part.exists() and owned.exists() and beside.exists()
    for app in (worker, second):  # both stop: nothing can be in flight any more
        _stop(app)
    third = _app(data)  # a start with no other worker (the restart after a crash): every unowned file goes
    assert sorted(p.name for p in root.iterdir()) == sorted([owned.name, beside.name])
    assert _numbers(third) == {kept}


def test_cases_purge_sweeps_the_photo_folder(tmp_path):
    from click.testing import CliRunner

    from mpoxscan.cli import cli

    data = tmp_path / "data"
    app = _app(data)
    kept = _send(_client(app), 1).json()["number"]
    root = app.state.photos.root
    young, old = root / "aaaa1111.jpg", root / ".bbbb2222.jpg.part"
    young.write_bytes(b"x")
    old.write_bytes(b"x")
    _age(old, 2 * 3600)
    r = CliRunner().invoke(cli, ["cases", "purge", "--data-dir", str(data)])  # the server (app) still runs
    assert r.exit_code == 0 and "1 file(s) no case owns removed" in r.output and "1 younger" in r.output, r.output
    assert young.exists() and not old.exists()
    _stop(app)
    r = CliRunner().invoke(cli, ["cases", "purge", "--data-dir", str(data)])  # no server: all of them
    assert r.exit_code == 0 and "1 file(s) no case owns removed" in r.output, r.output
    assert not young.exists() and _photo(app, kept).exists()


# Durability.

def test_the_photo_is_fsynced_then_renamed_then_its_folder_fsynced(tmp_path, monkeypatch):
    import stat

    app = _app(tmp_path / "data")
    store = app.state.photos
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(
        "fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("rename") or real_replace(a, b))
    name = store.save(make_jpeg(1))
    assert calls == ["fsync file", "rename", "fsync folder"] and (store.root / name).is_file()


def test_sqlite_commits_are_synchronous_full(tmp_path):
    app = _app(tmp_path / "data")
    with app.state.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_sign_in_limit_survives_a_restart_and_is_shared_by_workers(database, tmp_path):
    apps = [_app(tmp_path / "data", database, login_limit="3/minute")]
    with apps[0].state.sessions() as db:
        service.add_expert(db, "doc@example.org", PASSWORD)
    assert [_sign_in(_client(apps[0]), "wrong password x").status_code for _ in range(2)] == [401, 401]
    apps.append(_app(tmp_path / "data", database, login_limit="3/minute"))  # a restart, or a second worker
    assert _sign_in(_client(apps[1]), "wrong password x").status_code == 401
    for app in apps:  # three failures counted, whichever worker saw them
        r = _sign_in(_client(app))
        assert r.status_code == 429 and "too many logins" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    assert _sign_in(_client(_app(tmp_path / "data", database, login_limit="1000/hour"))).status_code == 303


def test_redirects_never_carry_the_host_header_and_hsts_follows_secure_cookies(tmp_path):
    app = _app(tmp_path / "data")
    r = _client(app).get("/expert/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code in (301, 307, 308) and r.headers["location"] == "/expert"
    assert "strict-transport-security" not in r.headers
    secure = _app(tmp_path / "secure", secure_cookies=True)
    r = _client(secure).get("/")
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_the_webhook_link_never_carries_the_host_header(tmp_path, monkeypatch):
    """Any client sets Host: a case sent with a forged one must not hand the experts a link to another site."""
    from mpoxscan.web import notify

    sent = []
    monkeypatch.setattr(notify, "post", lambda url, message: sent.append(message))
    for public_url, expected in ((None, "http://testserver/expert/cases/"),
                                 ("https://mpoxscan.example.org/", "https://mpoxscan.example.org/expert/cases/")):
        app = _app(tmp_path / str(bool(public_url)), notify_url="http://127.0.0.1:9/hook", public_url=public_url)
        client = _client(app)
        r = client.post("/api/cases", headers={"host": "evil.example"}, **_case_form(client))
        assert r.status_code == 201
        assert sent[-1]["dashboard"] == expected + r.json()["number"] and "evil" not in str(sent[-1])
