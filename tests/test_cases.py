"""Cases sent to an expert, the follow-up page and the expert dashboard: every route, its bad requests, the rate
limits and the audit log, on SQLite and on a real PostgreSQL server (the `database` fixture)."""

from __future__ import annotations

import base64
import io
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from conftest import encode, make_photo

from mpoxscan.deploy.runtime import Screener, bundled_model
from mpoxscan.images import load_image
from mpoxscan.web import cases as service
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import Settings
from mpoxscan.web.tables import Case, LoginSession, utcnow

PASSWORD = "correct horse battery staple"
NUMBER = re.compile(r"^[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}$")


def _client(app):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://testserver")


@pytest.fixture
def client(database, tmp_path):
    """A client of a new app, its lifespan running (database engine and migrations; the engine disposed after)."""
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "data", db=database,
                              max_upload_bytes=2 * 1024 * 1024, max_pixels=4_000_000, upload_limit="1000/hour",
                              login_limit="1000/hour"))
    with _client(app) as client:
        yield client


@pytest.fixture
def app(client):
    return client.app


def _db(app):
    return app.state.sessions()


def _photo_bytes(seed: int = 0, size=(320, 256), **save) -> bytes:
    return encode(make_photo(seed, size), "JPEG", quality=92, **save)


def _case_body(client, jpeg: bytes | None = None, **changes) -> dict:
    """The form fields of a case as the page sends them (probabilities as a dict here: see _form), ``photo`` the
    file's bytes."""
    info = client.get("/api/model").json()
    body = {"consent": "true", "photo": jpeg if jpeg is not None else _photo_bytes(), "computed": "device",
            "probabilities": {c: 1 / len(info["classes"]) for c in info["classes"]}, "model_sha256": info["sha256"]}
    body.update(changes)
    return body


def _form(body: dict) -> dict:
    """httpx's multipart arguments for a case body: bytes go as files, the probabilities as JSON text."""
    import json

    data = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in body.items() if not isinstance(v, bytes)}
    files = {k: ("photo", v, "application/octet-stream") for k, v in body.items() if isinstance(v, bytes)}
    return {"data": data, "files": files}


def _send(client, jpeg: bytes | None = None, **changes):
    return client.post("/api/cases", **_form(_case_body(client, jpeg, **changes)))


def _expert(app, email="doc@example.org"):
    with _db(app) as db:
        return service.add_expert(db, email, PASSWORD)


def _sign_in(client, email="doc@example.org", password=PASSWORD):
    return client.post("/expert/login", data={"email": email, "password": password}, follow_redirects=False)


def test_migrations_run_on_start_and_again_as_a_no_op(database, tmp_path):
    from sqlalchemy import inspect

    from mpoxscan.web.db import make_engine, migrate

    engine = make_engine(database)
    head = migrate(engine)
    assert migrate(engine) == head  # a second start changes nothing
    assert {"cases", "experts", "login_sessions", "audit_events", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_migration_0002_gives_older_cases_their_answer(database):
    """Cases stored before the answer rule keep their screening: positive at or above their threshold."""
    from sqlalchemy import text

    from mpoxscan.web.db import make_engine, migrate

    engine = make_engine(database)
    migrate(engine, "0001")  # the schema as an older version left it
    with engine.begin() as connection:
        for number, p in (("OLDP-0001", 0.7), ("OLDN-0001", 0.1)):
            connection.execute(text(
                "INSERT INTO cases (number, token_hash, created_at, photo_file, photo_sha256, model_sha256, computed, "
                "device_probabilities, predicted, probabilities, screening_probability, screening_threshold, status) "
                "VALUES (:n, :n, :t, 'x.jpg', '0', '0', 'device', '{}', 'Monkeypox', '{}', :p, 0.5, 'waiting')"),
                {"n": number, "p": p, "t": utcnow()})
    migrate(engine)
    with engine.connect() as connection:
        got = dict(connection.execute(text("SELECT number, answer FROM cases")).all())
    assert got == {"OLDP-0001": "positive", "OLDN-0001": "negative"}
    engine.dispose()


def test_the_lifespan_opens_migrates_and_closes_the_database(database, tmp_path):
    """The engine and the migrations belong to the app's lifespan: opened before the first request, the engine's
    connections closed on shutdown (a pooled connection would otherwise outlive the app)."""
    from mpoxscan.web.db import make_engine, migrate

    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "data", db=database))
    with _client(app) as client:
        assert client.get("/healthz").status_code == 200
        engine = app.state.engine
        assert engine.pool.checkedin() >= 1  # the request's connection, back in the pool
    assert engine.pool.checkedin() == 0
    check = make_engine(database)
    assert app.state.schema == migrate(check)  # migrated to the head on start
    check.dispose()


def test_a_case_is_stored_without_metadata_and_screened_again_by_the_server(app, client):
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0132] = "2026:01:01 10:00:00"  # DateTime
    photo = _photo_bytes(3, exif=exif.tobytes())
    assert b"PhoneMaker" in photo
    r = _send(client, photo)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert NUMBER.match(answer["number"]) and answer["status"] == "waiting" and answer["model_matches"]
    assert re.fullmatch(r"/c/[A-Za-z0-9_-]{43}", answer["follow_up"])
    with _db(app) as db:
        case = service.case_by_number(db, answer["number"])
        stored = app.state.photos.path(case.photo_file).read_bytes()
        assert b"PhoneMaker" not in stored and not Image.open(io.BytesIO(stored)).getexif()
        import hashlib

        assert case.photo_sha256 == hashlib.sha256(stored).hexdigest()
        assert case.token_hash not in answer["follow_up"]  # only the token's hash is kept
        expected = Screener(bundled_model()).screen(load_image(stored))
        assert case.screening_probability == pytest.approx(expected.positive_probability, abs=1e-6)
        assert (case.answer, case.answer_reason) == (expected.answer, expected.reason)
        assert case.device_probabilities == _case_body(client)["probabilities"]
    # The person's follow-up page and its JSON.
    page = client.get(answer["follow_up"])
    assert page.status_code == 200 and answer["number"] in page.text and "Waiting for an expert" in page.text
    assert page.headers["cache-control"] == "no-store"
    status = client.get("/api" + answer["follow_up"].replace("/c/", "/cases/")).json()
    assert status["status"] == "waiting" and status["verdict"] is None and "photo" not in status


