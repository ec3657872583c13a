"""The conversation about a case (the expert asks, the person replies on the follow-up page, "new answer", local
notifications) and the follow-up page's PIN lock: the server on SQLite and PostgreSQL (the `database` fixture), both
photo stores, the migration from 0005 with cases in it, and the whole journey in Chromium."""

from __future__ import annotations

import hashlib
import io
import json
import re

import pytest
from PIL import Image
from sqlalchemy import select

from conftest import encode, make_photo
from test_cases import PASSWORD, _client, _db, _expert, _photo_bytes, _send, _sign_in

from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import cases as service
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import Settings
from mpoxscan.web.tables import AuditEvent, Case, Message, RateLimitHit, StoredPhoto, utcnow


def _app(database, tmp_path, **changes):
    return create_app(Settings(**{"model": bundled_model(), "data_dir": tmp_path / "data", "db": database,
                                  "max_upload_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000,
                                  "upload_limit": "1000/hour", "login_limit": "1000/hour", **changes}))


@pytest.fixture(params=["folder", "db"])
def talk(request, database, tmp_path):
    """A client of an app with the photo store named by the parameter (a folder, or the database)."""
    with _client(_app(database, tmp_path, photo_store=request.param)) as client:
        yield client


def _token(sent: dict) -> str:
    return sent["follow_up"].rsplit("/", 1)[1]


def _case(app, number: str) -> Case:
    with _db(app) as db:
        case = service.case_by_number(db, number)
        case.messages  # loaded while the session is open
        return case


def _stored_names(app) -> list[str]:
    """Every file (or row) the photo store holds."""
    photos = app.state.photos
    if isinstance(photos, service.PhotoStore):
        return sorted(p.name for p in photos.root.iterdir())
    with _db(app) as db:
        return sorted(db.scalars(select(StoredPhoto.name)))


