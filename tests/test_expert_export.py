"""Issue 30: the second consent (training), the expert's label, and `mpoxscan cases export` (consented, labelled cases
as a source folder for curate): on SQLite and PostgreSQL (the `database` fixture), with either photo store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from test_cases import _client, _db, _expert, _photo_bytes, _send, _sign_in

from mpoxscan.cli import cli
from mpoxscan.deploy.runtime import bundled_model
from mpoxscan.web import cases as service
from mpoxscan.web import training_export
from mpoxscan.web.app import create_app
from mpoxscan.web.settings import Settings
from mpoxscan.web.tables import Case, TrainingWithdrawal

EMAIL = "doc@example.org"


def _app(database, tmp_path, **changes):
    return create_app(Settings(**{"model": bundled_model(), "data_dir": tmp_path / "data", "db": database,
                                  "max_upload_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000,
                                  "upload_limit": "1000/hour", "login_limit": "1000/hour", **changes}))


@pytest.fixture(params=["folder", "db"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def client(database, tmp_path, store_kind):
    with _client(_app(database, tmp_path, photo_store=store_kind)) as client:
        _expert(client.app, EMAIL)
        assert _sign_in(client, EMAIL).status_code == 303
        yield client


def _token(sent: dict) -> str:
    return sent["follow_up"].rsplit("/", 1)[1]


def _more_photo(client, k: int, seed: int) -> dict:
    classes = client.get("/api/model").json()["classes"]
    return {f"photo_{k}": _photo_bytes(seed), f"computed_{k}": "device",
            f"probabilities_{k}": {c: 1 / len(classes) for c in classes}}


def _conclude(client, number: str, verdict: str = "likely-mpox", **fields):
    return client.post(f"/expert/cases/{number}/answer", data={"verdict": verdict, **fields}, follow_redirects=False)


def _export(tmp_path, database, store_kind, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["cases", "export", "--out", str(out), "--data-dir", str(tmp_path / "data"),
                                    "--db", database, "--photo-store", store_kind, *extra])


def _manifest(out: Path) -> dict[str, dict]:
    lines = (out / "_meta" / "cases.jsonl").read_text().splitlines()
    return {r["case"]: r for r in map(json.loads, lines)}


def _export_id(app, number: str) -> str:
    from mpoxscan.web.security import export_id

    with _db(app) as db:
        case = service.case_by_number(db, number)
        return export_id(case.number, case.token_hash)


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and "_meta" not in p.relative_to(out).parts}


# 1. The second consent.

def test_the_training_consent_is_separate_optional_and_stored_per_case(client):
    """Absent (the page never ticks it) means no; "true" means yes; anything but "true"/"false" is refused, strictly;
    the person's status shows it."""
    plain = _send(client).json()
    given = _send(client, _photo_bytes(2), training_consent="true").json()
    refused = _send(client, training_consent="false").json()
    assert _send(client, training_consent="yes").status_code == 422
    assert _send(client, training_consent="True").status_code == 422
    assert (plain["training_consent"], given["training_consent"], refused["training_consent"]) == (False, True, False)
    with _db(client.app) as db:
        stored = {n: service.case_by_number(db, n).training_consent for n in (plain["number"], given["number"])}
    assert stored == {plain["number"]: False, given["number"]: True}
    assert client.get(f"/api/cases/{_token(given)}").json()["training_consent"] is True
    with _db(client.app) as db:  # the skin tone is measured for the export only with the training consent
        tones = {n: service.case_by_number(db, n).photos[0].ita for n in (plain["number"], given["number"])}
    assert tones[plain["number"]] is None and isinstance(tones[given["number"]], float)
    schema = client.get("/api/openapi.json").text
    assert "training_consent" in schema