@pytest.mark.parametrize("change, status, reason", [
    ({"consent": "false"}, 422, "consent"),
    ({"consent": None}, 422, "consent: field required"),
    ({"photo": "a text field, not a file"}, 422, "photo"),
    ({"photo": b""}, 400, "photo: empty file (0 bytes)"),
    ({"photo": b"%PDF-1.4 not a photo"}, 415, "not an image"),
    ({"photo": _photo_bytes()[:300]}, 400, "truncated"),
    ({"probabilities": {"Monkeypox": 1.0}}, 400, "exactly the model's classes"),
    ({"probabilities": "{not json"}, 422, "probabilities: invalid json"),
    ({"computed": "somewhere"}, 422, "computed"),
    ({"model_sha256": "abc"}, 422, "model_sha256"),
    ({"extra": "field"}, 422, "extra"),
    # Issue 14: strips cost the server seconds and gigabytes once scaled up to the network's input; no photo has them.
    ({"photo": encode(Image.new("RGB", (50000, 1)), "PNG")}, 400, "too small to be a photo"),
    ({"photo": encode(make_photo(1, (600, 4)), "PNG")}, 400, "too small to be a photo"),
    ({"photo": encode(make_photo(1, (900, 60)), "JPEG")}, 400, "extreme aspect ratio"),
])
def test_bad_cases_are_refused_with_a_reason(client, change, status, reason):
    body = {k: v for k, v in _case_body(client, **change).items() if v is not None}  # None: the field left out
    r = client.post("/api/cases", **_form(body))
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"].lower()


@pytest.mark.parametrize("change, where", [
    ({"consent": "yes"}, "consent"), ({"consent": "1"}, "consent"), ({"consent": "True"}, "consent"),
    ({"consent": "on"}, "consent"),
    ({"probabilities": "numeric strings"}, "probabilities"), ({"probabilities": "booleans"}, "probabilities"),
    ({"computed": "Device"}, "computed"), ({"model_sha256": "7"}, "model_sha256"),
])
def test_loose_types_are_refused(client, change, where):
    """Issue 14: consent is exactly the text "true" (as the JSON boolean true was), probabilities are JSON numbers;
    nothing is coerced."""
    body = _case_body(client)
    if change.get("probabilities") == "numeric strings":
        change = {"probabilities": {c: str(p) for c, p in body["probabilities"].items()}}
    elif change.get("probabilities") == "booleans":
        change = {"probabilities": {c: k == 0 for k, c in enumerate(body["probabilities"])}}
    body.update(change)
    r = client.post("/api/cases", **_form(body))
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(where)
    ints = _case_body(client)  # whole numbers are numbers all the same
    ints["probabilities"] = {c: int(k == 0) for k, c in enumerate(ints["probabilities"])}
    assert client.post("/api/cases", **_form(ints)).status_code == 201


@pytest.mark.parametrize("duplicate", ["consent", "photo", "probabilities"])
def test_duplicate_fields_and_json_keys_are_refused(app, client, duplicate):
    """Issue 14: {"consent": false, ..., "consent": true} was read as consent (the last key wins). A form field given
    twice (consent "false" then "true", or two photos), or a key given twice in the probabilities' JSON, is refused
    with the reason."""
    body = _case_body(client)
    form = _form(body)
    fields, files = form["data"], list(form["files"].items())
    if duplicate == "consent":
        fields["consent"] = ["false", "true"]
    elif duplicate == "photo":
        files.append(("photo", ("photo", _photo_bytes(1), "image/jpeg")))
    else:
        first = next(iter(body["probabilities"]))
        fields["probabilities"] = fields["probabilities"].replace(f'"{first}": ', f'"{first}": 0.9, "{first}": ', 1)
    r = client.post("/api/cases", data=fields, files=files)
    assert r.status_code == 422, r.text
    assert ("duplicate key" if duplicate == "probabilities" else "given more than once") in r.json()["detail"]
    assert r.json()["detail"].startswith(duplicate)
    with _db(app) as db:
        assert service.counts(db) == {"waiting": 0, "answered": 0}


def test_probabilities_that_are_not_probabilities_and_broken_bodies_are_refused(client):
    body = _case_body(client)
    body["probabilities"] = {c: 0.9 for c in body["probabilities"]}
    r = client.post("/api/cases", **_form(body))
    assert r.status_code == 400 and "sum to 1" in r.json()["detail"]
    # The base64 JSON body of before, and no body at all: the form's fields are missing.
    r = client.post("/api/cases", json={**body, "photo": base64.b64encode(_photo_bytes()).decode()})
    assert r.status_code == 422 and "photo: Field required" in r.json()["detail"]
    r = client.post("/api/cases", content=b"")
    assert r.status_code == 422


def test_huge_cases_and_decompression_bombs_are_refused(client, app):
    r = client.post("/api/cases", content=b"x" * (7 * 1024 * 1024))  # more than three photos' room
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    r = client.post("/api/screen", content=b"x" * (3 * 1024 * 1024))  # a screening has one photo's room
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert "content-security-policy" in r.headers
    r = _send(client, b"\xff" * (2 * 1024 * 1024 + 1))  # within the request's room for the form, over the photo's
    assert r.status_code == 413 and r.json()["detail"] == "photo larger than 2 MB"

    def stream():  # no Content-Length: counted as it arrives, refused once past the limit
        for _ in range(112):
            yield b"-" * (64 * 1024)

    r = client.post("/api/cases", content=stream(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    bomb = encode(Image.new("RGB", (4000, 4000), (200, 150, 150)), "PNG")  # 16 MP of one colour: a small file
    r = _send(client, bomb)
    assert r.status_code == 400 and "pixels" in r.json()["detail"]
    with _db(app) as db:
        assert service.counts(db) == {"waiting": 0, "answered": 0}
    assert not list(app.state.photos.root.iterdir())  # nothing half-stored


def test_heat_map_of_a_stored_strip_is_refused_with_a_reason(app, client):
    """A photo stored before the loader's shape limits (or put there by hand) is not scaled up to the network's input:
    the heat map answers 422 with the reason, the case page and the photo still open."""
    _expert(app)
    name = app.state.photos.save(encode(make_photo(2, (2048, 40)), "JPEG"))
    with _db(app) as db:
        db.add(Case(number="STRP-0001", token_hash="s" * 64, photo_file=name, photo_sha256="0" * 64,
                    model_sha256="0" * 64, computed="device", device_probabilities={}, predicted="Monkeypox",
                    probabilities={}, screening_probability=0.1, screening_threshold=0.5, answer="negative",
                    status="waiting"))
        db.commit()
    _sign_in(client)
    r = client.get("/expert/cases/STRP-0001/heatmap.png")
    assert r.status_code == 422 and "extreme aspect ratio" in r.json()["detail"] and name not in r.json()["detail"]
    assert client.get("/expert/cases/STRP-0001/photo.jpg").status_code == 200


def test_the_heat_map_is_drawn_once_when_the_case_arrives(app, client, monkeypatch):
    """Issue 14: the server's heat map was screened and drawn again on every expert view. It is drawn when the case
    arrives, kept beside the photo and served from there (the model does not run again); a case stored before maps
    were kept gets its map on its first view, and keeps it. Withdrawing the case deletes the map with the photo."""
    _expert(app)
    sent = _send(client, _photo_bytes(11)).json()
    with _db(app) as db:
        photo_file = service.case_by_number(db, sent["number"]).photo_file
    stored = app.state.photos.heatmap_path(photo_file)
    assert stored.is_file() and stored.parent == app.state.photos.path(photo_file).parent
    screened = []
    screen_and_map = app.state.screener.screen_and_map
    monkeypatch.setattr(app.state.screener, "screen_and_map", lambda image: screened.append(1) or screen_and_map(image))
    _sign_in(client)
    for _ in range(2):
        r = client.get(f"/expert/cases/{sent['number']}/heatmap.png")
        assert r.status_code == 200 and r.content == stored.read_bytes()
    assert screened == []
    stored.unlink()  # as if the case had been stored before maps were kept
    for _ in range(2):
        r = client.get(f"/expert/cases/{sent['number']}/heatmap.png")
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] == 448
    assert screened == [1] and stored.read_bytes() == r.content  # drawn once, then kept
    assert client.post(sent["follow_up"] + "/withdraw").status_code == 200
    assert not stored.exists() and not app.state.photos.path(photo_file).exists()


def test_uploads_and_logins_are_rate_limited(database, tmp_path):
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "d", db=database, upload_limit="2/minute",
                              login_limit="3/minute"))
    with _client(app) as client:
        assert [_send(client, _photo_bytes(k)).status_code for k in range(2)] == [201, 201]
        r = _send(client, _photo_bytes(5))
        assert r.status_code == 429 and "too many uploads" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
        assert r.headers["x-content-type-options"] == "nosniff"  # the security headers wrap the 429 too
        _expert(app)
        assert [_sign_in(client, password="wrong password x").status_code for _ in range(3)] == [401, 401, 401]
        r = _sign_in(client)  # even the right password waits now
        assert r.status_code == 429 and "too many logins" in r.json()["detail"]


