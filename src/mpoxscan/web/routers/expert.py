"""The expert dashboard: sign-in, the queue, a case (photo, heat map, model output), the answer, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from mpoxscan.errors import ImageError
from mpoxscan.images import load_image
from mpoxscan.web import cases as service
from mpoxscan.web import i18n
from mpoxscan.web.deps import (LOGIN_COOKIE, AppSettings, CurrentExpert, DbSession, ModelScreener, Photos, client_key,
                               same_origin, templates, too_many)
from mpoxscan.web.security import TooBusy

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return templates.TemplateResponse(request, "login.html", {})


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
def login(request: Request, email: Annotated[str, Form(max_length=320)],
          password: Annotated[str, Form(max_length=1024)], db: DbSession, settings: AppSettings):
    """A failed sign-in is counted per address in the database, reserved before the password is checked (so that
    concurrent attempts cannot all pass the last free place) and given back when the password was right."""
    limits, address = request.app.state.limits, client_key(request)
    reservation = limits.reserve("logins", address)
    if reservation is None:
        raise too_many(request, "logins", address)
    try:
        signed = service.sign_in(db, email, password)
    except TooBusy:
        limits.release(reservation)  # not checked: not counted
        raise
    if signed is None:
        return templates.TemplateResponse(request, "login.html", {"error": "Wrong e-mail address or password."},
                                          status_code=401)
    limits.release(reservation)
    _expert, token = signed
    response = RedirectResponse("/expert", status_code=303)
    response.set_cookie(LOGIN_COOKIE, token, max_age=int(service.LOGIN_LIFETIME.total_seconds()), path="/expert",
                        httponly=True, samesite="strict", secure=settings.secure_cookies)
    return response


@router.post("/logout", dependencies=[Depends(same_origin)])
def logout(request: Request, db: DbSession):
    token = request.cookies.get(LOGIN_COOKIE)
    if token:
        service.sign_out(db, token)
    response = RedirectResponse("/expert/login", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/expert")
    return response


@router.get("", response_class=HTMLResponse)
def queue_page(request: Request, db: DbSession, expert: CurrentExpert, order: str = "priority"):
    if order not in ("priority", "age"):
        raise HTTPException(400, "order must be 'priority' or 'age'")
    counts = service.counts(db)
    return templates.TemplateResponse(request, "queue.html", {
        "expert": expert, "order": order, "waiting": service.queue(db, order), "answered": service.answered(db),
        "asked": service.asked(db),
        "counts": counts, "in_queue": sum(counts.get(status, 0) for status in service.QUEUED),
        "just_answered": request.query_params.get("answered"),
        "just_asked": request.query_params.get("asked")})


def _case(db: Session, number: str):
    case = service.case_by_number(db, number)
    if case is None:
        raise HTTPException(404, f"no case {number}: it may have been withdrawn by the person")
    return case


@router.get("/cases/{number}", response_class=HTMLResponse)
def case_page(request: Request, number: str, db: DbSession, screener: ModelScreener, expert: CurrentExpert):
    case = _case(db, number)
    service.audit(db, "viewed case", expert, case.number)
    photos = service.photos_of(case)
    # One row per class: the server's and the phone's probability for each photo, side by side.
    rows = [(c, [(p.probabilities.get(c), p.device_probabilities.get(c)) for p in photos]) for c in screener.classes]
    return templates.TemplateResponse(request, "case.html", {
        "expert": expert, "case": case, "photos": photos, "rows": rows, "verdicts": service.VERDICTS,
        "verdict_labels": service.VERDICT_LABELS, "reopening": service.REOPENING_VERDICTS,
        "answers": service.question_answers(case), "requests": service.REQUESTS,
        "max_message": service.MAX_MESSAGE, "labels": [*screener.classes, service.UNSURE],
        "label_tests": service.LABEL_TESTS, "test_results": service.TEST_RESULTS,
        "languages": [(code, i18n.name(code)) for code in i18n.LANGUAGES]})


def _photo(case, position: int):
    photo = service.photo_of(case, position)
    if photo is None:
        raise HTTPException(404, f"case {case.number} has no photo {position}")
    return photo


def _detail(position: int) -> str | None:
    return None if position == 1 else f"photo {position}"


@router.get("/cases/{number}/photo.jpg")
def case_photo(number: str, db: DbSession, photos: Photos, expert: CurrentExpert):
    return _send_photo(number, 1, db, photos, expert)


@router.get("/cases/{number}/photos/{position}/photo.jpg")
def case_photo_n(number: str, position: int, db: DbSession, photos: Photos, expert: CurrentExpert):
    return _send_photo(number, position, db, photos, expert)


def _send_photo(number: str, position: int, db: Session, photos: service.PhotoStore, expert):
    case = _case(db, number)
    data = _photo_bytes(photos, case, _photo(case, position).photo_file)
    # Each download: the case page is not the only way in.
    service.audit(db, "viewed photo", expert, case.number, _detail(position))
    return Response(data, media_type="image/jpeg")


def _photo_bytes(photos: service.PhotoStore, case, name: str | None = None) -> bytes:
    """A stored photo of the case (its first by default) through the photo store (a folder or the database: the
    same interface)."""
    data = photos.read(name or case.photo_file)
    if data is None:  # removed from the store by hand: say so rather than fail
        raise HTTPException(404, f"the photo of case {case.number} is missing from the photo store")
    return data


@router.get("/cases/{number}/heatmap.png")
async def case_heatmap(number: str, db: DbSession, photos: Photos, screener: ModelScreener, expert: CurrentExpert):
    """Where the model looked, drawn by the server on the stored photo (the same map the phone drew) when the case
    arrived; a case stored before maps were kept gets its map drawn on its first view, and kept."""
    return await _send_heatmap(number, 1, db, photos, screener, expert)


@router.get("/cases/{number}/photos/{position}/heatmap.png")
async def case_heatmap_n(number: str, position: int, db: DbSession, photos: Photos, screener: ModelScreener,
                         expert: CurrentExpert):
    return await _send_heatmap(number, position, db, photos, screener, expert)


async def _send_heatmap(number: str, position: int, db: Session, photos: service.PhotoStore, screener, expert):
    # Every database call off the event loop (a busy SQLite or a full connection pool would stall every request).
    case = await run_in_threadpool(_case, db, number)
    name = (await run_in_threadpool(_photo, case, position)).photo_file

    def read_or_draw() -> bytes:
        png = photos.read_heatmap(name)
        if png is not None:
            return png
        try:  # the loader's limits again: a photo stored before a limit existed costs no more than a normal one
            photo = load_image(_photo_bytes(photos, case, name), name="the stored photo")
        except ImageError as exc:
            raise HTTPException(422, f"no heat map for case {case.number}: {exc}") from None
        png = service.draw_heatmap(screener, photo)
        if png is None:
            raise HTTPException(404, "this model has no heat map output")
        photos.save_heatmap(name, png)
        return png

    png = await run_in_threadpool(read_or_draw)
    # The map is drawn on the photo: it shows the photo.
    await run_in_threadpool(service.audit, db, "viewed heat map", expert, case.number, _detail(position))
    return Response(png, media_type="image/png")


@router.post("/cases/{number}/answer", dependencies=[Depends(same_origin)])
def answer(number: str, verdict: Annotated[str, Form()], db: DbSession, expert: CurrentExpert,
           screener: ModelScreener, message: Annotated[str, Form(max_length=4000)] = "",
           label: Annotated[str, Form(max_length=40)] = service.UNSURE,
           test: Annotated[str, Form(max_length=16)] = "", test_result: Annotated[str, Form(max_length=16)] = "",
           language: Annotated[str, Form(max_length=8)] = "en"):
    """The conclusion: the verdict the person reads, a message (written in ``language``, English by default: the
    person is told when it is not theirs), and the expert's label (a class of the served model, or "unsure", the
    default), with the test that confirmed it and its result (``test`` empty: none). "retake-photo" keeps the case
    open for the person's new photo on the same link."""
    case = _case(db, number)
    if verdict not in service.VERDICTS:
        raise HTTPException(400, f"unknown verdict: one of {', '.join(service.VERDICTS)}")
    if "\x00" in message:
        raise HTTPException(400, "the message holds a NUL character (a control character no text needs)")
    try:
        service.answer_case(db, case, expert, verdict, message, label, classes=screener.classes, test=test or None,
                            test_result=test_result or None, language=language)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    kept_open = verdict in service.REOPENING_VERDICTS  # waits for the new photo, as after a question
    return RedirectResponse(f"/expert?{'asked' if kept_open else 'answered'}={case.number}", status_code=303)


