"""Server-side screening, for browsers without WebAssembly and for photos the browser cannot open (HEIC in most
browsers), once the person agrees; the page screens on the device otherwise. Nothing is stored."""

from __future__ import annotations

import base64
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Form
from fastapi.concurrency import run_in_threadpool

from mpoxscan.deploy.runtime import DISCLAIMER
from mpoxscan.web.deps import AppSettings, ModelScreener, no_repeated_fields, open_upload, read_photo
from mpoxscan.web.schemas import PhotoForm, ScreenAnswer

router = APIRouter()


def _data_url(seen) -> str:
    """The square the network saw as a JPEG data URL (pixels only: a new encoding carries no metadata)."""
    buf = io.BytesIO()
    seen.convert("RGB").save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@router.post("/screen", response_model_exclude_unset=True, dependencies=[Depends(no_repeated_fields)])
async def screen(form: Annotated[PhotoForm, Form(media_type="multipart/form-data")], screener: ModelScreener,
                 settings: AppSettings, picture: bool = False) -> ScreenAnswer:
    """Screen a photo (multipart form, one file field ``photo``; any phone format). ``?picture=1`` adds ``picture``:
    the square the network saw, as a JPEG data URL (for a page that cannot decode the photo itself)."""
    data = await read_photo(form.photo, settings)
    photo = await run_in_threadpool(open_upload, data, settings, screener.input_size)
    answer, cam, seen = await run_in_threadpool(screener.screen_and_map, photo)
    extra = {"picture": await run_in_threadpool(_data_url, seen)} if picture else {}
    return ScreenAnswer(**answer.as_dict(), cam=None if cam is None else np.round(cam, 4).tolist(),
                        disclaimer=DISCLAIMER, computed="server", **extra)