def _gps_jpeg(seed: int = 5) -> bytes:
    """A phone photo carrying a place and a camera in its EXIF."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS: latitude
    return encode(make_photo(seed, (400, 300)), "JPEG", quality=92, exif=exif.tobytes())


def _ask(client, number: str, request: str = "another-photo", text: str = ""):
    return client.post(f"/expert/cases/{number}/ask", data={"request": request, "text": text}, follow_redirects=False)


def _reply(client, token: str, text: str = "", photo: bytes | None = None):
    files = {"photo": ("photo", photo, "application/octet-stream")} if photo is not None else None
    return client.post(f"/c/{token}/reply", data={"text": text}, files=files, follow_redirects=False)


def test_the_expert_asks_the_person_replies_with_a_photo_and_the_case_comes_back(talk):
    """Ask -> "asked" (out of the queue, the canned request in the person's language, marked new until the page is
    opened) -> a reply with a photo (stripped, re-screened, stored as <stem>.reply-*.jpg by the photo store) ->
    "replied" (first in the queue, marked) -> the conclusion (new again) -> withdrawal deletes the reply photo and
    the messages. Every step audited; the person's words never in the audit log."""
    client, app = talk, talk.app
    _expert(app)
    assert _sign_in(client).status_code == 303
    sent = _send(client, language="fr").json()
    other = _send(client, _photo_bytes(3)).json()
    token, number = _token(sent), sent["number"]
    assert client.get(f"/api/cases/{token}").json()["messages"] == []

    page = client.get(f"/expert/cases/{number}").text
    assert 'id="ask-form"' in page and "Please send another photo" in page
    assert "Merci d&#39;envoyer une autre photo" in page  # what the person will read, shown to the expert
    r = _ask(client, number, "another-photo", "Is it itchy?")
    assert r.status_code == 303 and r.headers["location"] == f"/expert?asked={number}"
    assert _case(app, number).status == "asked"
    queue = client.get("/expert").text
    assert number not in queue.split('id="queue"')[1].split("</table>")[0] and other["number"] in queue
    assert "1 waiting for the person" in queue and number in queue.split('id="asked"')[1].split("</table>")[0]

    status = client.get(f"/api/cases/{token}").json()
    assert status["status"] == "asked" and status["unseen"] == 1
    [question] = status["messages"]
    assert question["kind"] == "photo-request" and question["author"] == "expert" and question["new"]
    assert question["canned_text"].startswith("Merci d'envoyer une autre photo") and question["text"] == "Is it itchy?"
    page = client.get(f"/c/{token}")
    assert page.status_code == 200 and 'class="new-badge"' in page.text and 'id="reply-section"' in page.text
    assert client.get(f"/api/cases/{token}").json()["unseen"] == 0  # seen once the page was opened
    assert 'class="new-badge"' not in client.get(f"/c/{token}").text

    r = _reply(client, token, "Since Monday. Yes, it itches.", _gps_jpeg())
    assert r.status_code == 303 and r.headers["location"] == f"/c/{token}?replied=1"
    assert 'id="reply-sent"' in client.get(r.headers["location"]).text
    case = _case(app, number)
    assert case.status == "replied"
    reply = case.messages[-1]
    assert (reply.author, reply.kind, reply.text) == ("person", "reply", "Since Monday. Yes, it itches.")
    stem = case.photo_file.rsplit(".", 1)[0]
    assert re.fullmatch(re.escape(stem) + r"\.reply-[0-9a-f]+\.jpg", reply.photo_file)
    assert reply.photo_screening["answer"] in ("positive", "negative", "cannot tell")
    stored = app.state.photos.read(reply.photo_file)
    assert not Image.open(io.BytesIO(stored)).getexif()  # no place, no camera
    assert b"PhoneMaker" not in stored
    assert reply.photo_file in _stored_names(app)

    queue = client.get("/expert").text
    rows = queue.split('id="queue"')[1].split("</table>")[0]
    assert rows.index(number) < rows.index(other["number"])  # first, and marked
    assert 'class="replied"' in rows and "the person replied" in rows
    page = client.get(f"/expert/cases/{number}").text
    assert "Since Monday" in page and f"/messages/{reply.id}/photo.jpg" in page
    photo = client.get(f"/expert/cases/{number}/messages/{reply.id}/photo.jpg")
    assert photo.status_code == 200 and photo.content == stored
    assert client.get(f"/expert/cases/{number}/messages/{reply.id + 99}/photo.jpg").status_code == 404

    # The sweep keeps the reply photo (its name starts with the case's stem).
    with _db(app) as db:
        report = service.sweep_photos(db, app.state.photos, grace_s=0)
    assert reply.photo_file not in report.removed and reply.photo_file in _stored_names(app)

    assert client.post(f"/expert/cases/{number}/answer", data={"verdict": "see-health-worker", "message": "Thanks"},
                       follow_redirects=False).status_code == 303
    status = client.get(f"/api/cases/{token}").json()
    assert status["status"] == "answered" and status["unseen"] == 1
    assert [m["kind"] for m in status["messages"]] == ["photo-request", "reply", "conclusion"]
    assert status["messages"][-1]["canned_text"].startswith("La photo seule")  # the verdict, in French
    page = client.get(f"/c/{token}").text
    assert 'id="answer-new"' in page and "Thanks" in page
    assert _ask(client, number).status_code == 409  # answered: change the answer instead

    with _db(app) as db:
        events = [(e.action, e.email, e.detail) for e in db.scalars(
            select(AuditEvent).where(AuditEvent.case_number == number).order_by(AuditEvent.id))]
    assert ("asked the person", "doc@example.org", "another-photo") in events
    assert ("person replied", None, "text, photo") in events
    assert ("viewed reply photo", "doc@example.org", str(reply.id)) in events
    assert not any("itch" in str(e) for e in events)  # the person's words stay out of the log

    # The person withdraws: the photo, the reply photo and the messages go.
    assert 'id="withdrawn"' in client.post(f"/c/{token}/withdraw").text
    assert not [n for n in _stored_names(app) if n.startswith(stem)]
    with _db(app) as db:
        assert db.scalar(select(Message).where(Message.photo_file == reply.photo_file)) is None


