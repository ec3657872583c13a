"""Cases sent to an expert: storing them safely, the expert's queue and answer, the audit log.

Plain functions over a SQLAlchemy session, used by the routers and by `mpoxscan expert`; no web code here.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
from PIL import Image
from sqlalchemy import case as sql_case
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from mpoxscan.deploy.runtime import Screener, Screening
from mpoxscan.images import load_image, strip_metadata
from mpoxscan.web.store import PhotoStore, StorageUnavailable, SweepReport  # noqa: F401 (PhotoStore: re-exported)
from mpoxscan.web import i18n
from mpoxscan.web.security import (PIN_PATTERN, derived_secrets, dummy_verify, export_id, hash_password, hash_pin,
                                   new_case_number, new_token, token_hash, unlock_mac, verify_password)
from mpoxscan.web.tables import AuditEvent, Case, CasePhoto, Expert, LoginSession, Message, TrainingWithdrawal, utcnow

log = logging.getLogger(__name__)

#: The expert's possible answers: code -> what the person reads on the follow-up page (in English here; the person
#: reads it in their language, from the catalogues' "verdict.<code>" entries).
VERDICTS = {code: i18n.text("en", f"verdict.{code}")
            for code in ("likely-mpox", "unlikely-mpox", "see-health-worker", "retake-photo")}
#: Photos are stored at most this large (long side, pixels): enough for a dermatologist, not a 48-MP original.
STORED_MAX_SIDE = 2048
LOGIN_LIFETIME = timedelta(hours=12)
#: What the expert can ask without typing: code -> (kind, the English text; the person reads "request.<code>" in
#: their language). A free-text question goes beside it or alone.
REQUESTS = {code: (kind, i18n.text("en", f"request.{code}")) for code, kind in (
    ("another-photo", "photo-request"), ("closer-photo", "photo-request"), ("since-when", "question"))}
#: The longest question or reply (characters): a conversation about a photo, not a letter.
MAX_MESSAGE = 2000
#: How long a follow-up page stays open after its PIN was given (the cookie's life).
UNLOCK_LIFETIME = timedelta(minutes=30)
#: The statuses of a case: waiting for an expert; asked (waiting for the person's reply); replied (back in the queue,
#: marked); answered (the conclusion given).
QUEUED = ("waiting", "replied")

#: The expert's label when the class cannot be told from what the case shows (never exported).
UNSURE = "unsure"
#: The tests an expert may say confirmed their label: code -> how the (English-only) dashboard names it.
LABEL_TESTS = {"mpox-pcr": "PCR for mpox", "other-pcr": "PCR for another virus (e.g. varicella-zoster)",
               "other-test": "another laboratory test"}
#: A confirming test's result, as the laboratory reported it for what it tested.
TEST_RESULTS = ("positive", "negative")
#: Conclusions whose photos never become training data, whatever the label: the photo shows too little. A case
#: once concluded so is never exported, even after a later conclusion: its stored photos are the ones judged too poor
#: (the new photo comes as a reply, which no export holds).
UNEXPORTED_VERDICTS = ("retake-photo",)
#: Conclusions that keep the case open: the person reads the verdict and answers on the same follow-up page (the
#: case waits for them, "asked", as after a question), then it comes back to the queue for a conclusion.
REOPENING_VERDICTS = ("retake-photo",)
#: How the (English-only) dashboard names each verdict (the person reads "verdict.<code>" in their language).
VERDICT_LABELS = {"likely-mpox": "Likely mpox", "unlikely-mpox": "Unlikely mpox",
                  "see-health-worker": "See a health worker", "retake-photo": "Retake the photo"}
# A label becomes a folder name of the export (DIR/<label>/): a class of the model's taxonomy always is one.
LABEL_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ()+,._-]{0,39}")


@dataclass
class Submitted:
    case: Case
    token: str  # the follow-up link's secret: returned once, never stored
    device_key: str | None = None  # a PIN-locked case's key for the phone that sent it: returned once, never stored
    replayed: bool = False  # the idempotency key of a case already stored: that case, nothing new stored


def heatmap_png(answer: Screening, cam: np.ndarray, seen: Image.Image) -> bytes:
    """The server's heat map: where the model looked, over the square it saw. No caption inside the picture: the
    dashboard writes the answer under it, so that the map is a square of the same size as the photo beside it."""
    from mpoxscan.explain.overlay import overlay

    buf = io.BytesIO()
    # zlib's fastest level: a fifth of the default's time, a fifth larger (about 200 kB), for every case received.
    overlay(seen, cam).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def draw_heatmap(screener: Screener, photo: Image.Image) -> bytes | None:
    """The heat map of a stored photo (None when the model has no map output)."""
    answer, cam, seen = screener.screen_and_map(photo)
    return None if cam is None else heatmap_png(answer, cam, seen)


#: The most photos one case may hold: the lesion close up, a wider view, another lesion.
MAX_PHOTOS = 3
#: How urgent each answer is for the queue (the case takes its most urgent photo's): screened positive first, then
#: the photos the model could not judge (the expert is their only reader), then negative.
URGENCY = {"positive": 0, "cannot tell": 1, "negative": 2}

#: The page's optional questions: field (a column of cases) -> the codes a person may answer (the page's choices;
#: anything else is refused). Not answering is NULL, never a code: "unknown" is the person's own "I don't know".
QUESTIONS: dict[str, tuple[str, ...]] = {
    "symptom_duration": ("under-3-days", "3-7-days", "1-3-weeks", "over-3-weeks", "unknown"),
    "body_site": ("face", "mouth", "hands", "arms", "trunk", "genitals-anus", "legs-feet", "several"),
    "fever": ("yes", "no", "unknown"),
    "swollen_glands": ("yes", "no", "unknown"),
    "mpox_contact": ("yes", "no", "unknown"),
    "age_band": ("under-5", "5-17", "18-29", "30-44", "45-64", "65-plus"),
}
#: How the (English-only) dashboard names each question; the answers are the English catalogue's texts.
QUESTION_LABELS = {"symptom_duration": "Duration", "body_site": "Body site", "fever": "Fever",
                   "swollen_glands": "Swollen glands", "mpox_contact": "Contact with a (possible) mpox case",
                   "age_band": "Age"}


@dataclass
class SentPhoto:
    """One photo of a case as it arrives: the decoded upload and the answer the phone showed for it."""

    image: Image.Image
    device_probabilities: dict[str, float]
    computed: str  # "device" or "server"


@dataclass
class _Screened:
    jpeg: bytes
    answer: Screening
    heatmap: bytes | None
    sent: SentPhoto
    ita: float | None = None


def _screen_for_storing(screener: Screener, sent: SentPhoto, measure_tone: bool = False) -> _Screened:
    """``measure_tone``: the photo's skin tone too (for the training export: only with the training consent)."""
    from mpoxscan.data.skin import working_ita

    jpeg = strip_metadata(sent.image, max_side=STORED_MAX_SIDE)
    stored = load_image(jpeg)  # what the expert will see is exactly what the server screened
    answer, cam, seen = screener.screen_and_map(stored)
    return _Screened(jpeg, answer, None if cam is None else heatmap_png(answer, cam, seen), sent,
                     working_ita(jpeg) if measure_tone else None)


