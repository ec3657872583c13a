"""Cases a person sends to an expert (after consent) and their follow-up page (by the link's secret token)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from mpoxscan.web import cases as service
from mpoxscan.web import i18n, notify
from mpoxscan.web.deps import (AppSettings, DbSession, ModelScreener, ModelSha256, Photos, client_key,
                               no_repeated_fields, open_upload, read_photo, same_origin, templates)
from mpoxscan.web.schemas import CaseForm, CaseSent, CaseStatus, Privacy, ThreadMessage
from mpoxscan.web.security import TooBusy
from mpoxscan.web.settings import Settings

router = APIRouter()
#: The cookie that keeps a PIN-locked case open for a while once its PIN was given: one per case, scoped to the
#: case's own paths (its page and its status), so that it opens nothing else.
UNLOCK_COOKIE = "mpoxscan_unlock"
LOCKED = "this case is locked: open its follow-up page and give the PIN chosen when it was sent"


def _unlocked(request: Request, case, token: str) -> bool:
    """Whether this browser may see the case: it has no PIN, or the browser gave it a short while ago."""
    return service.unlocked(case, token, request.cookies.get(UNLOCK_COOKIE))


def _check_probabilities(probabilities: dict[str, float], classes: list[str]) -> None:
    if sorted(probabilities) != sorted(classes):
        raise HTTPException(400, f"probabilities must name exactly the model's classes: {', '.join(classes)}")
    values = list(probabilities.values())
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 0.01:
        raise HTTPException(400, "probabilities must lie in [0, 1] and sum to 1")


def thread(case, lang: str) -> list[ThreadMessage]:
    """The conversation as the person reads it: canned requests and verdicts in ``lang``; the expert's messages they
    have not seen yet marked new."""
    new = {m.id for m in service.unseen(case)}

    def canned(m) -> str | None:
        if m.canned is None:
            return None
        return i18n.text(lang, f"verdict.{m.canned}" if m.kind == "conclusion" else f"request.{m.canned}")

    def written_in(m) -> str | None:
        # The expert's words (English unless the expert said otherwise); the person's are in their own language.
        return (m.language or "en") if m.author == "expert" and m.text else None

    return [ThreadMessage(author=m.author, kind=m.kind, canned_text=canned(m), text=m.text,
                          photo_sent=m.photo_file is not None, sent_at=m.created_at.isoformat(timespec="seconds"),
                          new=m.id in new, language=written_in(m)) for m in case.messages]


def case_status(case, lang: str | None = None) -> CaseStatus:
    """What the person may see of their case (never the photo: a leaked link shows no picture). The expert's canned
    answer and the disclaimer are in ``lang`` (default: the case's own language)."""
    lang = lang or case.language
    messages = thread(case, lang)
    # The verdict is the answer only once the case is answered: a "retake the photo" keeps it open (a message of the
    # thread, which the person answers with a new photo).
    verdict = case.verdict if case.status == "answered" else None
    return CaseStatus(messages=messages, unseen=sum(m.new for m in messages), locked=case.pin_hash is not None,
        number=case.number, status=case.status, sent_at=case.created_at.isoformat(timespec="seconds"),
        verdict=verdict, language=case.language,
        verdict_text=i18n.text(lang, f"verdict.{verdict}") if verdict in service.VERDICTS else None,
        message=case.message if verdict else None,
        answered_at=case.answered_at.isoformat(timespec="seconds") if case.answered_at else None,
        disclaimer=i18n.text(lang, "disclaimer"), training_consent=case.training_consent)


@router.post("/api/cases", status_code=201, dependencies=[Depends(no_repeated_fields)],
             responses={200: {"model": CaseSent, "description": "sent again with the idempotency key of a case "
                                                                 "already stored: that case (nothing new stored)"}})
async def send_case(form: Annotated[CaseForm, Form(media_type="multipart/form-data")], request: Request,
                    background: BackgroundTasks, settings: AppSettings, screener: ModelScreener, db: DbSession,
                    photos: Photos, served_sha256: ModelSha256) -> CaseSent:
    """Store a case for the experts (multipart form: the file ``photo``, ``consent``, ``computed``, ``probabilities``,
    ``model_sha256``, optionally ``language``, up to two more photos ``photo_2`` / ``photo_3`` each with its
    ``computed_N`` and ``probabilities_N``, and the optional questions). Every photo must be usable or nothing is
    stored: a refusal names the photo. Answers the case number and the follow-up link (its secret is shown this
    once)."""
    _check_probabilities(form.probabilities, screener.classes)
    extras = form.extra_photos()
    for k, _file, _computed, probabilities in extras:
        try:
            _check_probabilities(probabilities, screener.classes)
        except HTTPException as exc:
            raise HTTPException(exc.status_code, f"probabilities_{k}: {exc.detail}") from None
    data = await read_photo(form.photo, settings)
    extra_data = [await read_photo(file, settings, f"photo {k}") for k, file, _c, _p in extras]
    # Full size: the expert sees the photos as sent. Each is opened before any is stored (all or nothing).
    photo = await run_in_threadpool(open_upload, data, settings)
    more = [service.SentPhoto(await run_in_threadpool(open_upload, raw, settings, None, f"photo {k}"), probs, computed)
            for raw, (k, _file, computed, probs) in zip(extra_data, extras)]
    submitted = await run_in_threadpool(
        service.submit_case, db, photos, screener, photo, form.probabilities, form.computed, form.model_sha256,
        form.language or i18n.choose(request), form.pin, more=more, answers=form.answers(),
        training_consent=form.allows_training(), idempotency_key=form.idempotency_key)
    # Off the event loop: the status reads the case's conversation (and a replayed case its photos) from the
    # database, and a loop blocked on a connection that other requests' sessions hold stalls every request (50 at
    # once once waited 120 s).
    status, count = await run_in_threadpool(lambda: (case_status(submitted.case), len(submitted.case.photos)))
    if settings.notify_url and not submitted.replayed:
        case = submitted.case
        dashboard = public_base(request, settings) + f"/expert/cases/{case.number}"
        background.add_task(notify.post, settings.notify_url, notify.case_message(
            case.number, case.screening_probability, case.answer, case.answer_reason, dashboard, photos=count))
    sent = CaseSent(**status.model_dump(), follow_up=f"/c/{submitted.token}",
                    model_matches=form.model_sha256 == served_sha256, photos=count,
                    device_key=submitted.device_key, replayed=submitted.replayed)
    # A send repeated with its idempotency key: the case it made (200), not a new one (201).
    return JSONResponse(sent.model_dump(), status_code=200) if submitted.replayed else sent


def public_base(request: Request, settings: Settings) -> str:
    """The service's address for links sent elsewhere (the experts' webhook): --public-url, else the address this
    connection reached the server on (the socket's, not the Host header, which any client can set: a forged one
    would send the experts a link to another site)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host, port = request.scope.get("server") or ("127.0.0.1", 8000)
    scheme = request.url.scheme
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if (scheme, port) in (("http", 80), ("https", 443)) else f":{port}")


def _case_or_404(db: Session, token: str):
    case = service.case_by_token(db, token)
    if case is None:
        raise HTTPException(404, "no case with this link: it may have been withdrawn, or the link is incomplete")
    return case


@router.get("/api/privacy")
def privacy(settings: AppSettings) -> Privacy:
    """What the page tells the person before they consent: how long an answered case is kept on this server."""
    return Privacy(answered_cases_kept_days=settings.keep_days, waiting_cases_kept="until answered or withdrawn",
                   stored_photo_max_side=service.STORED_MAX_SIDE)


@router.get("/api/cases/{token}", responses={401: {"description": LOCKED}})
def case_json(token: str, request: Request, db: DbSession,
              x_device_key: Annotated[str | None, Header(max_length=64)] = None) -> CaseStatus:
    """The case's status and conversation (what the phone's list and its notifications read). A case locked by a
    PIN answers 401 unless this browser gave the PIN on the follow-up page a short while ago, or sends the case's
    device key (CaseSent.device_key, kept by the phone that sent it) in the header X-Device-Key: a header, never
    the address, so that no log or history holds it."""
    case = _case_or_404(db, token)
    if not (_unlocked(request, case, token) or (x_device_key and service.check_device_key(case, x_device_key))):
        return JSONResponse({"detail": LOCKED, "locked": True}, status_code=401)
    return case_status(case)


def _person_page(request: Request, context: dict, lang: str, status_code: int = 200):
    """followup.html in the person's language; a language picked with ?lang= is remembered."""
    response = templates.TemplateResponse(request, "followup.html", {**context, **i18n.template_context(lang)},
                                          status_code=status_code)
    i18n.remember(response, request)
    return response