def test_retake_keeps_the_case_open_for_a_new_photo_on_the_same_link(talk):
    """Issue 28, item 5: the expert's "retake the photo" no longer closes the case. The person reads it on the same
    link, with a form for the new photo; the photo comes back to the queue ("replied"), screened like any reply; the
    expert then concludes. The label given with the retake is replaced by the final one, and a case once concluded
    "retake" is never exported (its stored photos are those found too poor). Without the fix the case was
    "answered" and the page had no reply form."""
    from mpoxscan.web.training_export import eligible_cases

    app = talk.app
    _expert(app)
    sent = _send(talk, training_consent="true", language="en").json()
    token = _token(sent)
    assert _sign_in(talk).status_code == 303
    r = talk.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "retake-photo", "label": "unsure",
                                                                  "message": "Closer, please."},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/expert?asked={sent['number']}"
    case = _case(app, sent["number"])
    assert case.status == "asked" and case.answered_at is None and case.label == "unsure"
    assert "retake" not in talk.get("/expert").text.split("Answered recently")[-1]  # not under "answered"
    talk.cookies.clear()
    status = talk.get(f"/api/cases/{token}").json()
    assert status["status"] == "asked" and status["verdict"] is None and status["unseen"] == 1
    assert status["messages"][-1]["kind"] == "conclusion" and "Closer, please." == status["messages"][-1]["text"]
    page = talk.get(f"/c/{token}").text
    assert 'id="reply-section"' in page and 'id="expert-answer"' not in page
    assert "Send a new photo" in page and "send it on this page" in page and "Closer, please." in page
    assert _reply(talk, token, photo=_photo_bytes(21)).status_code == 303
    assert _case(app, sent["number"]).status == "replied"
    assert _sign_in(talk).status_code == 303
    assert 'class="replied"' in talk.get("/expert").text
    r = talk.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "likely-mpox", "label": "Monkeypox"},
                  follow_redirects=False)
    assert r.headers["location"] == f"/expert?answered={sent['number']}"
    case = _case(app, sent["number"])
    assert (case.status, case.verdict, case.label) == ("answered", "likely-mpox", "Monkeypox")
    assert [m.canned for m in case.messages if m.kind == "conclusion"] == ["retake-photo", "likely-mpox"]
    with _db(app) as db:
        assert [c.number for _key, c in eligible_cases(db, set())] == []  # retaken once: never exported
    # A case answered without a retake, with the same label, is exported: the rule is the retake, not the label.
    plain = _send(talk, training_consent="true").json()
    talk.post(f"/expert/cases/{plain['number']}/answer", data={"verdict": "likely-mpox", "label": "Monkeypox"})
    with _db(app) as db:
        assert [c.number for _key, c in eligible_cases(db, set())] == [plain["number"]]
    talk.cookies.clear()
    page = talk.get(f"/c/{token}").text
    assert 'id="expert-answer"' in page and "Closer, please." in page.split('id="expert-answer"')[0]


def test_the_person_is_told_when_the_expert_wrote_in_another_language(talk):
    """Issue 28, item 6: the expert's free text is not translated (no registry package offers offline translation
    models without a download at run time: docs/guide/expert.md), so the person is told, in their language, that
    it is written in another one; the expert says which (English by default). An unknown language is refused."""
    app = talk.app
    _expert(app)
    sent = _send(talk, language="fr").json()
    token = _token(sent)
    _sign_in(talk)
    assert _ask(talk, sent["number"], request="", text="Does it itch?").status_code == 303
    assert talk.post(f"/expert/cases/{sent['number']}/ask", data={"text": "x", "language": "de"}).status_code == 400
    talk.cookies.clear()
    page = talk.get(f"/c/{token}").text
    assert '<p class="message-text" lang="en">Does it itch?</p>' in page
    assert "Écrit par l&#39;expert en anglais : non traduit." in page
    assert talk.get(f"/api/cases/{token}").json()["messages"][0]["language"] == "en"
    _reply(talk, token, text="Oui, un peu.")
    _sign_in(talk)
    talk.post(f"/expert/cases/{sent['number']}/answer",
              data={"verdict": "see-health-worker", "label": "unsure", "message": "Merci.", "language": "fr"})
    talk.cookies.clear()
    page = talk.get(f"/c/{token}").text
    assert 'id="expert-message">Merci.</p>' in page and 'id="expert-message-language"' not in page
    assert page.count("non traduit") == 1  # the question's note only, in the thread
    with _db(app) as db:
        # NULL is English (the dashboard's language, and every message before migration 0009).
        assert [m.language for m in service.case_by_number(db, sent["number"]).messages] == [None, None, "fr"]