def test_an_upload_over_its_limit_is_refused_before_its_body_is_read(tmp_path, monkeypatch):
    """FastAPI reads a form before a route's dependencies run: a limit checked there let a client over its limit
    still make the server parse (and spool to disk) up to 15 MB per request."""
    from starlette.formparsers import MultiPartParser

    parsed = []
    parse = MultiPartParser.parse

    async def counting_parse(self):
        parsed.append(1)
        return await parse(self)

    monkeypatch.setattr(MultiPartParser, "parse", counting_parse)
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "d", upload_limit="1/minute",
                              screen_limit="1/minute"))
    with _client(app) as client:
        assert _send(client).status_code == 201 and len(parsed) == 1
        photo = {"photo": ("p.jpg", _photo_bytes(1), "image/jpeg")}
        assert client.post("/api/screen", files=photo).status_code == 200 and len(parsed) == 2
        assert _send(client, _photo_bytes(2)).status_code == 429
        assert client.post("/api/screen", files=photo).status_code == 429
        assert len(parsed) == 2  # neither refused body was parsed


def test_follow_up_links_unknown_and_withdrawn(app, client):
    assert client.get("/c/" + "A" * 43).status_code == 404
    r = client.get("/api/cases/" + "A" * 43)
    assert r.status_code == 404 and "no case" in r.json()["detail"]
    assert client.get("/c/" + "A" * 500).status_code == 404
    answer = _send(client).json()
    with _db(app) as db:
        photo = app.state.photos.path(service.case_by_number(db, answer["number"]).photo_file)
    assert photo.is_file()
    r = client.post(answer["follow_up"] + "/withdraw")
    assert r.status_code == 200 and "deleted" in r.text
    assert not photo.exists() and client.get(answer["follow_up"]).status_code == 404
    with _db(app) as db:
        assert service.case_by_number(db, answer["number"]) is None
        assert [e.action for e in service.audit_log(db)] == ["case withdrawn"]


EXPERT_ROUTES = [("get", "/expert"), ("get", "/expert/audit"), ("get", "/expert/cases/ABCD-EFGH"),
                 ("get", "/expert/cases/ABCD-EFGH/photo.jpg"), ("get", "/expert/cases/ABCD-EFGH/heatmap.png"),
                 ("post", "/expert/cases/ABCD-EFGH/answer")]


@pytest.mark.parametrize("method, path", EXPERT_ROUTES)
def test_expert_routes_need_a_signed_in_expert(client, method, path):
    r = getattr(client, method)(path, follow_redirects=False, **({"data": {"verdict": "likely-mpox"}} if method == "post" else {}))
    assert r.status_code == 401 and "sign in" in r.json()["detail"]
    r = client.get(path, headers={"accept": "text/html"}, follow_redirects=False) if method == "get" else None
    assert r is None or (r.status_code == 303 and r.headers["location"] == "/expert/login")


def test_sign_in_refusals_sign_out_and_expiry(app, client):
    _expert(app)
    assert client.get("/expert/login").status_code == 200
    for email, password in [("doc@example.org", "wrong password x"), ("nobody@example.org", PASSWORD), ("x", PASSWORD)]:
        r = _sign_in(client, email, password)
        assert r.status_code == 401 and "Wrong e-mail address or password" in r.text
    r = _sign_in(client, "  DOC@example.org ", PASSWORD)  # addresses are case- and space-insensitive
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/expert" in cookie
    assert client.get("/expert").status_code == 200
    assert client.post("/expert/logout", follow_redirects=False).status_code == 303
    assert client.get("/expert").status_code == 401  # the token is gone from the database, not only the browser
    _sign_in(client)
    with _db(app) as db:  # an expired sign-in is refused
        for login in db.query(LoginSession):
            login.expires_at = utcnow() - timedelta(seconds=1)
        db.commit()
    assert client.get("/expert").status_code == 401
    _sign_in(client)
    with _db(app) as db:
        service.set_active(db, "doc@example.org", False)  # disabling signs out at once
    assert client.get("/expert").status_code == 401
    assert _sign_in(client).status_code == 401
    with _db(app) as db:
        actions = [e.action for e in service.audit_log(db)]
    assert actions.count("login refused") == 4 and actions.count("signed in") == 3 and "signed out" in actions