def unavailable_page(request: Request) -> HTMLResponse:
    """What a person's form (withdraw, reply, unlock) answers when the server cannot store anything: their page, in
    their language, saying that nothing changed and to try again (the JSON reason is for API clients)."""
    return _person_page(request, {"case": None, "unavailable": True}, i18n.choose(request), status_code=503)


def _locked_page(request: Request, token: str, lang: str, error: str | None = None, status_code: int = 200,
                 headers: dict | None = None):
    """All a locked case shows: that it is locked, and where to give its PIN."""
    response = _person_page(request, {"case": None, "locked": True, "token": token, "pin_error": error}, lang,
                            status_code=status_code)
    response.headers.update(headers or {})
    return response


@router.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
def follow_up_page(request: Request, token: str, db: DbSession):
    case = service.case_by_token(db, token)
    if case is None:
        return _person_page(request, {"case": None}, i18n.choose(request), status_code=404)
    lang = i18n.choose(request, case.language)  # the case's language unless the person picked another
    if not _unlocked(request, case, token):
        return _locked_page(request, token, lang)
    return _follow_up(request, db, case, token, lang)


def _follow_up(request: Request, db: Session, case, token: str, lang: str, reply_error: str | None = None,
               status_code: int = 200):
    """The person's page: the case, the conversation (the expert's messages not seen before marked new, and seen
    from now on), the reply form when the expert asked something, the expert's answer, withdrawal."""
    status = case_status(case, lang)
    # The answer: the last conclusion of an answered case. Every other message is the thread, a "retake the photo"
    # conclusion included (the person answers it with a new photo, below it).
    final = len(status.messages) - 1 if status.verdict and status.messages[-1].kind == "conclusion" else None
    conclusion = status.messages[final] if final is not None else None
    context = {"case": status.model_dump(), "token": token, "created_at": case.created_at,
               "answered_at": case.answered_at, "conclusion_new": bool(conclusion and conclusion.new),
               "conclusion": conclusion,
               # The thread's dates as datetimes: the template formats them for the language.
               "thread": [(m, case.messages[i].created_at) for i, m in enumerate(status.messages) if i != final],
               "retake": service.reopened(case), "written_in": lambda code: i18n.language_in(code, lang),
               "replied": "replied" in request.query_params, "reply_error": reply_error,
               "training_withdrawn": "training-withdrawn" in request.query_params,
               "max_message": service.MAX_MESSAGE}
    service.mark_seen(db, case)
    return _person_page(request, context, lang, status_code=status_code)