def test_the_case_page_speaks_in_labels_and_gives_no_probability_for_a_photo_the_model_could_not_judge(talk):
    """Issue 28, item 7: verdicts as words ("Retake the photo"), not codes, on the case page and under "Answered
    recently"; a photo the model refused (too small here) shows no mpox probability in the queue, its heading or
    the table; the answer panel comes with the case; a favicon."""
    from test_cases import _photo_bytes as photo_bytes

    app = talk.app
    _expert(app)
    small = _send(talk, photo_bytes(4, size=(60, 60))).json()  # under the model's 64 px: cannot tell
    _sign_in(talk)
    row = next(line for line in talk.get("/expert").text.split("<tr") if small["number"] in line)
    assert "cannot tell (too small)" in row and " %</td>" not in row
    page = talk.get(f"/expert/cases/{small['number']}").text
    assert "no probability (the model could not judge it)" in page and "no class and no probability" in page
    table = page.split('id="probabilities"')[1].split("</table>")[0]
    assert "%" not in table.split("</thead>")[1]
    assert '<aside class="case-panel" id="decide"' in page and 'href="#decide"' in page
    assert "<b>Retake the photo</b>" in page and "<b>likely-mpox</b>" not in page
    talk.post(f"/expert/cases/{small['number']}/answer", data={"verdict": "unlikely-mpox", "label": "unsure"})
    answered = talk.get("/expert").text.split("Answered recently")[1]
    assert "Unlikely mpox" in answered and "unlikely-mpox" not in answered
    icon = talk.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert 'rel="icon"' in page


def test_purge_deletes_the_reply_photos(talk):
    client, app = talk, talk.app
    _expert(app)
    _sign_in(client)
    sent = _send(client).json()
    _ask(client, sent["number"], "closer-photo")
    assert _reply(client, _token(sent), photo=_photo_bytes(7)).status_code == 303
    case = _case(app, sent["number"])
    stem = case.photo_file.rsplit(".", 1)[0]
    assert len([n for n in _stored_names(app) if n.startswith(stem)]) >= 2
    client.post(f"/expert/cases/{sent['number']}/answer", data={"verdict": "unlikely-mpox"})
    with _db(app) as db:
        old = service.case_by_number(db, sent["number"])
        old.answered_at = utcnow().replace(year=2020)
        db.commit()
        assert service.purge_answered(db, app.state.photos, older_than=service.LOGIN_LIFETIME) == [sent["number"]]
        assert db.scalars(select(Message)).all() == []
    assert not [n for n in _stored_names(app) if n.startswith(stem)]