def check_answers(answers: dict[str, str | None]) -> dict[str, str | None]:
    """The question answers, each None or a code of QUESTIONS (ValueError naming the field otherwise)."""
    for field, value in answers.items():
        if field not in QUESTIONS:
            raise ValueError(f"{field}: not a question of this service")
        if value is not None and value not in QUESTIONS[field]:
            raise ValueError(f"{field}: one of {', '.join(QUESTIONS[field])}")
    return {field: answers.get(field) for field in QUESTIONS}


def submit_case(db: Session, store: PhotoStore, screener: Screener, photo: Image.Image,
                device_probabilities: dict[str, float], computed: str, model_sha256: str,
                language: str = "en", pin: str | None = None, *, more: Sequence[SentPhoto] = (),
                answers: dict[str, str | None] | None = None, training_consent: bool = False,
                idempotency_key: str | None = None) -> Submitted:
    """Store the photos a person agreed to send (``photo``, then up to two ``more``): each with its metadata
    stripped again, screened again by the server, and its heat map drawn once, now (the expert's views read it; the
    same screening, so map and numbers agree). All or nothing: every photo is screened before any is stored, and a
    failure while storing deletes what was stored. ``language``: the person's (one of i18n.LANGUAGES), in which they
    read the expert's answer; ``pin``: locks the follow-up page (only its hash is kept); ``answers``: the optional
    questions' codes (QUESTIONS); ``training_consent``: the second, optional consent (the photos may be used, without
    the person's name, to improve the screening); ``idempotency_key``: a phone's key for this send (its queue of
    cases composed offline, security.IDEMPOTENCY_PATTERN): sent again, it finds the case it made, whose link and
    device key follow from it (security.derived_secrets), and nothing new is stored."""
    derived = derived_secrets(idempotency_key) if idempotency_key else None
    if derived:
        earlier = case_by_idempotency_hash(db, derived[2])
        if earlier is not None:
            return Submitted(earlier, derived[0], derived[1] if earlier.pin_hash else None, replayed=True)
    sent = [SentPhoto(photo, device_probabilities, computed), *more]
    if len(sent) > MAX_PHOTOS:
        raise ValueError(f"at most {MAX_PHOTOS} photos per case")
    answers = check_answers(answers or {})
    screened = [_screen_for_storing(screener, one, training_consent) for one in sent]
    pin_hash = hash_pin(pin) if pin else None
    device_key = (derived[1] if derived else new_token()) if pin else None  # see check_device_key
    highest = max(screened, key=lambda s: s.answer.positive_probability)
    urgent = min(screened, key=lambda s: URGENCY[s.answer.answer])  # the first of the most urgent, in sent order
    name = store.save(screened[0].jpeg)
    try:
        names = [name]
        for position, one in enumerate(screened[1:], start=2):
            names.append(store.save_extra(name, position, one.jpeg))
        for stored_name, one in zip(names, screened):
            if one.heatmap is not None:
                store.save_heatmap(stored_name, one.heatmap)  # a companion of the photo: deleted (and swept) with it
        for _attempt in range(5):
            token = derived[0] if derived else new_token()
            case = Case(number=new_case_number(), token_hash=token_hash(token), photo_file=name,
                        photo_sha256=hashlib.sha256(screened[0].jpeg).hexdigest(), model_sha256=model_sha256,
                        computed=computed, device_probabilities=device_probabilities,
                        predicted=highest.answer.predicted, probabilities=highest.answer.probabilities,
                        screening_probability=highest.answer.positive_probability,
                        screening_threshold=highest.answer.threshold, answer=urgent.answer.answer,
                        answer_reason=urgent.answer.reason, status="waiting", language=language,
                        pin_hash=pin_hash, device_key_hash=token_hash(device_key) if device_key else None,
                        training_consent=training_consent, idempotency_hash=derived[2] if derived else None,
                        **answers)
            case.photos = [CasePhoto(position=position, photo_file=stored_name,
                                     photo_sha256=hashlib.sha256(one.jpeg).hexdigest(), computed=one.sent.computed,
                                     device_probabilities=one.sent.device_probabilities,
                                     predicted=one.answer.predicted, probabilities=one.answer.probabilities,
                                     screening_probability=one.answer.positive_probability,
                                     answer=one.answer.answer, answer_reason=one.answer.reason, ita=one.ita)
                           for position, (stored_name, one) in enumerate(zip(names, screened), start=1)]
            db.add(case)
            try:
                db.commit()
                return Submitted(case, token, device_key)
            except IntegrityError:  # a case number drawn twice (about 1 in 10^11): draw again
                db.rollback()
                # Or the same send arrived twice at once (the page and its service worker): the first one stored
                # stays, this one's photos go.
                earlier = case_by_idempotency_hash(db, derived[2]) if derived else None
                if earlier is not None:
                    store.delete(name)
                    return Submitted(earlier, token, device_key if earlier.pin_hash else None, replayed=True)
        raise RuntimeError("could not draw a free case number")
    except BaseException:
        try:
            store.delete(name)  # no photo (nor heat map) without its case: the first photo's stem owns them all
        except StorageUnavailable:
            pass  # the disk refuses even that: the next sweep removes the files (no case owns them)
        raise


