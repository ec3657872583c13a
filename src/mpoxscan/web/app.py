"""The FastAPI application: routers by concern, the model and the database as dependencies, security headers on every
answer, migrations on start."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from mpoxscan import __version__
from mpoxscan.deploy.runtime import Screener
from mpoxscan.web.assets import asset_server, build_assets
from mpoxscan.web.db import database_url, make_engine, migrate, session_factory
from mpoxscan.web.deps import (FORM_OVERHEAD, SAFE_METHODS, BodyLimit, LoginRequired, check_rate_limit,
                               cross_site)
from mpoxscan.web.security import TooBusy
from mpoxscan.web.settings import ORT_DIST, STATIC, Settings
from mpoxscan.web.store import STORAGE_ERRNOS, DatabasePhotoStore, StorageUnavailable, database_reason, storage_reason

__all__ = ["Settings", "create_app", "create_app_from_env", "lifespan", "make_server"]

log = logging.getLogger(__name__)
# The phone page's web app manifest (installable to the home screen); Python's table may not know the suffix.
mimetypes.add_type("application/manifest+json", ".webmanifest")
# The pages only ever load their own files; wasm needs 'wasm-unsafe-eval'; blob: for the downloaded heat map canvas.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


def secure(request: Request, response: Response) -> Response:
    """The security headers every answer carries (the middleware and the error handlers call this)."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Follow-up links hold a secret: never sent to another site (and own pages keep a real Origin on form posts).
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Permissions-Policy"] = "camera=(self), geolocation=(), microphone=()"
    # Cross-origin isolated: the pages load only their own files (as the CSP already holds them to), and in return the
    # browser grants SharedArrayBuffer, which the on-device network needs to run on several threads (app.js).
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    if request.url.path.startswith(("/expert", "/c/", "/api/cases")):
        response.headers["Cache-Control"] = "no-store"  # case pages and photos stay out of shared caches
    if request.app.state.settings.secure_cookies or request.url.scheme == "https":
        response.headers["Strict-Transport-Security"] = "max-age=31536000"  # browsers keep to https for a year
    location = response.headers.get("location")
    if location and "://" in location:
        # Starlette builds some redirects (a trailing slash) from the request's Host header: never send a client
        # to the host it claimed; a relative Location stays on the site the browser is on.
        parts = urlsplit(location)
        if parts.netloc == request.headers.get("host", request.url.netloc):
            response.headers["location"] = urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))
    return response


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The database for the app's life (uvicorn, or a ``with TestClient(app)``): the engine and the migrations, the
    start-up sweep of the photo folder and the rate limits kept in the database before the first request; on
    shutdown the photo folder's lock is given back and the engine's connections are closed."""
    from mpoxscan.web.cases import start_up_sweep
    from mpoxscan.web.security import RateLimits

    settings: Settings = app.state.settings
    app.state.db_url = database_url(settings.db, settings.data_dir)
    app.state.engine = make_engine(app.state.db_url)
    try:
        app.state.schema = migrate(app.state.engine)
        app.state.sessions = session_factory(app.state.engine)
        if settings.photo_store == "db":  # the store lives in the database this lifespan has just opened
            app.state.photos = DatabasePhotoStore(app.state.engine)
        start_up_sweep(app.state.sessions, app.state.photos)
        app.state.limits = RateLimits(uploads=settings.upload_limit, screens=settings.screen_limit,
                                      logins=settings.login_limit, storage=settings.limits_storage,
                                      sessions=app.state.sessions)
        yield
    finally:
        if app.state.photos is not None:
            app.state.photos.release_serving_lock()
        app.state.engine.dispose()


def create_app(settings: Settings) -> FastAPI:
    from mpoxscan.web.cases import MAX_PHOTOS, PhotoStore
    from mpoxscan.web.routers import cases, expert, health, pages, screen

    app = FastAPI(title="mpoxscan", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.screener = Screener(settings.model, threads=settings.screen_threads)
    settings.data_dir = Path(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The folder store is there from the start (`serve` purges through it before listening); the database store
    # needs the engine that the lifespan opens.
    app.state.photos = PhotoStore(settings.data_dir / "photos") if settings.photo_store == "folder" else None
    # The page's files, versioned and precompressed before the first request (never per request): see assets.py.
    app.state.assets = build_assets(settings.model, settings.assets_dir, log=log.warning)

    # Innermost: every middleware below wraps the files it answers (security headers included).
    app.add_middleware(asset_server(app.state.assets))

    # Added first, so that the security headers wrap its 413 too.
    # A case may carry three photos, each within max_upload_bytes; every other request one photo at most.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD,
                       paths={"/api/cases": MAX_PHOTOS * settings.max_upload_bytes + FORM_OVERHEAD})

    # The photo uploads' rate limits are counted before the body is read: FastAPI parses a form (up to the body limit,
    # spooled to disk) before a route's dependencies run, so a client over its limit would still make the server
    # read 15 MB. Added before the security headers, so that they wrap its 429 and 503.
    uploads = {"/api/screen": "screens", "/api/cases": "uploads"}

    def upload_kind(path: str) -> str | None:
        if path.startswith("/c/") and path.endswith("/reply"):
            return "uploads"  # a reply may carry a photo: counted with the cases sent
        return uploads.get(path)

    @app.middleware("http")
    async def upload_limits(request: Request, call_next):
        kind = upload_kind(request.url.path) if request.method == "POST" else None
        if kind:
            try:
                await run_in_threadpool(check_rate_limit, request, kind)  # the storage may be a database or Redis
            except HTTPException as exc:
                return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
            except StorageUnavailable as exc:
                return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "60"})
        return await call_next(request)

    @app.middleware("http")
    async def same_site_only(request: Request, call_next):
        """Every state-changing request (any method but GET and HEAD, on any route, those added later too) comes
        from this site or from no browser: a foreign page's form cannot withdraw a case (issue 27), send one, or
        spend the upload limits. Before the upload limits and before any body is read."""
        if request.method not in SAFE_METHODS and cross_site(request):
            return JSONResponse({"detail": "cross-site request refused"}, status_code=403)
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        return secure(request, await call_next(request))

    # Unhandled exceptions skip the middleware above (Starlette answers them outside it): each handler below adds
    # the headers itself, so that every answer, 5xx included, carries them.
    @app.exception_handler(StorageUnavailable)
    async def storage_unavailable(request: Request, exc: StorageUnavailable):
        if request.url.path.startswith("/c/") and "text/html" in request.headers.get("accept", ""):
            # A person's own page (a browser's form post): their language, not the API's JSON line.
            from mpoxscan.web.routers.cases import unavailable_page

            response = await run_in_threadpool(unavailable_page, request)
            response.headers["Retry-After"] = "60"
            return secure(request, response)
        return secure(request, JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "60"}))

    @app.exception_handler(OSError)
    async def disk_error(request: Request, exc: OSError):
        if exc.errno in STORAGE_ERRNOS:
            return await storage_unavailable(request, StorageUnavailable(f"cannot store: {storage_reason(exc)}"))
        return await internal_error(request, exc)

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, exc: OperationalError):
        return await storage_unavailable(request, StorageUnavailable(f"cannot store: {database_reason(exc)}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, _exc: Exception):
        return secure(request, JSONResponse({"detail": "internal error: the server failed (see its log)"},
                                            status_code=500))

    @app.exception_handler(TooBusy)
    async def too_busy(request: Request, exc: TooBusy):
        return secure(request, JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "1"}))

    @app.exception_handler(UnicodeEncodeError)
    async def not_unicode(request: Request, _exc: UnicodeEncodeError):
        # Text no database can store: a lone surrogate, which a multipart part declaring a charset such as
        # unicode_escape decodes to (issue 27: a 500 on SQLite and PostgreSQL). The routes' own checks say it first
        # where they read text; this answers for any other.
        return secure(request, JSONResponse(
            {"detail": "the request holds text that is not valid Unicode (a lone surrogate)"}, status_code=400))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired):
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/expert/login", status_code=303)
        return JSONResponse({"detail": "sign in as an expert first"}, status_code=401)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        # One readable line instead of pydantic's list: "photo: Field required; consent: ..."
        reasons = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ())[1:]) or "body", e.get("msg", "invalid"))
                   for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(reasons)}, status_code=422)

    app.include_router(pages.router)
    app.include_router(health.router)
    app.include_router(screen.router, prefix="/api")
    app.include_router(cases.router)
    app.include_router(expert.router, prefix="/expert")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if ORT_DIST.is_dir():
        app.mount("/ort", StaticFiles(directory=ORT_DIST), name="ort")
    return app


def create_app_from_env() -> FastAPI:
    """The app factory each worker of `serve --workers N` calls (uvicorn imports it by name in every worker process):
    the settings come as JSON in the environment variable that `serve` set before starting them."""
    import os

    from mpoxscan.web.settings import SETTINGS_ENV

    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: start the workers with `mpoxscan serve --workers N`")
    return create_app(Settings.from_json(text))


def uvicorn_options(host: str, port: int, trusted_proxies: str | None = None, tls_cert: str | None = None,
                    tls_key: str | None = None) -> dict:
    """uvicorn's options, the same for one server in this process and for `serve --workers N`."""
    from mpoxscan.web.connections import BACKLOG, GuardedH11Protocol

    # No access log: its URLs would hold follow-up links (secrets) and case numbers. The protocol: uvicorn's h11 with
    # a header timeout and a connection cap (slowloris).
    return dict(host=host, port=port, log_level="warning", access_log=False, proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=trusted_proxies or None, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                http=GuardedH11Protocol, backlog=BACKLOG)


def make_server(app: FastAPI, host: str, port: int, trusted_proxies: str | None = None, tls_cert: str | None = None,
                tls_key: str | None = None):
    """The uvicorn server that `mpoxscan serve` runs (and the tests and benchmarks start in a thread).

    ``trusted_proxies``: addresses of reverse proxies whose X-Forwarded-For / -Proto headers are believed (the rate
    limits then count the real client); without it no forwarded header is believed, so no client can pick the
    address its uploads are counted under."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, **uvicorn_options(host, port, trusted_proxies, tls_cert, tls_key)))