def test_replies_are_refused_with_a_reason(database, tmp_path):
    """Nothing asked, an empty or too long reply, a photo that is not one, an answered or withdrawn case: each a 4xx
    with the reason on the page, and nothing stored. Replies count against the uploads' rate limit."""
    app = _app(database, tmp_path, upload_limit="12/hour")
    with _client(app) as client:
        _expert(app)
        _sign_in(client)
        sent = _send(client).json()
        token, number = _token(sent), sent["number"]
        before = _stored_names(app)
        r = _reply(client, token, "hello")
        assert r.status_code == 409 and "has not asked you anything" in r.text and 'id="reply-error"' in r.text
        assert _ask(client, number, "", "").status_code == 400  # nothing to ask
        assert _ask(client, number, "a-made-up-request").status_code == 400
        assert _ask(client, number, "", "x" * 2001).status_code == 422
        assert _ask(client, number, "", "How long?").status_code == 303
        r = _reply(client, token, "   ")
        assert r.status_code == 400 and "write an answer or choose a photo" in r.text
        r = _reply(client, token, "x" * (service.MAX_MESSAGE + 1))
        assert r.status_code == 422 and "too long" in r.text
        r = _reply(client, token, "", b"not a photo at all")
        assert r.status_code in (400, 415) and "this photo cannot be used" in r.text
        r = _reply(client, token, "", _photo_bytes(size=(2000, 40)))
        assert r.status_code == 400 and "extreme aspect ratio" in r.text
        r = _reply(client, token, "nul \x00 here")
        assert r.status_code == 400
        assert _stored_names(app) == before and _case(app, number).status == "asked"
        # A browser's form without a photo still sends the file field, empty: a text reply.
        empty = {"photo": ("", b"", "application/octet-stream")}
        r = client.post(f"/c/{token}/reply", data={"text": "Two weeks."}, files=empty, follow_redirects=False)
        assert r.status_code == 303 and _case(app, number).messages[-1].photo_file is None
        r = _reply(client, token, "And again")  # one reply per question
        assert r.status_code == 409 and _case(app, number).messages[-1].text == "Two weeks."
        client.post(f"/expert/cases/{number}/answer", data={"verdict": "unlikely-mpox"})
        r = _reply(client, token, "after the answer")
        assert r.status_code == 409 and "already answered" in r.text
        client.post(f"/c/{token}/withdraw")
        assert _reply(client, token, "gone").status_code == 404
        # 2 cases sent + 9 replies so far: the 12th upload is the last allowed, then 429 before the body is read.
        assert _reply(client, token, "one more").status_code == 404
        r = _reply(client, token, "over the limit")
        assert r.status_code == 429 and "too many uploads" in r.json()["detail"]


def test_a_pin_locks_the_follow_up_page_and_its_status(database, tmp_path):
    """Only the PIN's argon2 hash is stored; a locked case shows nothing but "locked" (page, status, withdrawal)
    until its PIN is given; wrong PINs are counted per case in the database and limited; the right one gives a
    cookie for that case's paths only, for a short while."""
    app = _app(database, tmp_path)
    with _client(app) as client:
        # Too short, too long, a letter, a space, Arabic-Indic digits.
        for bad in ("123", "1234567", "12a4", " 1234", "١٢٣٤"):
            assert _send(client, pin=bad).status_code == 422, bad
        sent = _send(client, pin="4711").json()
        other = _send(client, pin="4711").json()
        token, number = _token(sent), sent["number"]
        assert sent["locked"] is True
        with _db(app) as db:
            stored = db.scalar(select(Case.pin_hash).where(Case.number == number))
        assert stored.startswith("$argon2id$") and "4711" not in stored

        page = client.get(f"/c/{token}")
        assert page.status_code == 200 and 'id="locked"' in page.text and number not in page.text
        status = client.get(f"/api/cases/{token}")
        assert status.status_code == 401 and status.json()["locked"] and number not in status.text
        gone = client.post(f"/c/{token}/withdraw")
        assert gone.status_code == 401 and _case(app, number) is not None
        assert _reply(client, token, "hi").status_code == 401

        for _ in range(5):
            wrong = client.post(f"/c/{token}/unlock", data={"pin": "0000"})
            assert wrong.status_code == 401 and "Wrong PIN" in wrong.text
            assert "mpoxscan_unlock" not in wrong.headers.get("set-cookie", "")
        limited = client.post(f"/c/{token}/unlock", data={"pin": "4711"})  # even the right one, for a while
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "Too many wrong PINs" in limited.text
        with _db(app) as db:
            assert len(db.scalars(select(RateLimitHit).where(RateLimitHit.kind == "pins")).all()) == 5
            assert len(db.scalars(select(AuditEvent).where(AuditEvent.action == "wrong PIN")).all()) == 5

        # Another case is not limited by this one's guesses; its PIN opens it alone.
        r = client.post(f"/c/{_token(other)}/unlock", data={"pin": "4711"}, follow_redirects=False)
        assert r.status_code == 303
        cookies = r.headers.get_list("set-cookie")
        assert sorted(re.search(r"Path=([^;]+)", c).group(1) for c in cookies) == [
            f"/api/cases/{_token(other)}", f"/c/{_token(other)}"]
        assert all("HttpOnly" in c and "SameSite=strict" in c and "Max-Age=1800" in c for c in cookies)
        value = re.match(r"mpoxscan_unlock=([^;]+)", cookies[0]).group(1)
        client.cookies.clear()
        opened = client.get(f"/c/{_token(other)}", cookies={"mpoxscan_unlock": value})
        assert opened.status_code == 200 and other["number"] in opened.text
        assert client.get(f"/api/cases/{_token(other)}", cookies={"mpoxscan_unlock": value}).json()["locked"]
        # The cookie of one case does not open another (nor does a forged or an expired one).
        assert 'id="locked"' in client.get(f"/c/{token}", cookies={"mpoxscan_unlock": value}).text
        expires, mac = value.split(".")
        assert 'id="locked"' in client.get(f"/c/{_token(other)}", cookies={
            "mpoxscan_unlock": f"{int(expires) + 3600}.{mac}"}).text
        with _db(app) as db:
            case = service.case_by_number(db, other["number"])
            from mpoxscan.web.security import unlock_mac

            past = int(utcnow().timestamp()) - 1
            assert not service.unlocked(case, _token(other), f"{past}.{unlock_mac(case.pin_hash, _token(other), past)}")
            assert service.unlocked(case, _token(other), value)
        # Withdrawal with the cookie.
        assert 'id="withdrawn"' in client.post(f"/c/{_token(other)}/withdraw", cookies={"mpoxscan_unlock": value}).text