def photos_of(case: Case) -> list:
    """The case's photos, in the order sent: its ``case_photos`` rows, or, for a row written without them (by hand,
    or by a test), its one photo described by the case's own columns."""
    if case.photos:
        return list(case.photos)
    return [SimpleNamespace(position=1, photo_file=case.photo_file, photo_sha256=case.photo_sha256,
                            computed=case.computed, device_probabilities=case.device_probabilities,
                            predicted=case.predicted, probabilities=case.probabilities,
                            screening_probability=case.screening_probability, answer=case.answer,
                            answer_reason=case.answer_reason, ita=None)]


def photo_of(case: Case, position: int):
    """The case's photo ``position`` (1-based), or None."""
    return next((p for p in photos_of(case) if p.position == position), None)


def model_class(case: Case) -> str | None:
    """The class the dashboard may show as the model's answer: the case's class comes from its photo with the
    highest mpox probability, so None where the model could not judge that photo (its top class is no answer)."""
    source = max(photos_of(case), key=lambda p: p.screening_probability)  # the first of equals, as submit_case
    return None if source.answer == "cannot tell" else case.predicted


#: What the queue shows of the answers, most telling first (the case page shows them all).
QUEUE_SUMMARY = {"fever": "Fever", "symptom_duration": "Duration", "mpox_contact": "Contact"}