def test_queue_order_case_view_answer_and_audit(app, client):
    _expert(app)
    now = utcnow()
    with _db(app) as db:  # five cases with chosen answers, probabilities and ages (threshold 0.5)
        for number, p, answer, hours in [("AAAA-AAAA", 0.30, "negative", 5), ("BBBB-BBBB", 0.90, "positive", 1),
                                         ("CCCC-CCCC", 0.90, "positive", 3), ("DDDD-DDDD", 0.55, "positive", 9),
                                         ("EEEE-EEEE", 0.70, "cannot tell", 2)]:
            db.add(Case(number=number, token_hash=number * 4, photo_file="none.jpg", photo_sha256="0" * 64,
                        model_sha256="0" * 64, computed="device", device_probabilities={}, predicted="Monkeypox",
                        probabilities={}, screening_probability=p, screening_threshold=0.5, answer=answer,
                        answer_reason="blurred" if answer == "cannot tell" else None, status="waiting",
                        created_at=now - timedelta(hours=hours)))
        db.commit()
        # Screened positive first, then those the model could not judge (a refused photo outranks no positive one,
        # whatever its probability), then negative.
        assert [c.number for c in service.queue(db)] == ["CCCC-CCCC", "BBBB-BBBB", "DDDD-DDDD", "EEEE-EEEE", "AAAA-AAAA"]
        assert [c.number for c in service.queue(db, "age")] == ["DDDD-DDDD", "AAAA-AAAA", "CCCC-CCCC", "EEEE-EEEE",
                                                                "BBBB-BBBB"]
    sent = _send(client, _photo_bytes(7)).json()
    _sign_in(client)
    page = client.get("/expert").text
    assert page.index("CCCC-CCCC") < page.index("BBBB-BBBB") < page.index("DDDD-DDDD") < page.index("EEEE-EEEE")
    assert "cannot tell (blurred)" in page
    assert "9 h ago" in page and "0 min ago" in page
    assert client.get("/expert?order=nonsense").status_code == 400
    view = client.get(f"/expert/cases/{sent['number']}")
    assert view.status_code == 200 and "Model output" in view.text and view.headers["cache-control"] == "no-store"
    assert client.get(f"/expert/cases/{sent['number']}/photo.jpg").headers["content-type"] == "image/jpeg"
    heat = client.get(f"/expert/cases/{sent['number']}/heatmap.png")
    assert heat.status_code == 200 and Image.open(io.BytesIO(heat.content)).size[0] == 448
    assert client.get("/expert/cases/ZZZZ-ZZZZ").status_code == 404
    with _db(app) as db:  # a photo deleted by hand on the server: a 404 with the reason, not a crash
        app.state.photos.path(service.case_by_number(db, "AAAA-AAAA").photo_file).unlink(missing_ok=True)
    for suffix in ("photo.jpg", "heatmap.png"):
        r = client.get(f"/expert/cases/AAAA-AAAA/{suffix}")
        assert r.status_code == 404 and "missing" in r.json()["detail"]
    # Bad answers: an unknown verdict, a message too long, a post from another site.
    url = f"/expert/cases/{sent['number']}/answer"
    assert client.post(url, data={"verdict": "maybe"}).status_code == 400
    assert client.post(url, data={"verdict": "likely-mpox", "message": "x" * 5000}).status_code == 422
    r = client.post(url, data={"verdict": "likely-mpox"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = client.post(url, data={"verdict": "likely-mpox"}, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = client.post(url, data={"verdict": "likely-mpox", "message": "<script>alert(1)</script> Call us."},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/expert?answered={sent['number']}"
    # The person sees the answer, escaped.
    follow = client.get(sent["follow_up"]).text
    assert "An expert has answered" in follow and service.VERDICTS["likely-mpox"] in follow
    assert "<script>alert(1)" not in follow and "&lt;script&gt;alert(1)" in follow
    status = client.get("/api" + sent["follow_up"].replace("/c/", "/cases/")).json()
    assert status["status"] == "answered" and status["verdict"] == "likely-mpox"
    audit = client.get("/expert/audit").text
    assert "viewed case" in audit and "answered" in audit and sent["number"] in audit
    with _db(app) as db:
        events = [(e.action, e.case_number, e.email) for e in service.audit_log(db)]
        assert events[0] == ("answered", sent["number"], "doc@example.org")
        assert ("viewed case", sent["number"], "doc@example.org") in events
        assert service.counts(db) == {"waiting": 5, "answered": 1}


def test_each_photo_and_heat_map_download_is_audited(app, client):
    """Issue 14: one signed-in cookie fetched 30 photos and 5 heat maps and the audit log gained nothing. Each
    download is a row (who, which case), like a case view; a refused one (no such case) is not."""
    _expert(app)
    numbers = [_send(client, _photo_bytes(60 + k)).json()["number"] for k in range(2)]
    _sign_in(client)
    for _ in range(3):
        for number in numbers:
            assert client.get(f"/expert/cases/{number}/photo.jpg").status_code == 200
    assert client.get(f"/expert/cases/{numbers[0]}/heatmap.png").status_code == 200
    assert client.get("/expert/cases/ZZZZ-ZZZZ/photo.jpg").status_code == 404
    with _db(app) as db:
        events = [(e.action, e.case_number, e.email) for e in service.audit_log(db) if e.action.startswith("viewed")]
    assert sorted(events) == sorted([("viewed photo", n, "doc@example.org") for n in numbers] * 3
                                    + [("viewed heat map", numbers[0], "doc@example.org")])
    audit = client.get("/expert/audit").text
    assert "viewed photo" in audit and "viewed heat map" in audit


def test_health_check_says_what_cannot_work(app, client):
    """/healthz: 200 when the database takes a write, the photo folder takes a file and the model is loaded; 503
    naming what failed (with the security headers), and nothing written is kept."""
    import shutil

    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "checks": {"database": "ok", "photos": "ok", "model": "ok",
                                                                        "limits": "ok"}}
    assert "content-security-policy" in r.headers and r.headers["cache-control"] == "no-store"
    assert not list(app.state.photos.root.glob(".healthz-*"))  # the probe file is removed
    with _db(app) as db:
        assert service.counts(db) == {"waiting": 0, "answered": 0}
    shutil.rmtree(app.state.photos.root)  # the data folder's photos deleted under a running server
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["checks"]["photos"] == "failed: missing"
    assert "content-security-policy" in r.headers

    class Broken:
        def connect(self):
            raise OSError("disk I/O error")

    engine, app.state.engine = app.state.engine, Broken()
    try:
        r = client.get("/healthz")
    finally:
        app.state.engine = engine
    assert r.status_code == 503 and r.json()["checks"]["database"] == "failed: OSError"


def test_nul_characters_are_refused_before_the_database(app, client, caplog):
    """PostgreSQL refuses NUL in text: a sign-in address, an answer message or a case number holding one is a 4xx,
    never a 500, and no statement's parameters reach a log line (the engine hides them)."""
    _expert(app)
    assert app.state.engine.hide_parameters
    with caplog.at_level(logging.DEBUG):
        r = client.post("/expert/login", data={"email": "doc\x00@example.org", "password": PASSWORD},
                        follow_redirects=False)
        assert r.status_code in (400, 401), r.text
        assert _sign_in(client).status_code == 303
        sent = _send(client).json()
        assert client.get(f"/expert/cases/{sent['number'][:4]}%00").status_code == 404
        r = client.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "see-health-worker",
                                                                       "message": "call\x00me"},
                        headers={"origin": "http://testserver"})
        assert r.status_code == 400 and "NUL" in r.json()["detail"]
        assert client.get(f"/c/abc%00def").status_code == 404
    assert "doc" not in caplog.text and "call" not in caplog.text
    with _db(app) as db:
        assert any(e.action == "login refused" and e.email == "doc@example.org" for e in service.audit_log(db))


def test_nothing_personal_reaches_the_logs(app, client, caplog):
    _expert(app)
    with caplog.at_level(logging.DEBUG):
        sent = _send(client).json()
        _sign_in(client)
        client.get(f"/expert/cases/{sent['number']}")
        client.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "unlikely-mpox", "message": "secret note"})
        client.get(sent["follow_up"])
    # The test's own HTTP client (httpx) logs its URLs: that is this test, not the service.
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert caplog.records
    token = sent["follow_up"].rsplit("/", 1)[1]
    for secret in (token, "doc@example.org", PASSWORD, "secret note", sent["number"]):
        assert secret not in text


