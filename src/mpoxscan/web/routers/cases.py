"""Cases a person sends to an expert (after consent) and their follow-up page (by the link's secret token)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictStr
from sqlalchemy.orm import Session

from mpoxscan.deploy.runtime import Screener
from mpoxscan.web import cases as service
from mpoxscan.web import i18n, notify
from mpoxscan.web.app import Settings
from mpoxscan.web.deps import (get_db, get_photos, get_screener, get_settings, model_sha256, open_upload, rate_limit,
                               read_body, templates)

router = APIRouter()


class CaseIn(BaseModel):
    """What the page sends: consent, the photo (re-encoded on the phone, base64) and the answer the phone showed.
    Strict types: consent is the JSON boolean true (not "yes", 1 or "true"), probabilities are JSON numbers (not
    numeric strings), and no field is coerced from another type."""

    model_config = ConfigDict(extra="forbid", strict=True)
    consent: StrictBool
    photo: StrictStr = Field(description="the photo, base64 (JPEG re-encoded without metadata by the page)")
    computed: Literal["device", "server"]
    probabilities: dict[StrictStr, StrictFloat]
    model_sha256: StrictStr = Field(pattern="^[0-9a-f]{64}$")
    # The page's language (its switch, or the browser's); absent: the request's cookie or Accept-Language decides.
    language: Literal[i18n.LANGUAGES] | None = None


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object hook: a key given twice is refused (the parsers would silently keep the last one, so a
    body could say consent twice and mean whichever a reader picks)."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise HTTPException(422, f"not a case: duplicate key {json.dumps(key)[:80]} in the JSON body")
        seen[key] = value
    return seen


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _check_probabilities(probabilities: dict[str, float], classes: list[str]) -> None:
    if sorted(probabilities) != sorted(classes):
        raise HTTPException(400, f"probabilities must name exactly the model's classes: {', '.join(classes)}")
    values = list(probabilities.values())
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 0.01:
        raise HTTPException(400, "probabilities must lie in [0, 1] and sum to 1")


def case_status(case, lang: str | None = None) -> dict:
    """What the person may see of their case (never the photo: a leaked link shows no picture). The expert's canned
    answer and the disclaimer are in ``lang`` (default: the case's own language)."""
    lang = lang or case.language
    return {"number": case.number, "status": case.status, "sent_at": case.created_at.isoformat(timespec="seconds"),
            "verdict": case.verdict, "language": case.language,
            "verdict_text": i18n.text(lang, f"verdict.{case.verdict}") if case.verdict in service.VERDICTS else None,
            "message": case.message,
            "answered_at": case.answered_at.isoformat(timespec="seconds") if case.answered_at else None,
            "disclaimer": i18n.text(lang, "disclaimer")}


@router.post("/api/cases", status_code=201, dependencies=[Depends(rate_limit("uploads"))])
async def send_case(request: Request, background: BackgroundTasks, settings: Settings = Depends(get_settings),
                    screener: Screener = Depends(get_screener), db: Session = Depends(get_db),
                    photos: service.PhotoStore = Depends(get_photos)) -> dict:
    """Store a case for the experts: JSON {consent, photo, computed, probabilities, model_sha256}. Answers the case
    number and the follow-up link (its secret is shown this once)."""
    # base64 makes the photo a third larger; the JSON around it is small.
    body = await read_body(request, settings.max_upload_bytes * 4 // 3 + 64 * 1024, "case")
    try:
        submission = CaseIn.model_validate_json(body)
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise HTTPException(422, f"not a case: {where}: {first.get('msg')}") from None
    try:  # valid JSON by now: only its keys are looked at
        json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
    except ValueError as exc:  # a corner the two parsers read differently: refuse rather than guess
        raise HTTPException(422, f"not a case: body: {_one_line(exc)}") from None
    if not submission.consent:
        raise HTTPException(400, "no consent: a case is sent to an expert only when the person agrees")
    _check_probabilities(submission.probabilities, screener.classes)
    try:
        data = base64.b64decode(submission.photo, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "photo is not valid base64") from None
    photo = await run_in_threadpool(open_upload, data, settings)  # full size: the expert sees the photo as sent
    submitted = await run_in_threadpool(
        service.submit_case, db, photos, screener, photo, submission.probabilities, submission.computed,
        submission.model_sha256, submission.language or i18n.choose(request))
    if settings.notify_url:
        case = submitted.case
        dashboard = public_base(request, settings) + f"/expert/cases/{case.number}"
        background.add_task(notify.post, settings.notify_url, notify.case_message(
            case.number, case.screening_probability, case.answer, case.answer_reason, dashboard))
    link = f"/c/{submitted.token}"
    return {**case_status(submitted.case), "follow_up": link,
            "model_matches": submission.model_sha256 == model_sha256(request)}


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
def privacy(settings: Settings = Depends(get_settings)) -> dict:
    """What the page tells the person before they consent: how long an answered case is kept on this server."""
    return {"answered_cases_kept_days": settings.keep_days, "waiting_cases_kept": "until answered or withdrawn",
            "stored_photo_max_side": service.STORED_MAX_SIDE}


@router.get("/api/cases/{token}")
def case_json(token: str, db: Session = Depends(get_db)) -> dict:
    return case_status(_case_or_404(db, token))


def _person_page(request: Request, context: dict, lang: str, status_code: int = 200):
    """followup.html in the person's language; a language picked with ?lang= is remembered."""
    response = templates.TemplateResponse(request, "followup.html", {**context, **i18n.template_context(lang)},
                                          status_code=status_code)
    i18n.remember(response, request)
    return response


@router.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
def follow_up_page(request: Request, token: str, db: Session = Depends(get_db)):
    case = service.case_by_token(db, token)
    if case is None:
        return _person_page(request, {"case": None}, i18n.choose(request), status_code=404)
    lang = i18n.choose(request, case.language)  # the case's language unless the person picked another
    return _person_page(request, {"case": case_status(case, lang), "token": token, "created_at": case.created_at,
                                  "answered_at": case.answered_at}, lang)


@router.post("/c/{token}/withdraw", response_class=HTMLResponse, include_in_schema=False)
def withdraw(request: Request, token: str, db: Session = Depends(get_db),
             photos: service.PhotoStore = Depends(get_photos)):
    """The person deletes their case: the photo and the case go; the audit log keeps the number only."""
    case = _case_or_404(db, token)
    number, lang = case.number, i18n.choose(request, case.language)
    service.withdraw_case(db, photos, case)
    return _person_page(request, {"case": None, "withdrawn": number}, lang)