def answers_summary(case: Case) -> list[tuple[str, str]]:
    """The queue's short line of the answers: (label, answer in English) for fever, duration and contact."""
    return [(label, i18n.text("en", f"q.{field}.{getattr(case, field)}"))
            for field, label in QUEUE_SUMMARY.items() if getattr(case, field) is not None]


def question_answers(case: Case) -> list[tuple[str, str, str]]:
    """The questions the person answered: (field, the dashboard's label, the answer in English)."""
    return [(field, QUESTION_LABELS[field], i18n.text("en", f"q.{field}.{getattr(case, field)}"))
            for field in QUESTIONS if getattr(case, field) is not None]


def case_by_token(db: Session, token: str) -> Case | None:
    """The case a follow-up link's token opens (None for no case, or for a string far longer than any token)."""
    if len(token) > 64 or "\x00" in token:
        return None
    return db.scalar(select(Case).where(Case.token_hash == token_hash(token)))


def case_by_idempotency_hash(db: Session, digest: str) -> Case | None:
    """The case sent with the idempotency key whose stored hash is ``digest`` (security.derived_secrets)."""
    return db.scalar(select(Case).where(Case.idempotency_hash == digest))


def case_by_number(db: Session, number: str) -> Case | None:
    if len(number) > 16 or "\x00" in number:  # no case can have it (PostgreSQL refuses NUL in text): no query
        return None
    return db.scalar(select(Case).where(Case.number == number.upper()))


def withdraw_case(db: Session, store: PhotoStore, case: Case) -> None:
    """The person takes their case back: photo and case are deleted (the audit log keeps only the number).

    The file goes first, the row only once the file is gone: a delete that fails (read-only or missing folder)
    raises StorageUnavailable with the case whole, so it can be withdrawn again; a commit that fails after the file
    went leaves a case without its photo (the expert's page says so), never a photo without a case."""
    number = case.number
    store.delete(case.photo_file)
    if case.training_consent:  # an export that holds it drops it, though the case is gone from the database
        db.merge(TrainingWithdrawal(export_id=export_id(case.number, case.token_hash)))
    db.delete(case)
    db.add(AuditEvent(action="case withdrawn", case_number=number))
    db.commit()


def withdraw_training_consent(db: Session, case: Case) -> None:
    """The person withdraws the training consent only (the case stays with the expert): the case leaves every
    future export, by its export id, which stays recorded after the case is deleted. Models trained before are not
    recalled (the page says so before the consent is given). Withdrawing again changes nothing."""
    if not case.training_consent:
        return
    case.training_consent = False
    db.merge(TrainingWithdrawal(export_id=export_id(case.number, case.token_hash)))
    db.add(AuditEvent(action="training consent withdrawn", case_number=case.number))
    db.commit()


def purge_answered(db: Session, store: PhotoStore, older_than: timedelta) -> list[str]:
    """Delete cases answered more than ``older_than`` ago, with their photos (data kept no longer than needed);
    the audit log keeps their numbers. Returns the numbers deleted. Each photo is deleted before its row (as in
    withdraw_case): when a delete fails, the cases whose photos went are still committed, then StorageUnavailable."""
    cutoff = utcnow() - older_than
    old = list(db.scalars(select(Case).where(Case.status == "answered", Case.answered_at < cutoff)))
    gone: list[str] = []
    try:
        for case in old:
            store.delete(case.photo_file)
            db.delete(case)
            db.add(AuditEvent(action="case purged", case_number=case.number,
                              detail=f"answered {case.answered_at:%Y-%m-%d}"))
            gone.append(case.number)
    finally:
        db.commit()
    return gone