def test_concurrent_submissions_are_all_stored_once(app, client):
    # Some larger than the model's input: they are kept at full size, not at the reduced scale screening would need.
    photos = [_photo_bytes(100 + k, (1200, 900) if k % 4 == 0 else (320, 256)) for k in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: _send(client, p), photos))
    assert [a.status_code for a in answers] == [201] * 16
    numbers = [a.json()["number"] for a in answers]
    assert len(set(numbers)) == 16
    with _db(app) as db:
        assert service.counts(db)["waiting"] == 16
        for photo, number in zip(photos, numbers):  # each number holds the photo its sender sent
            stored = np.asarray(Image.open(app.state.photos.path(service.case_by_number(db, number).photo_file)), float)
            sent = np.asarray(Image.open(io.BytesIO(photo)), float)
            assert stored.shape == sent.shape and np.abs(stored - sent).mean() < 3
    assert len(list(app.state.photos.root.glob("*.jpg"))) == 16


def test_expert_accounts_from_the_command_line(database, tmp_path):
    from click.testing import CliRunner

    from mpoxscan.cli import cli

    where = ["--data-dir", str(tmp_path / "data"), "--db", database]
    run = CliRunner().invoke
    r = run(cli, ["expert", "add", "Doc@Example.org", *where], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0 and "doc@example.org created" in r.output
    r = run(cli, ["expert", "add", "doc@example.org", "--password-stdin", *where], input=f"{PASSWORD}\n")
    assert r.exit_code == 1 and "exists already" in r.output
    r = run(cli, ["expert", "add", "two@example.org", "--password-stdin", *where], input="short\n")
    assert r.exit_code == 1 and "at least 12 characters" in r.output
    r = run(cli, ["expert", "add", "not-an-address", "--password-stdin", *where], input=f"{PASSWORD}\n")
    assert r.exit_code == 1 and "not an e-mail address" in r.output
    assert run(cli, ["expert", "disable", "doc@example.org", *where]).exit_code == 0
    r = run(cli, ["expert", "list", *where])
    assert r.exit_code == 0 and "doc@example.org\tdisabled" in r.output
    assert run(cli, ["expert", "enable", "doc@example.org", *where]).exit_code == 0
    assert "doc@example.org\tactive" in run(cli, ["expert", "list", *where]).output
    import json

    listed = json.loads(run(cli, ["expert", "list", "--json", *where]).output)
    assert [(e["email"], e["active"]) for e in listed] == [("doc@example.org", True)]
    r = run(cli, ["expert", "disable", "nobody@example.org", *where])
    assert r.exit_code == 1 and "no expert account" in r.output
    from mpoxscan.web.db import make_engine, session_factory

    engine = make_engine(database)
    with session_factory(engine)() as db:
        assert service.sign_in(db, "doc@example.org", PASSWORD) is not None
    engine.dispose()


def test_serve_and_expert_refuse_an_unreachable_database_in_one_line(tmp_path):
    from click.testing import CliRunner

    from mpoxscan.cli import cli

    bad = "postgresql://nobody:pw@/nothing?host=/nonexistent-socket-dir"
    for args in (["expert", "list", "--db", bad], ["serve", "--db", bad, "--data-dir", str(tmp_path)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and r.output.startswith("error: cannot open the database") and "pw" not in r.output
        assert "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", "--upload-limit", "lots", "--data-dir", str(tmp_path)])
    assert r.exit_code == 1 and "not a rate limit" in r.output
    r = CliRunner().invoke(cli, ["serve", "--notify-url", "ftp://hooks.example.org/x", "--data-dir",
                                 str(tmp_path / "never")])
    assert r.exit_code == 1 and "--notify-url must be an http" in r.output and not (tmp_path / "never").exists()
    (tmp_path / "a-file").write_text("x")
    for command in ("serve", "expert list"):
        r = CliRunner().invoke(cli, [*command.split(), "--data-dir", str(tmp_path / "a-file" / "data")])
        assert r.exit_code == 1 and r.output.startswith("error: cannot use") and "Traceback" not in r.output


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(tmp_path):
    """Rate limits count the real client behind a proxy given with --proxy, and ignore forged headers otherwise."""
    import httpx

    from mpoxscan.web.testing import ServerThread

    def limited_after_two(trusted: str | None, spoof: bool) -> list[int]:
        app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / str(trusted) / str(spoof),
                                  upload_limit="2/minute"))
        body = _case_body(_client(app))
        codes = []
        with ServerThread(app, trusted) as server:
            for k in range(3):  # three clients, one upload each (or one client pretending to be three)
                headers = {"x-forwarded-for": f"203.0.113.{k}"} if spoof else {}
                codes.append(httpx.post(server.url + "/api/cases", **_form(body), headers=headers).status_code)
        return codes

    assert limited_after_two("127.0.0.1", spoof=True) == [201, 201, 201]  # the proxy's clients are told apart
    assert limited_after_two(None, spoof=True) == [201, 201, 429]  # not trusted: the forged header changes nothing



def test_purge_deletes_old_answered_cases_and_their_photos(app, client, database, tmp_path):
    from click.testing import CliRunner

    from mpoxscan.cli import cli

    expert = _expert(app)
    numbers = [_send(client, _photo_bytes(40 + k)).json()["number"] for k in range(3)]
    with _db(app) as db:
        for number, days in zip(numbers[:2], (100, 10)):
            case = service.case_by_number(db, number)
            service.answer_case(db, case, expert, "unlikely-mpox", "")
            case.answered_at = utcnow() - timedelta(days=days)
        db.commit()
        old_photo = app.state.photos.path(service.case_by_number(db, numbers[0]).photo_file)
    old_map = app.state.photos.heatmap_path(old_photo.name)
    assert old_map.is_file()
    r = CliRunner().invoke(cli, ["cases", "purge", "--answered-days", "30", "--data-dir", str(tmp_path / "data"),
                                 "--db", database])
    assert r.exit_code == 0 and "1 answered case(s)" in r.output
    assert not old_photo.exists() and not old_map.exists()
    with _db(app) as db:
        assert service.case_by_number(db, numbers[0]) is None
        assert service.case_by_number(db, numbers[1]).status == "answered"  # answered 10 days ago: kept
        assert service.case_by_number(db, numbers[2]).status == "waiting"  # never purged while waiting
        assert ("case purged", numbers[0]) in [(e.action, e.case_number) for e in service.audit_log(db)]
    assert len(list(app.state.photos.root.glob("*.jpg"))) == 2