@router.post("/cases/{number}/ask", dependencies=[Depends(same_origin)])
def ask(number: str, db: DbSession, expert: CurrentExpert, request: Annotated[str, Form()] = "",
        text: Annotated[str, Form(max_length=4 * service.MAX_MESSAGE)] = "",
        language: Annotated[str, Form(max_length=8)] = "en"):
    """Ask the person: a canned request (``request``, read in their language) and/or a question (``text``, written
    in ``language``). The case leaves the queue until they reply."""
    case = _case(db, number)
    try:
        service.ask_person(db, case, expert, request or None, text, language)
    except service.Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return RedirectResponse(f"/expert?asked={case.number}", status_code=303)


@router.get("/cases/{number}/messages/{message_id}/photo.jpg")
def reply_photo(number: str, message_id: int, db: DbSession, photos: Photos, expert: CurrentExpert):
    """A photo the person sent in reply (through the photo store, like the case's own)."""
    case = _case(db, number)
    message = service.message_by_id(case, message_id)
    if message is None or message.photo_file is None:
        raise HTTPException(404, f"case {case.number} has no reply photo {message_id}")
    data = _photo_bytes(photos, case, message.photo_file)
    service.audit(db, "viewed reply photo", expert, case.number, detail=str(message_id))
    return Response(data, media_type="image/jpeg")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, db: DbSession, expert: CurrentExpert):
    return templates.TemplateResponse(request, "audit.html", {"expert": expert, "events": service.audit_log(db)})