@router.post("/c/{token}/unlock", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(same_origin)])
def unlock(request: Request, token: str, db: DbSession, settings: AppSettings,
           pin: Annotated[str, Form(max_length=16)] = "", device_key: Annotated[str, Form(max_length=64)] = ""):
    """The PIN chosen at sending, or the device key of the phone that sent the case (CaseSent.device_key), opens
    the case's page (and its status, for this phone's list) for UNLOCK_LIFETIME. Each PIN check is an argon2 check,
    reserved before it runs against three limits: PIN checks from this address, PIN checks of this case, and wrong
    PINs of this case (given back when the PIN was right); and at most security.ARGON2_SLOTS run at once."""
    case = _case_or_404(db, token)
    lang = i18n.choose(request, case.language)
    if case.pin_hash is None:
        return RedirectResponse(f"/c/{token}", status_code=303)
    db.commit()  # the read ends here: no pooled connection waits through argon2 (issue 27: 40 unlocks, 23 answers 500)
    if device_key:
        if not service.check_device_key(case, device_key):
            return _locked_page(request, token, lang, i18n.text(lang, "pin.wrong"), 401)
        return _unlocked_redirect(case, token, settings)
    limits, address = request.app.state.limits, client_key(request)
    case_key = f"case {case.token_hash}"  # never reused (a row id is, once a case is withdrawn: issue 27)
    counts = (("address_unlocks", address), ("case_unlocks", case_key), ("pins", case_key))
    held = []
    for kind, key in sorted(counts, key=lambda count: not limits.refused(*count)):  # a known refusal first: no write
        reservation = limits.reserve(kind, key)
        if reservation is None:
            for earlier in held:  # no check ran: the other counts give their places back
                limits.release(earlier)
            wait = limits.retry_after(kind, key)
            minutes = -(-wait // 60)
            message = "pin.limited" if kind == "pins" else "pin.attempts"
            return _locked_page(request, token, lang, i18n.text(lang, message, minutes=minutes, count=minutes),
                                429, {"Retry-After": str(wait)})
        held.append(reservation)
    try:
        right = service.check_pin(case, pin)
    except TooBusy:
        for reservation in held:
            limits.release(reservation)
        return _locked_page(request, token, lang, i18n.text(lang, "pin.attempts", minutes=1, count=1), 429,
                            {"Retry-After": "1"})
    if not right:
        service.audit(db, "wrong PIN", case_number=case.number)
        return _locked_page(request, token, lang, i18n.text(lang, "pin.wrong"), 401)
    limits.release(next(r for r in held if r.kind == "pins"))  # the right PIN is no wrong guess
    return _unlocked_redirect(case, token, settings)


def _unlocked_redirect(case, token: str, settings: Settings) -> RedirectResponse:
    """To the case's page, with the cookie that keeps it (and its status) open for UNLOCK_LIFETIME."""
    response = RedirectResponse(f"/c/{token}", status_code=303)
    value = service.unlock_cookie(case, token)
    for path in (f"/c/{token}", f"/api/cases/{token}"):
        response.set_cookie(UNLOCK_COOKIE, value, max_age=int(service.UNLOCK_LIFETIME.total_seconds()), path=path,
                            httponly=True, samesite="strict", secure=settings.secure_cookies)
    return response


@router.post("/c/{token}/reply", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(same_origin), Depends(no_repeated_fields)])
async def reply(request: Request, token: str, db: DbSession, photos: Photos, screener: ModelScreener,
                settings: AppSettings, background: BackgroundTasks, text: Annotated[str, Form()] = "",
                photo: Annotated[UploadFile | None, File()] = None):
    """The person answers the expert's question: text and/or one photo (the upload's checks and limits, counted
    against the same rate limit as cases sent, before the body is read). Refused with the reason, in the person's
    language, when the expert asked nothing, the case is answered, or the reply is empty or too long."""
    # The database's work runs off the event loop, as every other route's does (a busy SQLite waits for its lock).
    case = await run_in_threadpool(service.case_by_token, db, token)
    if case is None:
        return _person_page(request, {"case": None}, i18n.choose(request), status_code=404)
    lang = i18n.choose(request, case.language)
    if not _unlocked(request, case, token):
        return _locked_page(request, token, lang, status_code=401)

    async def refused(key: str, reason: str, status_code: int):
        return await run_in_threadpool(_follow_up, request, db, case, token, lang,
                                       i18n.text(lang, key, reason=reason), status_code)

    number = case.number  # read now: service.reply expires the case (a reload would run on the event loop)
    try:
        service.check_reply(case)  # before the photo is read: nothing to store for a reply nobody asked for
        image = None
        data = await read_photo(photo, settings) if photo is not None else b""
        if data:  # a form sent without a photo still has the field, empty
            image = await run_in_threadpool(open_upload, data, settings)
        await run_in_threadpool(service.reply, db, photos, screener, case, text, image)
    except service.Refused as exc:
        return await refused(exc.key, str(exc), exc.status)
    except HTTPException as exc:
        return await refused("reply.refused.photo", str(exc.detail), exc.status_code)
    if settings.notify_url:  # the experts learn that the case is back in the queue, as they learn of new cases
        dashboard = public_base(request, settings) + f"/expert/cases/{number}"
        background.add_task(notify.post, settings.notify_url, notify.reply_message(number, dashboard))
    return RedirectResponse(f"/c/{token}?replied=1", status_code=303)


@router.post("/c/{token}/training/withdraw", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(same_origin)])
def withdraw_training(request: Request, token: str, db: DbSession):
    """The person withdraws the training consent only: the case stays with the expert, and leaves every future
    training export (`mpoxscan cases export`). A case locked by a PIN must be unlocked first."""
    case = _case_or_404(db, token)
    if not _unlocked(request, case, token):
        return _locked_page(request, token, i18n.choose(request, case.language), status_code=401)
    service.withdraw_training_consent(db, case)
    return RedirectResponse(f"/c/{token}?training-withdrawn=1", status_code=303)


@router.post("/c/{token}/withdraw", response_class=HTMLResponse, include_in_schema=False)
def withdraw(request: Request, token: str, db: DbSession, photos: Photos):
    """The person deletes their case: the photo, the replies' photos and the case go; the audit log keeps the
    number only. A case locked by a PIN must be unlocked first."""
    case = _case_or_404(db, token)
    number, lang = case.number, i18n.choose(request, case.language)
    if not _unlocked(request, case, token):
        return _locked_page(request, token, lang, status_code=401)
    service.withdraw_case(db, photos, case)
    return _person_page(request, {"case": None, "withdrawn": number}, lang)