def sweep_photos(db: Session, store: PhotoStore, grace_s: float | None = None) -> SweepReport:
    """Remove .part files and photo files no case owns (store.PhotoStore.sweep says when this is safe beside
    running workers). The case rows are read before the folder is listed."""
    referenced = list(db.scalars(select(Case.photo_file)))
    return store.sweep(referenced) if grace_s is None else store.sweep(referenced, grace_s)


def start_up_sweep(sessions: sessionmaker[Session], store: PhotoStore) -> SweepReport:
    """At start-up, before serving: what a crash left (.part files, photos written whose case was never committed)
    goes; then this process holds the photo folder's lock shared while it serves, so that a sweep elsewhere (another
    worker starting, `cases purge`) spares what this one has in flight (see PhotoStore.sweep)."""
    with sessions() as db:
        report = sweep_photos(db, store)
    store.hold_serving_lock()
    if report.removed:
        log.warning("start-up sweep: removed %d file(s) no case owns (left by a crash or a failed write)",
                    len(report.removed))
    return report


def queue(db: Session, order: str = "priority", limit: int = 200) -> list[Case]:
    """Cases waiting for an answer. 'priority': screened positive first, then those the model could not judge (the
    expert is their only reader), then negative; within each by probability (highest first), then the oldest first;
    'age': the oldest first. A case of several photos ranks by its most urgent answer and its highest probability
    (submit_case keeps them in its own columns)."""
    query = select(Case).where(Case.status.in_(QUEUED))
    # A case the person has just replied to comes first in either order: the person is waiting on a conversation.
    replied = sql_case((Case.status == "replied", 0), else_=1)
    if order == "age":
        query = query.order_by(replied, Case.created_at, Case.id)
    else:
        rank = sql_case((Case.answer == "positive", 0), (Case.answer == "cannot tell", 1), else_=2)
        query = query.order_by(replied, rank, Case.screening_probability.desc(), Case.created_at, Case.id)
    return list(db.scalars(query.options(selectinload(Case.photos)).limit(limit)))  # the queue counts photos


def asked(db: Session, limit: int = 200) -> list[Case]:
    """Cases waiting for the person's reply, the longest waiting first."""
    return list(db.scalars(select(Case).where(Case.status == "asked").order_by(Case.created_at, Case.id).limit(limit)))


def answered(db: Session, limit: int = 50) -> list[Case]:
    return list(db.scalars(select(Case).where(Case.status == "answered").order_by(Case.answered_at.desc()).limit(limit)))


def counts(db: Session) -> dict[str, int]:
    rows = db.execute(select(Case.status, func.count()).group_by(Case.status)).all()
    return {"waiting": 0, "answered": 0, **{status: n for status, n in rows}}  # "asked", "replied" once there are


def check_label(label: str, classes: Sequence[str], test: str | None = None,
                test_result: str | None = None) -> tuple[str, str | None, str | None]:
    """The expert's label as stored: a class of the served model's taxonomy (``classes``, read from its metadata)
    or UNSURE, and the confirming test with its result (both or neither). ValueError naming what is wrong."""
    if label != UNSURE and label not in classes:
        raise ValueError(f"unknown label {label[:40]!r}: one of the model's classes ({', '.join(classes)}) or {UNSURE}")
    if label != UNSURE and not LABEL_FOLDER.fullmatch(label):
        raise ValueError(f"the model's class {label[:40]!r} cannot name an export folder: it cannot be a label")
    if test is not None and test not in LABEL_TESTS:
        raise ValueError(f"unknown test {test[:40]!r}: one of {', '.join(LABEL_TESTS)}, or none")
    if test_result is not None and test_result not in TEST_RESULTS:
        raise ValueError(f"unknown test result {test_result[:40]!r}: one of {', '.join(TEST_RESULTS)}")
    if (test is None) != (test_result is None):
        raise ValueError("a confirming test needs its result, and a result its test")
    return label, test, test_result


def check_language(language: str | None) -> str | None:
    """The language an expert's words are written in: a catalogue's code, or None (English, the default)."""
    if language is not None and language not in i18n.LANGUAGES:
        raise ValueError(f"unknown language {language[:8]!r}: one of {', '.join(i18n.LANGUAGES)}")
    return None if language == "en" else language


