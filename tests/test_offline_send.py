"""Issue 28: a case composed without a connection is sent later, exactly once (the idempotency key the server
checks), and the phone that sent a PIN-locked case reads its status with its device key (never another browser with
the link). On SQLite and PostgreSQL (the `database` fixture)."""

from __future__ import annotations

import secrets
import threading

from sqlalchemy import func, select

from test_cases import _case_body, _client, _db, _form
from test_conversation import _app, _ask, _expert, _sign_in, _stored_names, _token

from mpoxscan.web.tables import AuditEvent, Case


def _key() -> str:
    """What outbox.js makes: 32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def test_a_send_replayed_with_its_idempotency_key_finds_the_case_it_made(database, tmp_path):
    """The page's queue sends a case; the answer is lost; the queue sends it again (the same form, the same key):
    the server answers 200 with the case of the first send (same number, link and device key), and stores nothing
    more (one case, its photo and heat map once). A new key is a new case. Without the fix the replay made a second
    case with a second link."""
    app = _app(database, tmp_path)
    with _client(app) as client:
        key = _key()
        body = _case_body(client, pin="2468", idempotency_key=key)
        first = client.post("/api/cases", **_form(body))
        assert first.status_code == 201 and first.json()["replayed"] is False
        files_after_first = _stored_names(app)
        again = client.post("/api/cases", **_form(body))
        assert again.status_code == 200, again.text
        a, b = first.json(), again.json()
        assert b["replayed"] is True
        assert (b["number"], b["follow_up"], b["device_key"]) == (a["number"], a["follow_up"], a["device_key"])
        assert _stored_names(app) == files_after_first  # nothing new stored (the replay's photo not kept)
        with _db(app) as db:
            assert db.scalar(select(func.count()).select_from(Case)) == 1
            stored = db.scalar(select(Case.idempotency_hash))
            assert stored and key not in stored and len(stored) == 64  # a hash of the key, never the key
        # The link and the device key of the replayed answer open the case.
        assert client.get(f"/api/cases/{_token(b)}", headers={"x-device-key": b["device_key"]}).status_code == 200
        other = client.post("/api/cases", **_form(_case_body(client, idempotency_key=_key())))
        assert other.status_code == 201 and other.json()["number"] != a["number"]
        for bad in ("short", "x" * 43 + "!", "é" * 43):
            r = client.post("/api/cases", **_form(_case_body(client, idempotency_key=bad)))
            assert r.status_code == 422 and "idempotency_key" in r.text


def test_two_sends_of_one_case_at_once_make_one_case(database, tmp_path):
    """The page and its service worker (Background Sync) may send the same queued case at the same moment: both
    get the same case, and the loser's photos leave the store (the unique index on the key's hash decides)."""
    app = _app(database, tmp_path)
    with _client(app) as client:
        body = _case_body(client, idempotency_key=_key())
        answers, start = [], threading.Barrier(4)

        def send() -> None:
            start.wait()
            answers.append(client.post("/api/cases", **_form(body)))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in answers) == [200, 200, 200, 201], [r.text for r in answers]
        assert len({r.json()["number"] for r in answers}) == 1
        assert len({r.json()["follow_up"] for r in answers}) == 1
        with _db(app) as db:
            assert db.scalar(select(func.count()).select_from(Case)) == 1
            photo = db.scalar(select(Case.photo_file))
        stem = photo.rsplit(".", 1)[0]
        assert all(name.startswith(stem) for name in _stored_names(app)), _stored_names(app)


def test_the_sending_phone_reads_a_locked_case_with_its_device_key_and_no_one_else(database, tmp_path):
    """Issue 28, item 1: the status (and so the "new" badge and the notification) of a PIN-locked case, for the
    phone that sent it: X-Device-Key opens GET /api/cases/<token>; without it, with another case's key or a wrong
    one, the answer is 401 (the PIN is still needed on another browser). The key is never taken from the address."""
    app = _app(database, tmp_path)
    with _client(app) as client:
        sent = client.post("/api/cases", **_form(_case_body(client, pin="1357"))).json()
        other = client.post("/api/cases", **_form(_case_body(client, pin="1357"))).json()
        token, status = _token(sent), f"/api/cases/{_token(sent)}"
        assert client.get(status).status_code == 401
        for wrong in (other["device_key"], "x" * 43, ""):
            assert client.get(status, headers={"x-device-key": wrong}).status_code == 401
        assert client.get(status + f"?device_key={sent['device_key']}").status_code == 401
        mine = client.get(status, headers={"x-device-key": sent["device_key"]})
        assert mine.status_code == 200 and mine.json()["unseen"] == 0 and mine.json()["locked"] is True
        # The expert asks: the phone sees the message as new, without the PIN (and reading the status marks nothing
        # seen: the follow-up page does that).
        _expert(app)
        _sign_in(client)
        assert _ask(client, sent["number"], text="Does it itch?").status_code == 303
        client.cookies.clear()
        for _ in range(2):
            now = client.get(status, headers={"x-device-key": sent["device_key"]}).json()
            assert now["status"] == "asked" and now["unseen"] == 1
        # The follow-up page itself opens on that phone with the key (posted, as followup.js does), not elsewhere.
        assert 'id="unlock-form"' in client.get(f"/c/{token}").text
        opened = client.post(f"/c/{token}/unlock", data={"device_key": sent["device_key"]}, follow_redirects=False)
        assert opened.status_code == 303
        page = client.get(f"/c/{token}")
        assert 'id="reply-section"' in page.text and "Does it itch?" in page.text
        with _db(app) as db:
            assert db.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "wrong PIN")) == 0


def test_the_migration_0009_keeps_cases_and_goes_back(database):
    """0009_offline_send adds the idempotency key's hash (a unique index) and the message language in place: a case
    with a message from the revision before is kept whole, and the downgrade removes both again."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect, text

    from mpoxscan.web.db import MIGRATIONS, make_engine, migrate
    from mpoxscan.web.tables import utcnow

    before = "0008_hardening"
    engine = make_engine(database)
    migrate(engine, before)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO cases (number, token_hash, created_at, photo_file, photo_sha256, model_sha256, computed, "
            "device_probabilities, predicted, probabilities, screening_probability, screening_threshold, status, "
            "answer, language) VALUES ('OLDC-0009', 'h', :t, 'x.jpg', '0', '0', 'device', '{}', 'Healthy', '{}', "
            "0.1, 0.5, 'asked', 'negative', 'fr')"), {"t": utcnow()})
        case_id = connection.scalar(text("SELECT id FROM cases"))
        connection.execute(text("INSERT INTO messages (case_id, author, kind, text, created_at) VALUES "
                                "(:c, 'expert', 'question', 'Since when?', :t)"), {"c": case_id, "t": utcnow()})
    migrate(engine)
    assert "language" in {c["name"] for c in inspect(engine).get_columns("messages")}
    assert any(i["unique"] and i["column_names"] == ["idempotency_hash"] for i in inspect(engine).get_indexes("cases"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT number, idempotency_hash FROM cases")).all() == [("OLDC-0009", None)]
        assert connection.execute(text("SELECT text, language FROM messages")).all() == [("Since when?", None)]
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:  # and back
        config.attributes["connection"] = connection
        command.downgrade(config, before)
    assert "idempotency_hash" not in {c["name"] for c in inspect(engine).get_columns("cases")}
    assert "language" not in {c["name"] for c in inspect(engine).get_columns("messages")}
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM messages")) == 1
    migrate(engine)
    engine.dispose()


def test_a_send_that_loses_the_race_to_its_twin_keeps_nothing_of_its_own(database, tmp_path, monkeypatch):
    """The race itself, made certain: the second send of a key checks before the first one is committed (its look-up
    finds nothing), so its insert hits the unique index; it then answers with the first case and deletes the photos
    it had stored."""
    import io

    from PIL import Image

    from mpoxscan.web import cases as service
    from test_cases import _photo_bytes

    app = _app(database, tmp_path)
    with _client(app):
        screener, store = app.state.screener, app.state.photos
        probabilities = {c: 1 / len(screener.classes) for c in screener.classes}
        key = _key()

        def submit():
            photo = Image.open(io.BytesIO(_photo_bytes(3))).convert("RGB")
            with _db(app) as db:
                done = service.submit_case(db, store, screener, photo, probabilities, "device", "0" * 64,
                                           idempotency_key=key)
                return done.case.number, done.token, done.replayed

        first = submit()
        real = service.case_by_idempotency_hash
        calls = []

        def not_yet(db, digest):  # the first look-up of the second send comes before the first send's commit
            calls.append(digest)
            return None if len(calls) == 1 else real(db, digest)

        monkeypatch.setattr(service, "case_by_idempotency_hash", not_yet)
        second = submit()
        assert len(calls) == 2  # the look-up before storing, and the one after the refused insert
        assert second == (first[0], first[1], True)
        with _db(app) as db:
            assert db.scalar(select(func.count()).select_from(Case)) == 1
            photo = db.scalar(select(Case.photo_file))
        stem = photo.rsplit(".", 1)[0]
        assert all(name.startswith(stem) for name in _stored_names(app)), _stored_names(app)
