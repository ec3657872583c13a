"""Server-side screening, for browsers without WebAssembly only (the page screens on the device otherwise)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from mpoxscan.deploy.runtime import DISCLAIMER, Screener
from mpoxscan.web.app import Settings
from mpoxscan.web.deps import get_screener, get_settings, open_upload, rate_limit, read_body

router = APIRouter()


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
