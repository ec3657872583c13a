"""Cases a person sends to an expert (after consent) and their follow-up page (by the link's secret token)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from mpoxscan.web import cases as service
from mpoxscan.web import i18n, notify
from mpoxscan.web.deps import (AppSettings, DbSession, ModelScreener, ModelSha256, Photos, no_repeated_fields,
                               open_upload, read_photo, templates)
from mpoxscan.web.schemas import CaseForm, CaseSent, CaseStatus, Privacy
from mpoxscan.web.settings import Settings

router = APIRouter()


def _check_probabilities(probabilities: dict[str, float], classes: list[str]) -> None:
    if sorted(probabilities) != sorted(classes):
        raise HTTPException(400, f"probabilities must name exactly the model's classes: {', '.join(classes)}")
    values = list(probabilities.values())
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 0.01:
        raise HTTPException(400, "probabilities must lie in [0, 1] and sum to 1")


def case_status(case, lang: str | None = None) -> CaseStatus:
    """What the person may see of their case (never the photo: a leaked link shows no picture). The expert's canned
    answer and the disclaimer are in ``lang`` (default: the case's own language)."""
    lang = lang or case.language
    return CaseStatus(
        number=case.number, status=case.status, sent_at=case.created_at.isoformat(timespec="seconds"),
        verdict=case.verdict, language=case.language,
        verdict_text=i18n.text(lang, f"verdict.{case.verdict}") if case.verdict in service.VERDICTS else None,
        message=case.message, answered_at=case.answered_at.isoformat(timespec="seconds") if case.answered_at else None,
        disclaimer=i18n.text(lang, "disclaimer"))


@router.post("/api/cases", status_code=201, dependencies=[Depends(no_repeated_fields)])
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
        form.language or i18n.choose(request), more=more, answers=form.answers())
    if settings.notify_url:
        case = submitted.case
        dashboard = public_base(request, settings) + f"/expert/cases/{case.number}"
        background.add_task(notify.post, settings.notify_url, notify.case_message(
            case.number, case.screening_probability, case.answer, case.answer_reason, dashboard))
    return CaseSent(**case_status(submitted.case).model_dump(), follow_up=f"/c/{submitted.token}",
                    model_matches=form.model_sha256 == served_sha256, photos=len(submitted.case.photos))


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


@router.get("/api/cases/{token}")
def case_json(token: str, db: DbSession) -> CaseStatus:
    return case_status(_case_or_404(db, token))


def _person_page(request: Request, context: dict, lang: str, status_code: int = 200):
    """followup.html in the person's language; a language picked with ?lang= is remembered."""
    response = templates.TemplateResponse(request, "followup.html", {**context, **i18n.template_context(lang)},
                                          status_code=status_code)
    i18n.remember(response, request)
    return response


@router.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
def follow_up_page(request: Request, token: str, db: DbSession):
    case = service.case_by_token(db, token)
    if case is None:
        return _person_page(request, {"case": None}, i18n.choose(request), status_code=404)
    lang = i18n.choose(request, case.language)  # the case's language unless the person picked another
    return _person_page(request, {"case": case_status(case, lang).model_dump(), "token": token, "created_at": case.created_at,
                                  "answered_at": case.answered_at}, lang)


@router.post("/c/{token}/withdraw", response_class=HTMLResponse, include_in_schema=False)
def withdraw(request: Request, token: str, db: DbSession, photos: Photos):
    """The person deletes their case: the photo and the case go; the audit log keeps the number only."""
    case = _case_or_404(db, token)
    number, lang = case.number, i18n.choose(request, case.language)
    service.withdraw_case(db, photos, case)
    return _person_page(request, {"case": None, "withdrawn": number}, lang)
