"""Server-side screening, for browsers without WebAssembly only (the page screens on the device otherwise)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request

from mpoxscan.deploy.runtime import DISCLAIMER, Screener
from mpoxscan.errors import ImageError
from mpoxscan.images import load_image
from mpoxscan.web.app import Settings
from mpoxscan.web.deps import get_screener, get_settings

router = APIRouter()


@router.post("/screen")
async def screen(request: Request, screener: Screener = Depends(get_screener),
                 settings: Settings = Depends(get_settings)) -> dict:
    """The raw photo bytes as the request body (any phone format; the content decides, not the name)."""
    settings.counters["api_screen"] += 1
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise HTTPException(413, f"photo larger than {settings.max_upload_bytes // (1024 * 1024)} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_upload_bytes:
            raise HTTPException(413, f"photo larger than {settings.max_upload_bytes // (1024 * 1024)} MB")
    if not body:
        raise HTTPException(400, "empty upload: send the photo's bytes as the request body")
    try:
        photo = load_image(bytes(body), max_pixels=settings.max_pixels, min_side=screener.input_size)
    except ImageError as exc:
        raise HTTPException(415 if "format" in str(exc) or "not an image" in str(exc) else 400, str(exc)) from None
    seen = screener.preprocessing.resize_crop(photo)
    outputs = screener.run(screener.preprocessing.normalize(seen)[None])
    answer = screener.verdict(outputs["probabilities"][0])
    return {**answer.as_dict(), "cam": np.round(outputs["cam"][0], 4).tolist(), "disclaimer": DISCLAIMER,
            "computed": "server"}