@pytest.mark.parametrize("lang", ["en", "fr", "sw"])
def test_the_training_consent_is_withdrawn_on_the_follow_up_page_without_withdrawing_the_case(client, lang):
    """The follow-up page offers withdrawing the training consent only (in the person's language): the case stays with
    the expert, the consent is gone, its export id is kept as withdrawn, and the audit log says so. A case sent
    without it shows nothing of the kind."""
    from markupsafe import escape

    from mpoxscan.web import i18n

    def text(lang: str, key: str) -> str:
        return str(escape(i18n.text(lang, key)))  # as the page writes it

    sent = _send(client, training_consent="true", language=lang).json()
    token = _token(sent)
    page = client.get(f"/c/{token}").text
    assert 'id="withdraw-training"' in page and text(lang, "training.followup.given") in page
    assert 'id="withdraw-training"' not in client.get(_send(client, language=lang).json()["follow_up"]).text

    r = client.post(f"/c/{token}/training/withdraw", follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert 'id="training-withdrawn"' in page and 'id="withdraw-training"' not in page
    assert text(lang, "training.followup.withdrawn") in page
    with _db(client.app) as db:
        case = service.case_by_number(db, sent["number"])
        assert case is not None and case.status == "waiting" and case.training_consent is False
        assert db.get(TrainingWithdrawal, _export_id(client.app, sent["number"])) is not None
        actions = [e.action for e in service.audit_log(db) if e.case_number == sent["number"]]
    assert "training consent withdrawn" in actions and "case withdrawn" not in actions
    assert client.post(f"/c/{token}/training/withdraw", follow_redirects=False).status_code == 303  # again: no-op
    assert client.post("/c/not-a-token/training/withdraw").status_code == 404
    cross = client.post(f"/c/{token}/training/withdraw", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403


def test_a_locked_case_withdraws_its_training_consent_only_once_unlocked(client):
    sent = _send(client, training_consent="true", pin="4321").json()
    token = _token(sent)
    assert client.post(f"/c/{token}/training/withdraw").status_code == 401
    with _db(client.app) as db:
        assert service.case_by_number(db, sent["number"]).training_consent is True
    assert client.post(f"/c/{token}/unlock", data={"pin": "4321"}, follow_redirects=False).status_code == 303
    assert client.post(f"/c/{token}/training/withdraw", follow_redirects=False).status_code == 303
    with _db(client.app) as db:
        assert service.case_by_number(db, sent["number"]).training_consent is False


def test_the_phone_page_asks_the_training_consent_unticked_and_sends_it_only_when_ticked():
    """The page's second checkbox: never checked in the HTML, unticked again wherever the consent to send is, its
    note (what withdrawal does not undo) in every catalogue, and sent as training_consent=true only when ticked."""
    from mpoxscan.web.i18n import LANGUAGES, catalogue
    from mpoxscan.web.settings import STATIC

    page = (STATIC / "index.html").read_text()
    box = re.search(r"<input[^>]*id=\"training-consent\"[^>]*>", page).group(0)
    assert "checked" not in box and 'aria-describedby="training-note"' in box
    script = (STATIC / "app.js").read_text()
    assert script.count('$("training-consent").checked = false') == 3  # new photo, new answer, another photo added
    assert 'if ($("training-consent").checked) fields.push(["training_consent", "true"]);' in script
    for code in LANGUAGES:
        texts = catalogue(code)
        assert texts["training.note"] and texts["training.consent"] != texts["consent"], code
    assert "not recalled" in catalogue("en")["training.note"]


# 2. The expert's label.

def test_the_expert_labels_with_a_class_of_the_served_model_or_unsure(client):
    """The dashboard offers the served model's classes (read from its metadata: a model with another taxonomy
    offers its own) and "unsure"; anything else is refused; a test needs its result; who answered is in the audit
    log with the label, and nowhere in the case's label."""
    app = client.app
    classes = list(app.state.screener.classes)
    sent = _send(client, training_consent="true").json()
    number = sent["number"]
    page = client.get(f"/expert/cases/{number}").text
    offered = re.findall(r'name="label" value="([^"]+)"', page)
    assert offered == [*classes, "unsure"]
    assert 'id="training-consent">given' in page

    assert "Scabies" not in classes  # a real skin disease that no model here was trained on
    for bad, why in (({"label": "Scabies"}, "unknown label"), ({"label": "../x"}, "unknown label"),
                     ({"label": "Monkeypox", "test": "mpox-pcr"}, "needs its result"),
                     ({"label": "Monkeypox", "test_result": "positive"}, "needs its result"),
                     ({"label": "Monkeypox", "test": "blood-letting", "test_result": "positive"}, "unknown test"),
                     ({"label": "Monkeypox", "test": "mpox-pcr", "test_result": "maybe"}, "unknown test result")):
        r = _conclude(client, number, **bad)
        assert r.status_code == 400 and why in r.json()["detail"], (bad, r.text)
    with _db(app) as db:
        assert service.case_by_number(db, number).status == "waiting"  # nothing stored by a refused answer

    other = _send(client, _photo_bytes(3)).json()["number"]
    assert _conclude(client, other, "see-health-worker").status_code == 303  # no label given: "unsure"
    with _db(app) as db:
        assert service.case_by_number(db, other).label == "unsure"

    # A model with another taxonomy (finer look-alike classes): its classes are the labels, not a fixed list.
    app.state.screener.classes = [*classes, "Scabies"]
    assert "value=\"Scabies\"" in client.get(f"/expert/cases/{number}").text
    assert _conclude(client, number, label="Scabies", test="other-test", test_result="negative").status_code == 303
    assert _conclude(client, number, label="Monkeypox", test="mpox-pcr", test_result="positive").status_code == 303
    with _db(app) as db:
        case = service.case_by_number(db, number)
        assert (case.label, case.label_test, case.label_test_result) == ("Monkeypox", "mpox-pcr", "positive")
        events = [(e.action, e.email, e.detail) for e in service.audit_log(db) if e.case_number == number]
    assert ("answer changed", EMAIL, "likely-mpox; label Monkeypox; confirmed by mpox-pcr: positive") in events
    assert ("answered", EMAIL, "likely-mpox; label Scabies; confirmed by other-test: negative") in events


# 3. The export.

def _scenario(client) -> dict[str, dict]:
    """Cases of every kind, each with something personal that must never reach the export: a PIN, an expert's
    message, a question and a reply."""
    cases = {
        "two-photos": _send(client, _photo_bytes(10), training_consent="true", pin="918273", fever="yes",
                            body_site="hands", **_more_photo(client, 2, 11)).json(),
        "no-training-consent": _send(client, _photo_bytes(12), fever="no").json(),
        "withdrawn-consent": _send(client, _photo_bytes(13), training_consent="true").json(),
        "unsure": _send(client, _photo_bytes(14), training_consent="true").json(),
        "retake": _send(client, _photo_bytes(15), training_consent="true").json(),
        "confirmed": _send(client, _photo_bytes(16), training_consent="true", age_band="30-44").json(),
        "waiting": _send(client, _photo_bytes(17), training_consent="true").json(),
    }
    number = {k: v["number"] for k, v in cases.items()}
    ask = client.post(f"/expert/cases/{number['confirmed']}/ask", data={"request": "", "text": "Secret question xq7?"},
                      follow_redirects=False)
    assert ask.status_code == 303
    assert client.post(f"/c/{_token(cases['confirmed'])}/reply", data={"text": "Private reply zz9"},
                       follow_redirects=False).status_code == 303
    for key, verdict, label, test in (
            ("two-photos", "likely-mpox", "Monkeypox", {}), ("no-training-consent", "likely-mpox", "Monkeypox", {}),
            ("withdrawn-consent", "unlikely-mpox", "Chickenpox", {}), ("unsure", "see-health-worker", "unsure", {}),
            ("retake", "retake-photo", "Measles", {}),
            ("confirmed", "unlikely-mpox", "Chickenpox", {"test": "mpox-pcr", "test_result": "negative"})):
        assert _conclude(client, number[key], verdict, label=label, message=f"Note for {key} qq3", **test).status_code == 303
    assert client.post(f"/c/{_token(cases['withdrawn-consent'])}/training/withdraw").status_code == 200
    return cases


def _personal(client, cases: dict[str, dict]) -> list[str]:
    """Every string of the scenario that is about a person or their link: numbers, tokens and their hashes, the
    expert's e-mail, the PIN, free texts."""
    with _db(client.app) as db:
        token_hashes = [c.token_hash for c in db.scalars(select(Case))]
    found = [EMAIL, "918273", "qq3", "xq7", "zz9", "Secret question", "Private reply", *token_hashes]
    for sent in cases.values():
        found += [sent["number"], sent["number"].replace("-", ""), _token(sent)]
    return found


def test_the_export_holds_only_consented_labelled_cases_as_a_curate_source_and_nothing_personal(
        client, database, store_kind, tmp_path):
    app = client.app
    cases = _scenario(client)
    out = tmp_path / "expert-cases"
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0, r.output
    key = {k: _export_id(app, v["number"]) for k, v in cases.items()}
    group = training_export.GROUP_REGEX
    assert f"curate it with: mpoxscan curate expert={out} --group 'expert={group}'" in r.output
    assert "exported 2 case(s), 3 photo(s)" in r.output

    # Exactly the consented, labelled, concluded cases: the photos as stored, named by case, one folder per class.
    assert _files(out) == {f"Monkeypox/case-{key['two-photos']}_1.jpg", f"Monkeypox/case-{key['two-photos']}_2.jpg",
                           f"Chickenpox/case-{key['confirmed']}_1.jpg"}
    with _db(app) as db:
        two = service.case_by_number(db, cases["two-photos"]["number"])
        stored = [app.state.photos.read(p.photo_file) for p in service.photos_of(two)]
    assert [(out / f"Monkeypox/case-{key['two-photos']}_{k}.jpg").read_bytes() for k in (1, 2)] == stored
    assert all(re.search(group, Path(name).name) for name in _files(out))  # as curate applies it: to the name

    manifest = _manifest(out)
    assert set(manifest) == {key["two-photos"], key["confirmed"]}
    confirmed = manifest[key["confirmed"]]
    assert (confirmed["label"], confirmed["confirmed"], confirmed["test"], confirmed["test_result"]) == (
        "Chickenpox", True, "mpox-pcr", "negative")
    assert confirmed["answers"] == {q: ("30-44" if q == "age_band" else None) for q in service.QUESTIONS}
    first = manifest[key["two-photos"]]
    assert first["confirmed"] is False and first["answers"]["fever"] == "yes" and first["answers"]["body_site"] == "hands"
    assert [p["position"] for p in first["photos"]] == [1, 2] and first["on_server"] is True
    for photo in first["photos"]:
        assert set(photo) >= {"file", "sha256", "ita", "ita_bin"} and isinstance(photo["ita"], (float, type(None)))
    assert first["exported_at"] and json.loads((out / "_meta" / "export.json").read_text())["state"] == "complete"

    # Nothing personal in any file the export wrote, nor in any file name.
    written = "\n".join([*(p.read_text() for p in (out / "_meta").glob("*.json*")), *_files(out)])
    leaks = [s for s in _personal(client, cases) if s in written]
    assert leaks == []
    with _db(app) as db:
        exported = [e for e in service.audit_log(db) if e.action == "cases exported"]
    assert len(exported) == 1 and "2 case(s), 3 photo(s)" in exported[0].detail and exported[0].case_number is None


def test_a_rerun_adds_new_cases_drops_withdrawn_ones_and_keeps_what_retention_deleted(client, database, store_kind,
                                                                                         tmp_path):
    from datetime import timedelta

    app = client.app
    cases = {k: _send(client, _photo_bytes(30 + k), training_consent="true").json() for k in range(4)}
    for k, sent in cases.items():
        assert _conclude(client, sent["number"], label=("Monkeypox", "Healthy")[k % 2]).status_code == 303
    out = tmp_path / "out"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    key = {k: _export_id(app, v["number"]) for k, v in cases.items()}
    before = {p: (out / p).stat().st_ino for p in _files(out)}
    assert len(before) == 4

    # A rerun with nothing new writes no photo again.
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0 and "(0 added, 0 removed" in r.output
    assert {p: (out / p).stat().st_ino for p in _files(out)} == before

    # Case 0 withdraws its training consent, case 1 the whole case, case 2 is deleted by the retention purge, case 3
    # is relabelled "unsure"; a new case arrives.
    assert client.post(f"/c/{_token(cases[0])}/training/withdraw").status_code == 200
    assert client.post(f"/c/{_token(cases[1])}/withdraw").status_code == 200
    with _db(app) as db:
        case = service.case_by_number(db, cases[2]["number"])
        case.answered_at = case.answered_at - timedelta(days=100)
        db.commit()
        assert service.purge_answered(db, app.state.photos, timedelta(days=90)) == [cases[2]["number"]]
        assert db.get(TrainingWithdrawal, key[2]) is None  # the purge is not a withdrawal
    assert _conclude(client, cases[3]["number"], "see-health-worker", label="unsure").status_code == 303
    new = _send(client, _photo_bytes(40), training_consent="true").json()
    assert _conclude(client, new["number"], label="Healthy").status_code == 303

    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0, r.output
    assert "(1 added, 3 removed, 1 kept after their deletion)" in r.output
    new_key = _export_id(app, new["number"])
    assert set(_manifest(out)) == {key[2], new_key}
    assert _files(out) == {f"Healthy/case-{new_key}_1.jpg", f"Monkeypox/case-{key[2]}_1.jpg"}
    assert _manifest(out)[key[2]]["on_server"] is False
    assert (out / f"Monkeypox/case-{key[2]}_1.jpg").stat().st_ino == before[f"Monkeypox/case-{key[2]}_1.jpg"]

    # A label changed: the case moves to its new class folder.
    assert _conclude(client, new["number"], label="Monkeypox").status_code == 303
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    assert _files(out) == {f"Monkeypox/case-{new_key}_1.jpg", f"Monkeypox/case-{key[2]}_1.jpg"}
    assert not (out / "Healthy").exists()  # a class left empty goes


def test_the_exported_folder_curates_with_every_case_in_one_group(client, database, store_kind, tmp_path):
    """`mpoxscan curate` reads the export like any other source with the documented --group regex: each case's
    photos form one group (so one fold), whatever the class."""
    import csv

    sent = []
    for k in range(8):
        extra = _more_photo(client, 2, 200 + k) if k % 2 == 0 else {}
        sent.append(_send(client, _photo_bytes(100 + k), training_consent="true", **extra).json())
        assert _conclude(client, sent[-1]["number"], label=("Monkeypox", "Chickenpox")[k % 2]).status_code == 303
    out = tmp_path / "expert"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    curated = tmp_path / "curated"
    r = CliRunner().invoke(cli, ["curate", f"expert={out}", "--group", f"expert={training_export.GROUP_REGEX}",
                                 "--folds", "2", "--jobs", "1", "--quiet", "--out", str(curated)])
    assert r.exit_code == 0, r.output
    with open(curated / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"kept"}
    by_case: dict[str, set] = {}
    for row in rows:
        case = re.search(training_export.GROUP_REGEX, Path(row["path"]).name).group(1)
        by_case.setdefault(case, set()).add((row["group"], row["fold"]))
    assert len(by_case) == 8 and all(len(v) == 1 for v in by_case.values())  # one group, one fold per case
    assert len({g for v in by_case.values() for g, _ in v}) == 8


# Bad input.

def test_an_export_is_refused_with_one_line_on_a_folder_it_did_not_write(client, database, store_kind, tmp_path):
    sent = _send(client, training_consent="true").json()
    assert _conclude(client, sent["number"], label="Monkeypox").status_code == 303
    foreign = tmp_path / "photos-of-mine"
    (foreign / "Monkeypox").mkdir(parents=True)
    (foreign / "Monkeypox" / "holiday.jpg").write_bytes(b"x")
    r = _export(tmp_path, database, store_kind, foreign)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "files this export did not write" in r.output
    assert "Traceback" not in r.output and sorted(p.name for p in foreign.rglob("*")) == ["Monkeypox", "holiday.jpg"]

    out = tmp_path / "out"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    (out / "Monkeypox" / "added-by-hand.jpg").write_bytes(b"x")
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 1 and "added-by-hand.jpg" in r.output and r.output.count("\n") == 1
    (out / "Monkeypox" / "added-by-hand.jpg").unlink()
    (out / "_meta" / "notes.txt").write_text("mine")
    assert _export(tmp_path, database, store_kind, out).exit_code == 1
    (out / "_meta" / "notes.txt").unlink()
    (out / "_meta" / "export.json").write_text("{not json")
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 1 and "not an export record" in r.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "is a file" in _export(tmp_path, database, store_kind, a_file).output


def test_an_export_never_touches_a_path_its_record_or_manifest_names_outside_it(client, database, store_kind,
                                                                               tmp_path):
    """The export deletes the photos its manifest (or a crashed run's record) lists once their case leaves: a path in
    them that is not one of its photo files (an edited or planted manifest) once deleted a file outside the folder.
    Such a manifest or record, or one with a line that lists no photos, is refused with one line; nothing is
    deleted."""
    sent = _send(client, training_consent="true").json()
    assert _conclude(client, sent["number"], label="Monkeypox").status_code == 303
    out = tmp_path / "out"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not the export's")
    manifest = (out / "_meta" / "cases.jsonl").read_text()
    record = (out / "_meta" / "export.json").read_text()
    assert client.post(f"/c/{_token(sent)}/training/withdraw").status_code == 200  # its photos are to be deleted

    [line] = [json.loads(x) for x in manifest.splitlines()]
    line["photos"].append({**line["photos"][0], "file": "../victim.txt"})
    planted_record = {**json.loads(record), "state": "applying", "add": [], "remove": ["../victim.txt"]}
    for manifest_text, record_text, why in (
            (json.dumps(line) + "\n", record, "not an export manifest"),
            (manifest, json.dumps(planted_record), "not the record of an export"),
            (json.dumps({"case": line["case"]}) + "\n", record, "not an export manifest")):
        (out / "_meta" / "cases.jsonl").write_text(manifest_text)
        (out / "_meta" / "export.json").write_text(record_text)
        r = _export(tmp_path, database, store_kind, out)
        assert r.exit_code == 1, r.output
        assert why in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output, r.output
        assert victim.read_text() == "not the export's"
    (out / "_meta" / "cases.jsonl").write_text(manifest)
    (out / "_meta" / "export.json").write_text(record)
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0 and "(0 added, 1 removed" in r.output and victim.exists()


def test_the_exported_photos_are_readable_by_their_owner_only(client, database, store_kind, tmp_path):
    """The photos are kept owner-only in the data folder (0700, files 0600): the export of them is too, whatever the
    umask (once 0644 files in 0755 folders: any account on the server could read them)."""
    import os
    import stat

    sent = _send(client, training_consent="true").json()
    assert _conclude(client, sent["number"], label="Monkeypox").status_code == 303
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert _export(tmp_path, database, store_kind, out).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o700 and modes["Monkeypox"] == 0o700 and modes["_meta"] == 0o700
    assert {m for p, m in modes.items() if p.endswith((".jpg", ".json", ".jsonl"))} == {0o600}, modes


def test_an_export_is_refused_on_a_database_older_than_this_version(database, tmp_path):
    from mpoxscan.web.db import make_engine, migrate

    engine = make_engine(database)
    migrate(engine, "0007")
    engine.dispose()
    (tmp_path / "data").mkdir()
    r = _export(tmp_path, database, "folder", tmp_path / "out")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "schema 0007 is older than this version's" in r.output and not (tmp_path / "out").exists()
    r = CliRunner().invoke(cli, ["cases", "export", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no database in" in r.output and not (tmp_path / "none").exists()


def test_a_crash_leaves_the_previous_export_whole_and_the_next_run_finishes(client, database, store_kind, tmp_path,
                                                                          monkeypatch):
    """A crash before the commit (the record's rename): the folder is exactly the previous export (what the run
    staged lies under _meta, which curate skips). A crash after it: the next run finishes it first."""
    app = client.app
    first = _send(client, training_consent="true").json()
    assert _conclude(client, first["number"], label="Monkeypox").status_code == 303
    out = tmp_path / "out"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0
    snapshot = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
                if p.is_file() and p.name != "export.json" and p.name != "lock"}
    assert client.post(f"/c/{_token(first)}/training/withdraw").status_code == 200
    second = _send(client, _photo_bytes(7), training_consent="true").json()
    assert _conclude(client, second["number"], label="Healthy").status_code == 303

    real = training_export._replace_durably

    def crash_at_commit(path, data):
        if path.name == "export.json" and b'"applying"' in data:
            raise KeyboardInterrupt  # the process dies here
        real(path, data)

    monkeypatch.setattr(training_export, "_replace_durably", crash_at_commit)
    with _db(app) as db, pytest.raises(KeyboardInterrupt):
        training_export.export_cases(db, app.state.photos, out)
    monkeypatch.setattr(training_export, "_replace_durably", real)
    assert {p: (out / p).read_bytes() for p in snapshot} == snapshot  # the previous export, whole
    assert _files(out) == {p for p in snapshot if not p.startswith("_meta")}

    roll_forward = training_export._roll_forward

    def crash_after_commit(out_, record):
        if record.get("state") == "applying":
            raise KeyboardInterrupt  # committed, nothing moved yet
        return roll_forward(out_, record)

    monkeypatch.setattr(training_export, "_roll_forward", crash_after_commit)
    with _db(app) as db, pytest.raises(KeyboardInterrupt):
        training_export.export_cases(db, app.state.photos, out)
    monkeypatch.undo()
    assert json.loads((out / "_meta" / "export.json").read_text())["state"] == "applying"
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0 and "finished the export that stopped" in r.output, r.output
    second_key = _export_id(app, second["number"])
    assert _files(out) == {f"Healthy/case-{second_key}_1.jpg"} and set(_manifest(out)) == {second_key}
    assert not (out / "_meta" / "staging").exists()


def test_migration_0008_keeps_every_case_its_photos_and_messages_and_gives_no_consent(database, tmp_path):
    """From 0007 with a case of two photos and a conversation: after 0008 the case has its photos and messages, no
    training consent and no label; back to 0007 and up again keeps them too (on SQLite a copied table would have
    taken them with it through ON DELETE CASCADE)."""
    from sqlalchemy import text

    from mpoxscan.web.db import make_engine, migrate

    from test_cases import utcnow

    engine = make_engine(database)
    migrate(engine, "0007")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO cases (number, token_hash, created_at, photo_file, photo_sha256, model_sha256, computed, "
            "device_probabilities, predicted, probabilities, screening_probability, screening_threshold, answer, "
            "status, language) VALUES ('OLDX-0001', :h, :t, 'abc.jpg', 's', 'm', 'device', '{}', 'Monkeypox', "
            "'{}', 0.6, 0.5, 'positive', 'answered', 'en')"), {"h": "h" * 64, "t": utcnow()})
        case_id = connection.scalar(text("SELECT id FROM cases"))
        for position in (1, 2):
            connection.execute(text(
                "INSERT INTO case_photos (case_id, position, photo_file, photo_sha256, computed, device_probabilities, "
                "predicted, probabilities, screening_probability, answer) VALUES (:c, :p, :f, 's', 'device', '{}', "
                "'Monkeypox', '{}', 0.6, 'positive')"), {"c": case_id, "p": position, "f": f"abc.{position}.jpg"})
        connection.execute(text("INSERT INTO messages (case_id, author, kind, canned, created_at) VALUES "
                                "(:c, 'expert', 'conclusion', 'likely-mpox', :t)"), {"c": case_id, "t": utcnow()})

    def counts() -> tuple:
        with engine.connect() as connection:
            return tuple(connection.scalar(text(f"SELECT count(*) FROM {table}"))
                         for table in ("cases", "case_photos", "messages"))

    migrate(engine)
    assert counts() == (1, 2, 1)
    with engine.connect() as connection:
        row = connection.execute(text("SELECT training_consent, label, label_test FROM cases")).one()
    assert (bool(row[0]), row[1], row[2]) == (False, None, None)
    from alembic import command
    from alembic.config import Config

    from mpoxscan.web.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    assert counts() == (1, 2, 1)
    migrate(engine)
    assert counts() == (1, 2, 1)
    engine.dispose()


def test_withdrawals_survive_going_back_to_0007_and_up_again(client, database, store_kind, tmp_path):
    """A case exported, then withdrawn whole (deleted, its export id kept as withdrawn); the database taken back to
    0007 and up again. The downgrade once dropped the withdrawals with their table, and the next export kept the
    withdrawn case's photos as if the retention purge had deleted it ("kept after deletion")."""
    from alembic import command
    from alembic.config import Config

    from mpoxscan.web.db import MIGRATIONS, make_engine, migrate

    app = client.app
    sent = _send(client, training_consent="true").json()
    assert _conclude(client, sent["number"], label="Monkeypox").status_code == 303
    out = tmp_path / "out"
    assert _export(tmp_path, database, store_kind, out).exit_code == 0 and len(_files(out)) == 1
    assert client.post(f"/c/{_token(sent)}/withdraw").status_code == 200

    engine = make_engine(database)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    migrate(engine)
    engine.dispose()
    r = _export(tmp_path, database, store_kind, out)
    assert r.exit_code == 0 and "(0 added, 1 removed, 0 kept after their deletion)" in r.output, r.output
    assert _files(out) == set() and _manifest(out) == {}


def test_the_expert_loop_simulation_exports_each_photo_under_its_true_class(tmp_path):
    """benchmarks/expert_loop_bench.py on six tiny generated photos: sent through the real API on a server thread with
    both consents, concluded with their true class but one "unsure" (a share of 0.2), exported: five cases, each in
    its true class's folder, the mapping naming which photo became which case."""
    import csv
    import importlib.util

    from conftest import REPO, make_photo

    spec = importlib.util.spec_from_file_location("expert_loop_bench", REPO / "benchmarks" / "expert_loop_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    source = tmp_path / "held-out"
    for k, label in enumerate(["Monkeypox", "Monkeypox", "Chickenpox", "Chickenpox", "Healthy", "Healthy"]):
        (source / label).mkdir(parents=True, exist_ok=True)
        make_photo(300 + k, (200, 160)).save(source / label / f"p{k}.jpg", quality=90)
    pairs = bench.source_pairs(source)
    timings: dict = {}
    out = bench.simulate(pairs, tmp_path / "export", unsure_share=0.2, seed=1, work=tmp_path / "work",
                         timings=timings)
    assert (timings["cases"], timings["unsure"], timings["exported_cases"]) == (6, 1, 5)
    with open(f"{out}.mapping.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((Path(r["path"]).name, r["true_class"]) for r in rows) == sorted((p.name, c) for p, c in pairs)
    unsure = [r for r in rows if r["label_given"] == "unsure"]
    assert len(unsure) == 1 and unsure[0]["exported"] == "False"
    assert _files(out) == {f"{r['true_class']}/case-{r['export_id']}_1.jpg" for r in rows if r["exported"] == "True"}
    assert set(_manifest(out)) == {r["export_id"] for r in rows if r["exported"] == "True"}
    with pytest.raises(ValueError, match="Scabies"):
        bench.simulate([(pairs[0][0], "Scabies")], tmp_path / "other", work=tmp_path / "work2")


def test_the_exported_skin_tone_is_the_one_curate_measures(tmp_path):
    """The manifest's ITA (measured on arrival, data.skin.working_ita) is the value curate's fingerprint computes for
    the same file: the same working size, the same rule."""
    from conftest import make_photo

    from mpoxscan.data import fingerprint, skin

    assert skin.WORKING_SIDE == fingerprint.WORK_SIDE
    for seed in range(3):
        path = tmp_path / f"{seed}.jpg"
        make_photo(seed, (900, 700)).save(path, quality=90)
        assert skin.working_ita(path.read_bytes()) == fingerprint.compute(path).ita


def test_a_case_whose_photo_is_gone_from_the_store_is_left_out_whole_with_a_warning(client, database, store_kind,
                                                                                   tmp_path):
    """A photo removed from the store by hand: the export leaves that case out (never half a case) and says so."""
    app = client.app
    whole = _send(client, _photo_bytes(50), training_consent="true").json()
    broken = _send(client, _photo_bytes(51), training_consent="true", **_more_photo(client, 2, 52)).json()
    for sent in (whole, broken):
        assert _conclude(client, sent["number"], label="Measles").status_code == 303
    with _db(app) as db:
        second = service.photo_of(service.case_by_number(db, broken["number"]), 2).photo_file
    app.state.photos.delete_file(second)
    r = _export(tmp_path, database, store_kind, tmp_path / "out")
    assert r.exit_code == 0 and "1 case(s) left out: a photo missing from the photo store" in r.output
    assert _files(tmp_path / "out") == {f"Measles/case-{_export_id(app, whole['number'])}_1.jpg"}
