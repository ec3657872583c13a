"""Dependencies shared by the routers: the model, the settings, a database session per request, the signed-in
expert, the rate limits, request bodies read within a size limit, and the page templates."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from mpoxscan.deploy.runtime import Screener
from mpoxscan.errors import ImageError
from mpoxscan.images import load_image
from mpoxscan.web import i18n
from mpoxscan.web.app import HERE, LoginRequired, Settings
from mpoxscan.web.cases import PhotoStore, signed_in_expert
from mpoxscan.web.tables import Expert

templates = Jinja2Templates(directory=HERE / "templates")  # autoescaping on: case messages are user text


def age(moment) -> str:
    """How long ago, in the largest whole unit: '5 min', '3 h', '2 days'."""
    from mpoxscan.web.tables import utcnow

    minutes = int((utcnow() - moment).total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 0)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} days"


templates.env.filters["age"] = age
# The dashboard names the person's language and shows the canned answer as the person will read it.
templates.env.filters["language_name"] = i18n.name
templates.env.globals["person_text"] = i18n.text
LOGIN_COOKIE = "mpoxscan_expert"


def get_screener(request: Request) -> Screener:
    return request.app.state.screener


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def model_sha256(request: Request) -> str:
    """The served model file's sha256 (computed once): the offline cache's version and a case's model id."""
    state = request.app.state
    if not hasattr(state, "model_sha256"):
        import hashlib

        state.model_sha256 = hashlib.sha256(state.settings.model.read_bytes()).hexdigest()
    return state.model_sha256


def page_version(request: Request) -> str:
    """A checksum of the model and the phone page's own files (computed once): the offline cache's name, so that a
    new model or a new version of the page replaces the cached copy."""
    state = request.app.state
    if not hasattr(state, "page_version"):
        import hashlib

        digest = hashlib.sha256(model_sha256(request).encode())
        for name in ("index.html", "app.js", "resize.js", "answer.js", "messages.js", "style.css",
                     "manifest.webmanifest", "icon.svg", *(f"locales/{code}.json" for code in i18n.LANGUAGES)):
            digest.update((HERE / "static" / name).read_bytes())
        state.page_version = digest.hexdigest()[:16]
    return state.page_version


def get_photos(request: Request) -> PhotoStore:
    return request.app.state.photos


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def client_key(request: Request) -> str:
    """Whom a rate limit counts: the client's address (a proxy in front must pass the real one to uvicorn)."""
    return request.client.host if request.client else "unknown"


def rate_limit(kind: str):
    """A dependency that counts one ``kind`` attempt and answers 429 with Retry-After beyond the limit."""

    def check(request: Request) -> None:
        limits, key = request.app.state.limits, client_key(request)
        if not limits.allow(kind, key):
            wait = limits.retry_after(kind, key)
            raise HTTPException(429, f"too many {kind} from this address: try again in {wait} s",
                                headers={"Retry-After": str(wait)})

    return check


def current_expert(request: Request, db: Session = Depends(get_db)) -> Expert:
    token = request.cookies.get(LOGIN_COOKIE)
    expert = signed_in_expert(db, token) if token else None
    if expert is None:
        raise LoginRequired()
    return expert


def same_origin(request: Request) -> None:
    """Refuse form posts from other sites (with the SameSite=Strict cookie, a second guard against CSRF).
    Browsers say where a request comes from in Sec-Fetch-Site (recent ones) or Origin."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise HTTPException(403, "cross-site form post refused")
    elif origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "cross-site form post refused")


def open_upload(data: bytes, settings: Settings, min_side: int | None = None):
    """The uploaded photo, or a 400/415 with the reason (the content decides, not a name or a declared type).
    ``min_side``: enough for screening, so a large JPEG may be decoded at a reduced scale (never for a photo kept)."""
    if not data:
        raise HTTPException(400, "empty upload: no photo in the request")
    try:
        return load_image(data, max_pixels=settings.max_pixels, min_side=min_side)
    except ImageError as exc:
        raise HTTPException(415 if "format" in str(exc) or "not an image" in str(exc) else 400, str(exc)) from None


async def read_body(request: Request, limit: int, what: str = "upload") -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    message = f"{what} larger than {limit / (1024 * 1024):.0f} MB"
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, message)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, message)
    return bytes(body)