def test_serve_purges_by_its_keep_days_at_start_and_the_page_is_told_the_figure(app, client, database, tmp_path,
                                                                              monkeypatch):
    """Issue 16, item 5: the retention shown to the person before consent is the server's own (`serve --keep-days`,
    /api/privacy), and `serve` applies it when it starts (not only when someone runs `cases purge` from cron)."""
    from click.testing import CliRunner

    from mpoxscan.cli import cli
    from mpoxscan.web import app as web_app

    assert client.get("/api/privacy").json()["answered_cases_kept_days"] == 90  # the default
    expert = _expert(app)
    numbers = [_send(client, _photo_bytes(60 + k)).json()["number"] for k in range(2)]
    with _db(app) as db:
        for number, days in zip(numbers, (8, 6)):
            case = service.case_by_number(db, number)
            service.answer_case(db, case, expert, "unlikely-mpox", "")
            case.answered_at = utcnow() - timedelta(days=days)
        db.commit()
    started = {}

    class NoServer:  # the app `serve` built, without listening on a port
        def run(self):
            started["privacy"] = _client(started["app"]).get("/api/privacy").json()

    def make_server(app, host, port, trusted_proxies=None, **tls):
        started["app"] = app
        return NoServer()

    monkeypatch.setattr(web_app, "make_server", make_server)
    r = CliRunner().invoke(cli, ["serve", "--keep-days", "7", "--data-dir", str(tmp_path / "data"), "--db", database])
    assert r.exit_code == 0, r.output
    assert "1 case(s) answered over 7 days ago deleted" in r.output
    assert started["privacy"]["answered_cases_kept_days"] == 7
    with _db(app) as db:
        assert service.case_by_number(db, numbers[0]) is None
        assert service.case_by_number(db, numbers[1]) is not None  # answered 6 days ago: kept
    assert CliRunner().invoke(cli, ["serve", "--keep-days", "0", "--data-dir", str(tmp_path)]).exit_code == 2


def test_cannot_tell_is_never_shown_as_a_class_or_a_negative():
    """The dashboard's class comes from the photo with the highest mpox probability: none where the model could not
    judge that photo, even when another photo of the case was judged; the webhook says null, not false."""
    from types import SimpleNamespace

    from mpoxscan.web.notify import case_message

    def case(*photos):
        return SimpleNamespace(predicted="Monkeypox", photos=[SimpleNamespace(screening_probability=p, answer=a)
                                                              for p, a in photos])

    assert service.model_class(case((0.30, "positive"), (0.45, "cannot tell"))) is None
    assert service.model_class(case((0.45, "positive"), (0.30, "cannot tell"))) == "Monkeypox"
    assert service.model_class(case((0.05, "negative"))) == "Monkeypox"
    unsure = case_message("AB12-CD34", 0.5, "cannot tell", "too dark", "http://x/expert/cases/AB12-CD34")
    assert unsure["screened_positive"] is None and "cannot tell" in unsure["text"]
    assert case_message("AB12-CD34", 0.01, "negative", None, "http://x")["screened_positive"] is False


def test_experts_are_notified_of_new_cases_without_the_photo(tmp_path, caplog):
    """A webhook receives the case number, the answer and the dashboard link; a webhook that is down costs only the
    notification, and its failure is logged without the case."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook?secret=abc"
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "d", notify_url=url))
    with _client(app) as client:
        sent = _send(client).json()
        hook.shutdown()
        assert len(received) == 1
        message = received[0]
        assert message["case"] == sent["number"] and message["event"] == "case.waiting"
        assert message["dashboard"] == f"http://testserver/expert/cases/{sent['number']}"
        assert sent["number"] in message["text"] and 0 <= message["mpox_probability"] <= 1
        assert message["answer"] in ("positive", "negative", "cannot tell") and message["photos"] == 1
        token = sent["follow_up"].rsplit("/", 1)[1]
        assert token not in json.dumps(message) and "photo" not in message
        # The person answers an expert's question: the experts learn that the case is back, never the words.
        with app.state.sessions() as db:
            expert = service.add_expert(db, "doc@example.org", "correct horse battery staple")
            service.ask_person(db, service.case_by_number(db, sent["number"]), expert, None, "Since when?")
        hook = HTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        app.state.settings.notify_url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        assert client.post(f"/c/{token}/reply", data={"text": "Two weeks, itchy."},
                           follow_redirects=False).status_code == 303
        hook.shutdown()
        replied = received[1]
        assert replied["event"] == "case.replied" and replied["case"] == sent["number"]
        assert replied["dashboard"].endswith(f"/expert/cases/{sent['number']}") and sent["number"] in replied["text"]
        assert "itchy" not in json.dumps(replied) and token not in json.dumps(replied)
        # The webhook is down: the case is stored all the same, and the log line names neither the URL nor the case.
        hook.server_close()
        with caplog.at_level(logging.WARNING, logger="mpoxscan.notify"):
            r = _send(client, _photo_bytes(9))
        assert r.status_code == 201
        warnings = [rec.getMessage() for rec in caplog.records if rec.name == "mpoxscan.notify"]
        assert warnings and "not delivered" in warnings[0]
        assert r.json()["number"] not in warnings[0] and "secret" not in warnings[0]


def test_the_service_runs_without_pytorch(tmp_path):
    """`serve` needs ONNX Runtime, not PyTorch: a fresh process sends a case, draws its heat map and screens on the
    server, and has not imported torch (or scikit-learn, captum)."""
    import subprocess
    import sys

    script = f"""
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import Settings
from mpoxscan.web import cases as service
import mpoxscan.cli
app = create_app(Settings(model=bundled_model(), data_dir=Path({str(tmp_path / 'data')!r})))
client = TestClient(app).__enter__()  # the lifespan: database and migrations
info = client.get("/api/model").json()
photo = {_photo_bytes()!r}
r = client.post("/api/cases", files={{"photo": ("photo", photo)}}, data={{"consent": "true", "computed": "device",
                "probabilities": json.dumps({{c: 1 / len(info["classes"]) for c in info["classes"]}}),
                "model_sha256": info["sha256"]}})
with app.state.sessions() as db:
    service.add_expert(db, "doc@example.org", {PASSWORD!r})
client.post("/expert/login", data={{"email": "doc@example.org", "password": {PASSWORD!r}}})
codes = [r.status_code, client.get("/expert/cases/" + r.json()["number"] + "/heatmap.png").status_code,
         client.post("/api/screen", files={{"photo": ("photo", photo)}}).status_code]