def test_migration_0007_from_0005_keeps_existing_cases(database, tmp_path):
    """A database at 0005 with a waiting and an answered case: after 0007 both open without a PIN, the answer is the
    thread's conclusion (not announced as new) and the waiting case can be asked and replied to."""
    from sqlalchemy import text

    from mpoxscan.web.db import make_engine, migrate
    from mpoxscan.web.security import token_hash

    engine = make_engine(database)
    migrate(engine, "0005")
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO experts (email, password_hash, active, created_at) "
                                "VALUES ('old@example.org', 'x', :t, :now)"), {"t": True, "now": now})
        expert_id = connection.scalar(text("SELECT id FROM experts"))
        for number, token, status in (("OLDW-0001", "waiting-token", "waiting"), ("OLDA-0001", "answered-token",
                                                                                  "answered")):
            answered = status == "answered"
            connection.execute(text(
                "INSERT INTO cases (number, token_hash, created_at, photo_file, photo_sha256, model_sha256, computed, "
                "device_probabilities, predicted, probabilities, screening_probability, screening_threshold, status, "
                "answer, language, verdict, message, answered_at, answered_by_id) VALUES (:n, :h, :t, :f, '0', '0', "
                "'device', '{}', 'Monkeypox', '{}', 0.7, 0.5, :s, 'positive', 'pt', :v, :m, :a, :e)"),
                {"n": number, "h": token_hash(token), "t": now, "f": f"{number.lower().replace('-', '')}.jpg",
                 "s": status, "v": "likely-mpox" if answered else None, "m": "Go soon" if answered else None,
                 "a": now if answered else None, "e": expert_id if answered else None})
    migrate(engine)
    engine.dispose()
    app = _app(database, tmp_path)
    with _client(app) as client:
        answered = client.get("/api/cases/answered-token").json()
        assert answered["status"] == "answered" and answered["unseen"] == 0 and not answered["locked"]
        [conclusion] = answered["messages"]
        assert conclusion["kind"] == "conclusion" and conclusion["text"] == "Go soon"
        assert conclusion["canned_text"] == json.loads((service.i18n.LOCALES / "pt.json").read_text())[
            "verdict.likely-mpox"]
        assert 'id="verdict-text"' in client.get("/c/answered-token").text
        waiting = client.get("/c/waiting-token")
        assert waiting.status_code == 200 and "OLDW-0001" in waiting.text
        _expert(app)
        _sign_in(client)
        assert _ask(client, "OLDW-0001", "since-when").status_code == 303
        assert _reply(client, "waiting-token", "Três dias.").status_code == 303
        assert _case(app, "OLDW-0001").status == "replied"