def answer_case(db: Session, case: Case, expert: Expert, verdict: str, message: str, label: str = UNSURE, *,
                classes: Sequence[str] = (), test: str | None = None, test_result: str | None = None,
                language: str | None = None) -> None:
    """The expert's conclusion: the verdict the person reads, a message (written in ``language``: a catalogue code,
    English by default), and the label (a class of ``classes``, the served model's, or UNSURE; with the test that
    confirmed it, if any). Who answered goes to the audit log. A verdict of REOPENING_VERDICTS ("retake the photo")
    keeps the case open: it waits for the person's new photo on the same link ("asked"), and the label given now is
    replaced by the one given with the next conclusion."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    if "\x00" in message:
        raise ValueError("the message holds a NUL character")
    label, test, test_result = check_label(label, classes, test, test_result)
    language = check_language(language)
    again = case.status == "answered"
    now = utcnow()
    case.verdict, case.message = verdict, message.strip() or None
    case.label, case.label_test, case.label_test_result = label, test, test_result
    if verdict in REOPENING_VERDICTS:
        case.status, case.answered_at, case.answered_by = "asked", None, None
    else:
        case.status, case.answered_at, case.answered_by = "answered", now, expert
    case.messages.append(Message(author="expert", kind="conclusion", canned=verdict, text=case.message,
                                 expert_id=expert.id, created_at=now, language=language if case.message else None))
    confirmed = f"; confirmed by {test}: {test_result}" if test else ""
    db.add(AuditEvent(expert_id=expert.id, email=expert.email, action="answer changed" if again else "answered",
                      case_number=case.number, detail=f"{verdict}; label {label}{confirmed}"))
    db.commit()


# The conversation: the expert asks, the person replies on the follow-up page.

class Refused(ValueError):
    """A message that cannot be added now (the case is answered, nothing was asked, ...): a 4xx with this reason;
    ``status`` the HTTP status that says it, ``key`` the catalogue text the person reads."""

    def __init__(self, reason: str, status: int = 409, key: str = "reply.refused") -> None:
        super().__init__(reason)
        self.status, self.key = status, key


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be stored: no lone surrogate (a multipart part that declares a charset such as
    unicode_escape decodes to one, and SQLite and PostgreSQL then fail with UnicodeEncodeError)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    if "\x00" in text:
        raise Refused("the message holds a NUL character (a control character no text needs)", 400)
    if not is_unicode(text):
        raise Refused("the message holds a character that is not valid Unicode (a lone surrogate)", 400)
    if len(text) > MAX_MESSAGE:
        raise Refused(f"the message is longer than {MAX_MESSAGE} characters", 422, "reply.refused.long")
    return text or None


def ask_person(db: Session, case: Case, expert: Expert, request: str | None, text: str | None,
               language: str | None = None) -> Message:
    """The expert asks the person something (a canned request of REQUESTS, a free-text question, or both, the
    question written in ``language``: a catalogue code, English by default): the case waits for the person
    ("asked") until they reply on their follow-up page."""
    if request is not None and request not in REQUESTS:
        raise Refused(f"unknown request: one of {', '.join(REQUESTS)}", 400)
    try:
        language = check_language(language)
    except ValueError as exc:
        raise Refused(str(exc), 400) from None
    text = _clean(text)
    if request is None and text is None:
        raise Refused("nothing to ask: choose a request or write a question", 400)
    if case.status == "answered":
        raise Refused(f"case {case.number} is answered: change the answer instead")
    kind = REQUESTS[request][0] if request else "question"
    message = Message(author="expert", kind=kind, canned=request, text=text, expert_id=expert.id,
                      language=language if text else None)
    case.messages.append(message)
    case.status = "asked"
    db.add(AuditEvent(expert_id=expert.id, email=expert.email, action="asked the person", case_number=case.number,
                      detail=request or "question"))
    db.commit()
    return message


def reopened(case: Case) -> bool:
    """Whether the case waits for a new photo because the expert's last conclusion asked for one."""
    last = next((m for m in reversed(case.messages) if m.author == "expert"), None)
    return case.status == "asked" and last is not None and last.kind == "conclusion"