print(codes, sorted(m for m in ("torch", "sklearn", "captum") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[201, 200, 200] []"


# Several photos per case and the optional questions (issue: journey, items 2 and 3).

QUESTIONS_SENT = {"symptom_duration": "1-3-weeks", "body_site": "genitals-anus", "fever": "yes",
                  "mpox_contact": "unknown", "age_band": "30-44"}


def _more(client, *photos: bytes) -> dict:
    """The form fields of photos 2 and 3."""
    probabilities = _case_body(client)["probabilities"]
    fields = {}
    for k, photo in enumerate(photos, start=2):
        fields.update({f"photo_{k}": photo, f"computed_{k}": "device", f"probabilities_{k}": probabilities})
    return fields


def _stored_names(app) -> list[str]:
    photos = app.state.photos
    return sorted(photos.names() if hasattr(photos, "names") else (p.name for p in photos.root.iterdir()))


@pytest.mark.parametrize("store", ["folder", "db"])
def test_a_case_of_three_photos_is_screened_stored_shown_kept_by_the_sweep_and_withdrawn_whole(database, tmp_path,
                                                                                              store):
    """Each photo is screened again by the server and kept with its heat map under the first photo's stem (the
    naming rule), on the folder store and the database store alike; the sweep keeps them all, the expert sees every
    photo with its map and answer and the person's answers; withdrawing the case deletes every file."""
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "data", db=database, photo_store=store,
                              max_upload_bytes=2 * 1024 * 1024, upload_limit="1000/hour", login_limit="1000/hour"))
    with _client(app) as client:
        jpegs = [_photo_bytes(70 + k, (320 + 16 * k, 256)) for k in range(3)]
        r = _send(client, jpegs[0], **_more(client, *jpegs[1:]), **QUESTIONS_SENT)
        assert r.status_code == 201, r.text
        sent = r.json()
        assert sent["photos"] == 3
        screener = Screener(bundled_model())
        with _db(app) as db:
            case = service.case_by_number(db, sent["number"])
            stem = case.photo_file.removesuffix(".jpg")
            assert [(p.position, p.photo_file) for p in case.photos] == [
                (1, f"{stem}.jpg"), (2, f"{stem}.2.jpg"), (3, f"{stem}.3.jpg")]
            expected = []
            for photo in case.photos:
                stored = app.state.photos.read(photo.photo_file)
                assert photo.photo_sha256 == __import__("hashlib").sha256(stored).hexdigest()
                answer = screener.screen(load_image(stored))
                assert photo.screening_probability == pytest.approx(answer.positive_probability, abs=1e-6)
                assert (photo.answer, photo.answer_reason) == (answer.answer, answer.reason)
                assert app.state.photos.read_heatmap(photo.photo_file) is not None
                expected.append(answer.positive_probability)
            assert case.screening_probability == pytest.approx(max(expected), abs=1e-6)
            assert {f: getattr(case, f) for f in service.QUESTIONS} == {**dict.fromkeys(service.QUESTIONS),
                                                                       **QUESTIONS_SENT}
            assert service.sweep_photos(db, app.state.photos, grace_s=0).removed == []
        names = _stored_names(app)
        assert names == sorted([f"{stem}.jpg", f"{stem}.heatmap.png", f"{stem}.2.jpg", f"{stem}.2.heatmap.png",
                                f"{stem}.3.jpg", f"{stem}.3.heatmap.png"])
        # The expert: every photo with its map and answer, and what the person said; each download audited.
        _expert(app)
        _sign_in(client)
        page = client.get(f"/expert/cases/{sent['number']}").text
        assert "3 photos" in page and "What the person said" in page
        for k in (2, 3):
            assert f'id="photo-{k}"' in page and f"/expert/cases/{sent['number']}/photos/{k}/heatmap.png" in page
        assert 'id="q-fever">Yes<' in page and "1 to 3 weeks" in page and "Genitals or anal area" in page
        assert 'id="q-swollen_glands"' not in page  # not answered: not shown
        for k, jpeg in ((2, jpegs[1]), (3, jpegs[2])):
            r = client.get(f"/expert/cases/{sent['number']}/photos/{k}/photo.jpg")
            assert r.status_code == 200 and r.content == app.state.photos.read(f"{stem}.{k}.jpg")
            heat = client.get(f"/expert/cases/{sent['number']}/photos/{k}/heatmap.png")
            assert heat.status_code == 200 and heat.content == app.state.photos.read_heatmap(f"{stem}.{k}.jpg")
        r = client.get(f"/expert/cases/{sent['number']}/photos/4/photo.jpg")
        assert r.status_code == 404 and "no photo 4" in r.json()["detail"]
        with _db(app) as db:
            details = {(e.action, e.detail) for e in service.audit_log(db) if e.case_number == sent["number"]}
        assert {("viewed photo", "photo 2"), ("viewed heat map", "photo 3")} <= details
        queue = client.get("/expert").text
        assert "Fever: Yes · Duration: 1 to 3 weeks · Contact: I don&#39;t know" in queue
        # Withdrawn: every photo and map goes with the case.
        assert client.post(sent["follow_up"] + "/withdraw").status_code == 200
        assert _stored_names(app) == []
        with _db(app) as db:
            from sqlalchemy import func, select

            from mpoxscan.web.tables import CasePhoto

            assert db.scalar(select(func.count()).select_from(CasePhoto)) == 0


def test_a_refused_photo_stores_nothing_and_the_reason_names_it(app, client):
    """All or nothing: photo 3 unusable (or too large) and neither photo 1 nor 2 is stored; the reason says which."""
    good = [_photo_bytes(80), _photo_bytes(81)]
    r = _send(client, good[0], **_more(client, good[1], b"not a photo at all"))
    assert r.status_code == 415 and r.json()["detail"].startswith("photo 3: not an image")
    r = _send(client, good[0], **_more(client, good[1], encode(make_photo(5, (4000, 30)), "PNG")))
    assert r.status_code == 400 and r.json()["detail"].startswith("photo 3:")
    # Three photos near the size limit fit in the request (its limit has room for three); the third one over it.
    big = b"\xff" * (2 * 1024 * 1024 - 10)
    r = _send(client, big, **_more(client, big, b"\xff" * (2 * 1024 * 1024 + 1)))
    assert r.status_code == 413 and r.json()["detail"] == "photo 3 larger than 2 MB"
    with _db(app) as db:
        assert service.counts(db) == {"waiting": 0, "answered": 0}
    assert not list(app.state.photos.root.iterdir())
    # A storage failure on photo 3 takes photos 1 and 2 back too.
    save_extra = app.state.photos.save_extra

    def refuse_third(name, position, jpeg):
        if position == 3:
            raise service.StorageUnavailable("cannot store the photo 3: the disk is full")
        return save_extra(name, position, jpeg)

    app.state.photos.save_extra = refuse_third
    try:
        r = _send(client, good[0], **_more(client, good[1], _photo_bytes(82)))
    finally:
        del app.state.photos.save_extra
    assert r.status_code == 503 and "photo 3" in r.json()["detail"]
    assert not list(app.state.photos.root.iterdir())
    with _db(app) as db:
        assert service.counts(db) == {"waiting": 0, "answered": 0}