@pytest.mark.integration
def test_a_locked_case_the_expert_asks_the_person_replies_with_a_photo_in_chromium(shared_data, tmp_path, artefacts):
    """The journey in Chromium: send a case with a PIN, allow notifications (the button; the permission granted in
    the test's browser), the expert asks for another photo on the dashboard, the phone's list shows "new message"
    (its device key reads the locked case); the person unlocks the page with the PIN and replies with a photo;
    after the expert's conclusion the follow-up page and the list show "new message" and a notification is shown.
    axe-core on the new pages."""
    from browser import axe, expert_signs_in, need_browser, phone, press, screen, wait

    from conftest import chromium
    from selenium.webdriver.common.by import By

    need_browser()
    app = create_app(Settings(model=bundled_model(), data_dir=tmp_path / "data"))
    driver = phone(chromium(tmp_path / "profile"))
    statuses = ("return [...document.querySelectorAll('#my-cases-list li')]"
                ".map(li => (li.dataset.status || '') + (li.dataset.new ? '+new' : '')).join()")
    try:
        from mpoxscan.web.testing import ServerThread

        with ServerThread(app) as server:
            base = server.url
            with app.state.sessions() as db:
                service.add_expert(db, "doc@example.org", PASSWORD)
            driver.get(base + "/")
            wait(driver, "return document.body.dataset.ready")
            assert screen(driver, shared_data / "msld-v2" / "Monkeypox" / "MKP_01_01.jpg")
            driver.find_element(By.ID, "pin").send_keys("12")  # too short: said, nothing sent
            driver.find_element(By.ID, "consent").click()
            driver.find_element(By.ID, "send").click()
            assert "4 to 6 digits" in driver.find_element(By.ID, "send-status").text
            assert driver.execute_script("return document.activeElement.id") == "pin"
            driver.find_element(By.ID, "pin").send_keys("34")
            driver.find_element(By.ID, "send").click()
            sent = wait(driver, "return window.mpoxscanSent || null")
            assert sent and sent["locked"] and driver.find_element(By.ID, "pin").get_attribute("value") == ""
            # The sending phone reads its locked case's status with the device key it keeps beside the link.
            assert wait(driver, statuses + " === 'waiting'")
            assert wait(driver, "return !document.getElementById('notify').hidden")
            assert driver.execute_script("return Notification.permission") == "default"  # never asked on load
            found = {"phone with a PIN sent": axe(driver, "the phone page after sending with a PIN")}
            # The person would answer the browser's question: here the test's browser context grants it.
            driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": base, "permissions": ["notifications"]})
            driver.find_element(By.ID, "notify").click()
            assert wait(driver, "return document.getElementById('notify').hidden")
            assert "notification" in driver.find_element(By.ID, "notify-status").text

            # The expert asks for another photo.
            expert_signs_in(driver, base)
            driver.find_element(By.LINK_TEXT, sent["number"]).click()
            press(driver, driver.find_element(By.CSS_SELECTOR, "input[name=request][value='another-photo']"))
            found["case with the ask form"] = axe(driver, "the case page with its ask form")
            press(driver, driver.find_element(By.ID, "send-question"))
            assert wait(driver, "return document.getElementById('asked-notice') !== null")

            # The person: the list shows the question as new (the device key: no PIN). Then, as on a phone that
            # keeps no key for the case (one sent before device keys existed): the locked page, the PIN, the
            # question marked new, a reply with a photo.
            phone(driver)
            driver.get(base + "/")
            assert wait(driver, statuses + " === 'asked+new'")
            driver.execute_script(
                "localStorage.setItem('mpoxscan-cases', JSON.stringify(JSON.parse(localStorage.getItem("
                "'mpoxscan-cases')).map(({key, ...c}) => c)))")
            driver.get(base + sent["follow_up"])
            assert sent["number"] not in driver.page_source and driver.find_element(By.ID, "locked").is_displayed()
            found["locked follow-up"] = axe(driver, "the locked follow-up page")
            driver.find_element(By.ID, "pin").send_keys("9999")
            driver.find_element(By.ID, "unlock").click()
            error = "const e = document.getElementById('pin-error'); return e && e.textContent"
            assert "Wrong PIN" in wait(driver, error)
            driver.find_element(By.ID, "pin").send_keys("1234")
            driver.find_element(By.ID, "unlock").click()
            wait(driver, "return document.getElementById('reply-section') !== null")
            assert "another photo" in driver.find_element(By.ID, "thread").text
            assert driver.find_elements(By.CSS_SELECTOR, "#thread li[data-new] .new-badge")
            found["follow-up with a question"] = axe(driver, "the follow-up page with a question")
            driver.save_screenshot(str(artefacts / "phone-follow-up-question.png"))
            driver.find_element(By.ID, "reply-text").send_keys("Here is a closer one.")
            driver.find_element(By.ID, "reply-photo").send_keys(
                str(shared_data / "msld-v2" / "Monkeypox" / "MKP_02_01.jpg"))
            driver.find_element(By.ID, "send-reply").click()
            assert wait(driver, "return document.getElementById('reply-sent') !== null")
            assert "closer one" in driver.find_element(By.ID, "thread").text
            found["follow-up after replying"] = axe(driver, "the follow-up page after replying")
            with app.state.sessions() as db:
                case = service.case_by_number(db, sent["number"])
                assert case.status == "replied" and case.messages[-1].photo_file.startswith(
                    case.photo_file.rsplit(".", 1)[0] + ".reply-")
                # The expert's conclusion.
                expert = service.experts(db)[0]
                service.answer_case(db, case, expert, "see-health-worker", "Please see the nurse.")

            # The phone's list (the PIN's cookie still fresh) shows "new message", and a notification was shown.
            driver.get(base + "/")
            wait(driver, "return document.body.dataset.ready")
            assert wait(driver, statuses + " === 'answered+new'")
            assert "new message" in driver.find_element(By.ID, "my-cases-list").text
            assert wait(driver, "return (window.mpoxscanNotified || []).length") == 1  # on this visit: the answer
            shown = driver.execute_async_script(
                "const done = arguments[arguments.length - 1]; navigator.serviceWorker.ready.then((r) => "
                "r.getNotifications()).then((ns) => done(ns.map((n) => [n.title, n.body, n.data.url])))"
                ".catch((e) => done(String(e)))")
            body = f"The expert wrote about case {sent['number']}. Open it to read."
            assert shown == [["mpoxscan: a new message", body, base + sent["follow_up"]]]  # one per case (tag)
            driver.execute_script("window.mpoxscanCheckCases()")  # asked again: told once only
            wait(driver, statuses + " === 'answered+new'")
            assert driver.execute_script("return window.mpoxscanNotified.length") == 1
            driver.execute_script("document.getElementById('my-cases').scrollIntoView()")
            driver.save_screenshot(str(artefacts / "phone-my-cases-new-answer.png"))
            # The follow-up page marks the answer new, once.
            driver.get(base + sent["follow_up"])
            assert driver.find_element(By.ID, "answer-new").is_displayed()
            assert "not enough to say" in driver.find_element(By.ID, "verdict-text").text
            found["follow-up with the answer"] = axe(driver, "the follow-up page with the answer")
            driver.save_screenshot(str(artefacts / "phone-follow-up-answer.png"))
            driver.refresh()
            assert not driver.find_elements(By.ID, "answer-new")
            driver.get(base + "/")
            assert wait(driver, statuses + " === 'answered'")
    finally:
        driver.quit()
    for where, violations in found.items():
        print(where, [(v["id"], v["impact"], len(v["nodes"])) for v in violations])