def check_reply(case: Case) -> None:
    """Refuse a reply the expert did not ask for (before any photo is read or stored)."""
    if case.status == "answered":
        raise Refused("the expert has answered this case: it takes no more replies", key="reply.refused.answered")
    if case.status != "asked":
        raise Refused("the expert has not asked you anything: there is nothing to reply to",
                      key="reply.refused.not-asked")


def reply(db: Session, store: PhotoStore, screener: Screener, case: Case, text: str | None,
          photo: Image.Image | None) -> Message:
    """The person's reply (text and/or one photo) to the expert's question: the photo stored like the case's own
    (metadata stripped, at most STORED_MAX_SIDE, screened again by the server) as a companion of the case's photo,
    written before its row; the case goes back to the queue, marked "replied". The audit log records that the
    person replied and what they sent, not their words."""
    check_reply(case)
    text = _clean(text)
    if text is None and photo is None:
        raise Refused("an empty reply: write something or choose a photo", 400, "reply.refused.empty")
    name, screening = None, None
    if photo is not None:
        jpeg = strip_metadata(photo, max_side=STORED_MAX_SIDE)
        answer = screener.screen(load_image(jpeg))
        screening = {"answer": answer.answer, "reason": answer.reason, "predicted": answer.predicted,
                     "probability": answer.positive_probability, "threshold": answer.threshold}
        # A random part: two replies racing cannot overwrite each other's file (only one of them is kept).
        name = store.save_companion(case.photo_file, f"reply-{uuid.uuid4().hex[:12]}.jpg", jpeg)
    try:
        # Only the reply that finds the case still "asked" is kept: a second one (a double submit) is refused.
        if db.execute(update(Case).where(Case.id == case.id, Case.status == "asked")
                      .values(status="replied")).rowcount != 1:
            raise Refused("the expert has not asked you anything: there is nothing to reply to",
                          key="reply.refused.not-asked")
        message = Message(case_id=case.id, author="person", kind="reply", text=text, photo_file=name,
                          photo_screening=screening)
        db.add(message)
        db.add(AuditEvent(action="person replied", case_number=case.number,
                          detail=", ".join(part for part, sent in (("text", text), ("photo", name)) if sent)))
        db.commit()
    except BaseException:
        db.rollback()
        if name is not None:
            try:
                store.delete_file(name)
            except StorageUnavailable:
                pass  # the case still owns the name: withdrawal or purge removes it with the case
        raise
    db.expire(case)  # its status and its messages, as committed
    return message


def unseen(case: Case) -> list[Message]:
    """The expert's messages the person has not seen on their follow-up page yet."""
    seen = case.person_seen_at
    return [m for m in case.messages if m.author == "expert" and (seen is None or m.created_at > seen)]


def mark_seen(db: Session, case: Case) -> None:
    """The person has opened the follow-up page: what it shows now is no longer new. Written only when something
    was new, and a database that refuses the write (read-only, full) still lets the page be read: the messages
    then stay new until a later visit."""
    if not unseen(case):
        return
    latest = max(m.created_at for m in case.messages)
    case.person_seen_at = max(utcnow(), latest)
    try:
        db.commit()
    except DBAPIError:
        db.rollback()
        log.warning("could not record that a follow-up page was seen (the database refused the write)")


def message_by_id(case: Case, message_id: int) -> Message | None:
    return next((m for m in case.messages if m.id == message_id), None)


# The follow-up page's PIN.

def check_pin(case: Case, pin: str) -> bool:
    """Whether ``pin`` opens the case: an argon2 check (security.verify_password, bounded in total; TooBusy when
    every slot is taken), not run for what no PIN can be (4 to 6 ASCII digits)."""
    if case.pin_hash is None or not re.fullmatch(PIN_PATTERN, pin):
        return False
    return verify_password(case.pin_hash, pin)


def check_device_key(case: Case, key: str) -> bool:
    """Whether ``key`` is the device key of this PIN-locked case: the secret submit_case returned to the phone that
    sent it (only its sha256 is stored, as for the link's token). The phone opens its own case with it, without the
    PIN, and so without the wrong-PIN limit that anyone holding the link can run up (issue 27: the owner locked out
    for 15 minutes, repeatably). A fast hash suffices for 256 random bits; no argon2, so no limit is needed."""
    if case.device_key_hash is None or not key or len(key) > 64:
        return False
    return hmac.compare_digest(token_hash(key), case.device_key_hash)


