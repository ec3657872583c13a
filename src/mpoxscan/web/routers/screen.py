"""Server-side screening, for browsers without WebAssembly and for photos the browser cannot open (HEIC in most
browsers), once the person agrees; the page screens on the device otherwise. Nothing is stored."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from mpoxscan.deploy.runtime import DISCLAIMER
from mpoxscan.web.deps import AppSettings, ModelScreener, open_upload, rate_limit, read_body

router = APIRouter()


def _data_url(seen) -> str:
    """The square the network saw as a JPEG data URL (pixels only: a new encoding carries no metadata)."""
    buf = io.BytesIO()
    seen.convert("RGB").save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@router.post("/screen", dependencies=[Depends(rate_limit("screens"))])
async def screen(request: Request, screener: ModelScreener, settings: AppSettings, picture: bool = False) -> dict:
    """The raw photo bytes as the request body (any phone format). ``?picture=1`` adds ``picture``: the square the
    network saw, as a JPEG data URL (for a page that cannot decode the photo itself)."""
    body = await read_body(request, settings.max_upload_bytes, "photo")
    photo = await run_in_threadpool(open_upload, body, settings, screener.input_size)
    answer, cam, seen = await run_in_threadpool(screener.screen_and_map, photo)
    extra = {"picture": await run_in_threadpool(_data_url, seen)} if picture else {}
    return {**answer.as_dict(), "cam": None if cam is None else np.round(cam, 4).tolist(), "disclaimer": DISCLAIMER,
            "computed": "server", **extra}
