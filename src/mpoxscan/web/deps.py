"""Dependencies shared by the routers: the model, the settings, a database session per request, the signed-in
expert, the rate limits, uploads within a size limit (and the middleware that bounds every request body), and the
page templates. Routers name them by their
``Annotated`` types (``db: DbSession``, ``expert: CurrentExpert``)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import Headers

from mpoxscan.deploy.runtime import Screener
from mpoxscan.errors import ImageError, UnsupportedImageError
from mpoxscan.images import load_image
from mpoxscan.web import i18n
from mpoxscan.web.assets import static_url
from mpoxscan.web.cases import VERDICT_LABELS, PhotoStore, answers_summary, model_class, signed_in_expert
from mpoxscan.web.settings import TEMPLATES, Settings
from mpoxscan.web.tables import Expert

templates = Jinja2Templates(directory=TEMPLATES)  # autoescaping on: case messages are user text


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
templates.env.globals["summary"] = answers_summary  # the queue's line of the person's answers
templates.env.globals["model_class"] = model_class  # no class as the answer for a photo the model cannot judge
templates.env.globals["asset"] = static_url  # the versioned, precompressed address of a file of static/
templates.env.globals["verdict_label"] = lambda code: VERDICT_LABELS.get(code, code)  # words, not codes
LOGIN_COOKIE = "mpoxscan_expert"


class LoginRequired(Exception):
    """Raised by the current-expert dependency: the app answers a sign-in page for browsers, a 401 for the rest."""


def get_screener(request: Request) -> Screener:
    return request.app.state.screener


ModelScreener = Annotated[Screener, Depends(get_screener)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


AppSettings = Annotated[Settings, Depends(get_settings)]


def model_sha256(request: Request) -> str:
    """The served model file's sha256 (computed once): the offline cache's version and a case's model id."""
    state = request.app.state
    if not hasattr(state, "model_sha256"):
        import hashlib

        state.model_sha256 = hashlib.sha256(state.settings.model.read_bytes()).hexdigest()
    return state.model_sha256


ModelSha256 = Annotated[str, Depends(model_sha256)]


def get_photos(request: Request) -> PhotoStore:
    return request.app.state.photos


Photos = Annotated[PhotoStore, Depends(get_photos)]


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db)]


def client_key(request: Request) -> str:
    """Whom a rate limit counts: the client's address (a proxy in front must pass the real one to uvicorn)."""
    return request.client.host if request.client else "unknown"


def too_many(request: Request, kind: str, key: str) -> HTTPException:
    """The 429 for ``key`` over its ``kind`` limit, with Retry-After."""
    wait = request.app.state.limits.retry_after(kind, key)
    return HTTPException(429, f"too many {kind} from this address: try again in {wait} s",
                         headers={"Retry-After": str(wait)})


def check_rate_limit(request: Request, kind: str) -> None:
    """Count one ``kind`` attempt from the request's client; a 429 with Retry-After beyond the limit."""
    key = client_key(request)
    if not request.app.state.limits.allow(kind, key):
        raise too_many(request, kind, key)


def current_expert(request: Request, db: DbSession) -> Expert:
    token = request.cookies.get(LOGIN_COOKIE)
    expert = signed_in_expert(db, token) if token else None
    if expert is None:
        raise LoginRequired()
    return expert


CurrentExpert = Annotated[Expert, Depends(current_expert)]


#: Methods that change nothing: every other request must come from this site (the app's cross-site middleware).
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def cross_site(request: Request) -> bool:
    """Whether a browser sent this request from another site: Sec-Fetch-Site (recent browsers) or Origin says so.
    A client that sends neither (curl, the tests, an app) is no browser that a foreign page can drive."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        return site not in ("same-origin", "none")
    return bool(origin) and origin != f"{request.url.scheme}://{request.url.netloc}"


def same_origin(request: Request) -> None:
    """Refuse form posts from other sites (with the SameSite=Strict cookie, a second guard against CSRF). The app
    refuses every cross-site request that is not a GET or HEAD before any route (create_app); this dependency says
    the same on the routes that declare it."""
    if cross_site(request):
        raise HTTPException(403, "cross-site form post refused")


def open_upload(data: bytes, settings: Settings, min_side: int | None = None, name: str = "photo"):
    """The uploaded photo, or a 400/415 with the reason (the content decides, not a name or a declared type).
    ``min_side``: enough for screening, so a large JPEG may be decoded at a reduced scale (never for a photo kept);
    ``name``: what the reason calls the photo ("photo 3" in a case of three)."""
    if not data:
        raise HTTPException(400, f"{name}: empty file (0 bytes)")  # the field was sent (else 422), with nothing in it
    try:
        return load_image(data, max_pixels=settings.max_pixels, min_side=min_side, name=name)
    except ImageError as exc:
        raise HTTPException(415 if isinstance(exc, UnsupportedImageError) else 400, str(exc)) from None


#: Room in a request beyond the photo itself: the form's other fields and the multipart boundaries and headers.
FORM_OVERHEAD = 64 * 1024


class BodyLimit:
    """ASGI middleware: every request body is counted as it streams in, and refused with a 413 and the limit as soon
    as it passes ``limit`` bytes (or declares more), so that no form parser or route ever holds or spools more of it.
    ``paths``: a larger limit for the paths named (a case carries up to three photos; a screening, one).
    (Starlette's own RequestBodyLimitMiddleware is recent and answers a bare "Content Too Large".)"""

    def __init__(self, app, limit: int, paths: dict[str, int] | None = None) -> None:
        self.app, self.default, self.paths = app, limit, paths or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope.get("path", ""), self.default)
        declared = Headers(scope=scope).get("content-length", "")
        message = f"request larger than {limit / (1024 * 1024):.0f} MB"
        # ASCII digits (str.isdigit takes "²", which int() refuses); more digits than any limit has is over it.
        if re.fullmatch(r"[0-9]+", declared) and (len(declared) > 15 or int(declared) > limit):
            return await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:  # where the route reads the body: its exception handlers answer
                    raise HTTPException(413, message)
            return event

        await self.app(scope, limited_receive, send)


async def no_repeated_fields(request: Request) -> None:
    """A form field given twice is refused: the form models would silently read one copy (a consent "false" then
    "true" must not mean whichever a reader picks)."""
    form = await request.form()  # parsed already for the route's form model: this is the same, cached form
    counts = Counter(key for key, _ in form.multi_items())
    repeated = sorted(key for key, n in counts.items() if n > 1)
    if repeated:
        raise HTTPException(422, f"{repeated[0][:80]}: given more than once in the form")


async def read_photo(photo: UploadFile, settings: Settings, name: str = "photo") -> bytes:
    """The uploaded file's bytes (never more than the limit in memory), or a 413 naming the photo."""
    data = await photo.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"{name} larger than {settings.max_upload_bytes / (1024 * 1024):.0f} MB")
    return data