def unlock_cookie(case: Case, token: str) -> str:
    """The value of the cookie that keeps this case's page open for UNLOCK_LIFETIME once its PIN was given."""
    expires = int(utcnow().timestamp() + UNLOCK_LIFETIME.total_seconds())
    return f"{expires}.{unlock_mac(case.pin_hash, token, expires)}"


def unlocked(case: Case, token: str, cookie: str | None) -> bool:
    """Whether this request may see the case: no PIN, or a cookie from unlock_cookie that has not expired."""
    if case.pin_hash is None:
        return True
    expires, _, mac = (cookie or "").partition(".")
    # ASCII digits only, and no more than a Unix time has: str.isdigit accepts "²" and 5,000 digits, int() neither.
    if not re.fullmatch(r"[0-9]{1,12}", expires) or int(expires) < utcnow().timestamp():
        return False
    return hmac.compare_digest(mac, unlock_mac(case.pin_hash, token, int(expires)))


def audit(db: Session, action: str, expert: Expert | None = None, case_number: str | None = None,
          detail: str | None = None, email: str | None = None) -> None:
    db.add(AuditEvent(expert_id=expert.id if expert else None, email=expert.email if expert else email, action=action,
                      case_number=case_number, detail=detail))
    db.commit()


def audit_log(db: Session, limit: int = 500) -> list[AuditEvent]:
    return list(db.scalars(select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)))


# Expert accounts and their sign-ins.

def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if ("@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@")
            or any(ord(c) < 32 for c in email)  # control characters (NUL: PostgreSQL refuses it in text)
            or not is_unicode(email)):
        raise ValueError(f"not an e-mail address: {email!r}")
    return email


def add_expert(db: Session, email: str, password: str) -> Expert:
    email = normalise_email(email)
    if db.scalar(select(Expert).where(Expert.email == email)):
        raise ValueError(f"an expert account for {email} exists already")
    expert = Expert(email=email, password_hash=hash_password(password), active=True)
    db.add(expert)
    db.commit()
    return expert


def experts(db: Session) -> list[Expert]:
    return list(db.scalars(select(Expert).order_by(Expert.email)))


def set_active(db: Session, email: str, active: bool) -> Expert:
    expert = db.scalar(select(Expert).where(Expert.email == normalise_email(email)))
    if expert is None:
        raise ValueError(f"no expert account for {email}")
    expert.active = active
    if not active:  # signed-in browsers are signed out at once
        for login in db.scalars(select(LoginSession).where(LoginSession.expert_id == expert.id)):
            db.delete(login)
    db.commit()
    return expert


def sign_in(db: Session, email: str, password: str) -> tuple[Expert, str] | None:
    """A new login token for the right address and password of an active account; None (and an audit row) if not."""
    try:
        address = normalise_email(email)
    except ValueError:
        address = None
    expert = db.scalar(select(Expert).where(Expert.email == address)) if address else None
    db.commit()  # the read ends here: no pooled connection waits through the argon2 check (issue 27)
    if expert is None:
        dummy_verify()
    if expert is None or not verify_password(expert.password_hash, password) or not expert.active:
        # PostgreSQL refuses NUL characters in text, and no database a lone surrogate: the address typed is kept
        # without them.
        typed = (address or email.strip()).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
        audit(db, "login refused", email=typed[:320])
        return None
    token = new_token()
    db.execute(delete(LoginSession).where(LoginSession.expires_at <= utcnow()))  # forget expired sign-ins
    db.add(LoginSession(token_hash=token_hash(token), expert_id=expert.id, expires_at=utcnow() + LOGIN_LIFETIME))
    db.add(AuditEvent(expert_id=expert.id, email=expert.email, action="signed in"))
    db.commit()
    return expert, token


def signed_in_expert(db: Session, token: str) -> Expert | None:
    login = db.scalar(select(LoginSession).where(LoginSession.token_hash == token_hash(token)))
    if login is None or login.expires_at <= utcnow() or not login.expert.active:
        return None
    return login.expert


def sign_out(db: Session, token: str) -> None:
    login = db.scalar(select(LoginSession).where(LoginSession.token_hash == token_hash(token)))
    if login is not None:
        db.add(AuditEvent(expert_id=login.expert_id, email=login.expert.email, action="signed out"))
        db.delete(login)
        db.commit()
