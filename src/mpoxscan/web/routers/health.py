"""`/healthz`: what a supervisor (systemd, Docker, Kubernetes, a load balancer) polls to know the service can work."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mpoxscan.web.db import database_problem

router = APIRouter()


def _database_writable(request: Request) -> str | None:
    """None when the database file is in place and a write transaction goes through (mpoxscan.web.db: the same
    check that refuses a commit into a deleted SQLite file)."""
    return database_problem(request.app.state.engine)


def _folder_writable(request: Request) -> str | None:
    """None when the photo folder exists and takes a file (mpoxscan.web.store.PhotoStore.problem)."""
    return request.app.state.photos.problem()


@router.get("/healthz", include_in_schema=False)
def healthz(request: Request) -> JSONResponse:
    """200 with each check "ok", or 503 naming the checks that failed."""
    checks = {"database": _database_writable(request), "photos": _folder_writable(request),
              "model": None if getattr(request.app.state, "screener", None) is not None else "not loaded",
              # the rate limits' storage: Redis with several workers; memory:// always answers
              "limits": request.app.state.limits.problem()}
    status = {name: "ok" if problem is None else f"failed: {problem}" for name, problem in checks.items()}
    healthy = all(problem is None for problem in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": status},
                        status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})
