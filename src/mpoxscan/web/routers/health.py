"""`/healthz`: what a supervisor (systemd, Docker, Kubernetes, a load balancer) polls to know the service can work."""

from __future__ import annotations

import os
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter()


def _database_writable(request: Request) -> str | None:
    """None when a write transaction goes through (rolled back: nothing is kept); else the failure's kind only
    (never its text, which can name paths or parameters)."""
    try:
        with request.app.state.engine.connect() as connection:
            with connection.begin() as transaction:
                # A write the database must accept: the migrations' own version table, set to what it already holds.
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
                transaction.rollback()
        return None
    except Exception as exc:  # any driver error means the same thing here: cases cannot be stored
        return type(exc).__name__


def _folder_writable(request: Request) -> str | None:
    """None when the photo folder exists and takes a file (written, flushed, removed)."""
    root = request.app.state.photos.root
    if not root.is_dir():
        return "missing"
    probe = root / f".healthz-{uuid.uuid4().hex}.part"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
        return None
    except OSError as exc:
        probe.unlink(missing_ok=True)
        return exc.strerror or type(exc).__name__


@router.get("/healthz", include_in_schema=False)
def healthz(request: Request) -> JSONResponse:
    """200 with each check "ok", or 503 naming the checks that failed."""
    checks = {"database": _database_writable(request), "photos": _folder_writable(request),
              "model": None if getattr(request.app.state, "screener", None) is not None else "not loaded"}
    status = {name: "ok" if problem is None else f"failed: {problem}" for name, problem in checks.items()}
    healthy = all(problem is None for problem in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": status},
                        status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})