@pytest.mark.parametrize("change, status, reason", [
    ({"photo_4": b"x"}, 422, "at most 3 photos per case"),
    ({"photo_2": b"x"}, 422, "computed_2: required with the other fields of photo 2"),
    ({"photo_3": b"x", "computed_3": "device", "probabilities_3": {"Monkeypox": 1.0}}, 422,
     "photo_3 given without photo_2"),
    ({"photo_2": b"x", "computed_2": "device", "probabilities_2": {"Monkeypox": 1.0}}, 400,
     "probabilities_2: probabilities must name exactly"),
    ({"computed_2": "phone", "photo_2": b"x", "probabilities_2": {"Monkeypox": 1.0}}, 422, "computed_2"),
    ({"fever": "maybe"}, 422, "fever: Input should be 'yes', 'no' or 'unknown'"),
    ({"age_band": "40"}, 422, "age_band: Input should be"),
    ({"body_site": "FACE"}, 422, "body_site"),
    ({"symptom_duration": "2 weeks"}, 422, "symptom_duration"),
    ({"pets": "yes"}, 422, "pets: Extra inputs are not permitted"),
])
def test_bad_extra_photos_and_answers_are_refused_with_a_reason(app, client, change, status, reason):
    r = _send(client, **change)
    assert r.status_code == status and reason in r.json()["detail"], r.text
    assert not list(app.state.photos.root.iterdir())


def test_unanswered_questions_are_null_and_one_photo_cases_are_unchanged(app, client):
    """The page leaves unanswered questions out; an empty value means the same. A client of before (one photo, no
    questions) gets the case it got."""
    sent = _send(client, fever="", age_band="65-plus").json()
    with _db(app) as db:
        case = service.case_by_number(db, sent["number"])
        assert (case.fever, case.age_band, case.symptom_duration) == (None, "65-plus", None)
        assert [p.photo_file for p in case.photos] == [case.photo_file] and sent["photos"] == 1
        assert case.photos[0].screening_probability == case.screening_probability


def test_the_queue_ranks_a_case_by_its_most_urgent_photo_and_highest_probability(app, client, monkeypatch):
    """The server's answers are set per photo here (by the photo's width): a case whose worrying photo is not its
    first still comes first."""
    import dataclasses

    screen_and_map = app.state.screener.screen_and_map
    chosen = {}  # width -> (answer, probability)

    def fixed(image):
        answer, cam, seen = screen_and_map(image)
        wanted, p = chosen[image.size[0]]
        return dataclasses.replace(answer, answer=wanted, positive_probability=p,
                                   reason="blurred" if wanted == "cannot tell" else None), cam, seen

    monkeypatch.setattr(app.state.screener, "screen_and_map", fixed)
    cases = {"one": [("negative", 0.40)], "two": [("negative", 0.10), ("negative", 0.35)],
             "high-third": [("negative", 0.05), ("negative", 0.20), ("negative", 0.45)],
             "unsure-second": [("negative", 0.02), ("cannot tell", 0.01)],
             "positive-third": [("negative", 0.03), ("negative", 0.04), ("positive", 0.60)]}
    numbers, width = {}, 300
    for name, photos in cases.items():
        jpegs = []
        for answer in photos:
            chosen[width] = answer
            jpegs.append(_photo_bytes(width, (width, 256)))
            width += 8
        r = _send(client, jpegs[0], **_more(client, *jpegs[1:]))
        assert r.status_code == 201, r.text
        numbers[r.json()["number"]] = name
    with _db(app) as db:
        assert [numbers[c.number] for c in service.queue(db)] == ["positive-third", "unsure-second", "high-third",
                                                                  "one", "two"]
        case = next(c for c in service.queue(db) if numbers[c.number] == "unsure-second")
        assert (case.answer, case.answer_reason, case.screening_probability) == ("cannot tell", "blurred", 0.02)


def test_migration_0006_gives_an_existing_case_its_photo_as_photo_1(database, tmp_path):
    """A case stored under 0005 keeps its photo: it becomes photo 1 with the case's screening, no question
    answered; the app then shows and withdraws it like a new one."""
    from sqlalchemy import text

    from mpoxscan.web.db import make_engine, migrate

    engine = make_engine(database)
    migrate(engine, "0005")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO cases (number, token_hash, created_at, photo_file, photo_sha256, model_sha256, computed, "
            "device_probabilities, predicted, probabilities, screening_probability, screening_threshold, answer, "
            "answer_reason, status, language) VALUES ('OLDC-0001', :h, :t, 'abc123.jpg', 's', 'm', 'device', "
            "'{\"Monkeypox\": 0.7}', 'Monkeypox', '{\"Monkeypox\": 0.6}', 0.6, 0.5, 'positive', NULL, 'waiting', "
            "'fr')"), {"h": "h" * 64, "t": utcnow()})
    migrate(engine, "0006")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0006"
        rows = connection.execute(text(
            "SELECT c.number, p.position, p.photo_file, p.photo_sha256, p.computed, p.screening_probability, p.answer, "
            "c.fever, c.age_band FROM case_photos p JOIN cases c ON c.id = p.case_id")).all()
    assert [tuple(r) for r in rows] == [("OLDC-0001", 1, "abc123.jpg", "s", "device", 0.6, "positive", None, None)]
    from mpoxscan.web.db import session_factory

    migrate(engine)  # the app's tables are those of the newest revision
    with session_factory(engine)() as db:
        case = service.case_by_number(db, "OLDC-0001")
        assert case.photos[0].device_probabilities == {"Monkeypox": 0.7}
        assert case.photos[0].probabilities == {"Monkeypox": 0.6}
        assert service.question_answers(case) == []
    engine.dispose()


def test_the_page_offers_exactly_the_servers_answers_to_each_question():
    """The phone page's choices are the server's vocabulary (a choice the server refuses would lose the case), each
    with its text in the catalogues."""
    from html.parser import HTMLParser

    from mpoxscan.web import i18n
    from mpoxscan.web.settings import STATIC

    class Selects(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found, self.current = {}, None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "select" and attrs.get("name") in service.QUESTIONS:
                self.current = attrs["name"]
                self.found[self.current] = []
            elif tag == "option" and self.current and attrs.get("value"):
                self.found[self.current].append(attrs["value"])
                assert attrs["data-i18n"] == f"q.{self.current}.{attrs['value']}"

        def handle_endtag(self, tag):
            if tag == "select":
                self.current = None

    parser = Selects()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.found == {field: list(codes) for field, codes in service.QUESTIONS.items()}
    for field, codes in service.QUESTIONS.items():
        for code in codes:
            assert i18n.text("en", f"q.{field}.{code}") != f"q.{field}.{code}"
