"""Server-side screening, for browsers without WebAssembly only (the page screens on the device otherwise)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from mpoxscan.deploy.runtime import DISCLAIMER, Screener
from mpoxscan.errors import ImageError
from mpoxscan.images import load_image
from mpoxscan.web.app import Settings
from mpoxscan.web.deps import get_screener, get_settings, rate_limit, read_body

router = APIRouter()


def open_upload(data: bytes, settings: Settings, min_side: int | None = None):
    """The uploaded photo, or a 400/415 with the reason (the content decides, not a name or a declared type).
    ``min_side``: enough for screening, so a large JPEG may be decoded at a reduced scale (never for a photo kept)."""
    if not data:
        raise HTTPException(400, "empty upload: no photo in the request")
    try:
        return load_image(data, max_pixels=settings.max_pixels, min_side=min_side)
    except ImageError as exc:
        raise HTTPException(415 if "format" in str(exc) or "not an image" in str(exc) else 400, str(exc)) from None


@router.post("/screen", dependencies=[Depends(rate_limit("screens"))])
async def screen(request: Request, screener: Screener = Depends(get_screener),
                 settings: Settings = Depends(get_settings)) -> dict:
    """The raw photo bytes as the request body (any phone format)."""
    settings.counters["api_screen"] += 1
    body = await read_body(request, settings.max_upload_bytes, "photo")
    photo = await run_in_threadpool(open_upload, body, settings, screener.input_size)
    answer, cam, _seen = await run_in_threadpool(screener.screen_and_map, photo)
    return {**answer.as_dict(), "cam": None if cam is None else np.round(cam, 4).tolist(), "disclaimer": DISCLAIMER,
            "computed": "server"}
