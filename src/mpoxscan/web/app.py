"""The FastAPI application: routers by concern, the model as a dependency, security headers on every answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from mpoxscan import __version__
from mpoxscan.deploy.runtime import Screener

HERE = Path(__file__).resolve().parent
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"
# The page only ever loads its own files; wasm needs 'wasm-unsafe-eval'; blob: for the downloaded heat map canvas.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass
class Settings:
    model: Path
    max_upload_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 50_000_000
    counters: dict = field(default_factory=lambda: {"api_screen": 0})


def create_app(settings: Settings) -> FastAPI:
    from mpoxscan.web.routers import pages, screen

    app = FastAPI(title="mpoxscan", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.screener = Screener(settings.model)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Permissions-Policy"] = "camera=(self), geolocation=(), microphone=()"
        return response

    app.include_router(pages.router)
    app.include_router(screen.router, prefix="/api")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if ORT_DIST.is_dir():
        app.mount("/ort", StaticFiles(directory=ORT_DIST), name="ort")
    return app
