"""The phone page's own routes: the model file and its description, the favicon. The page itself (/), the service
worker (/sw.js) and the versioned files (/assets/...) are answered by assets.asset_server, precompressed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from mpoxscan.deploy.answer import ADVICE
from mpoxscan.deploy.runtime import DISCLAIMER
from mpoxscan.web.deps import AppSettings, ModelScreener, ModelSha256
from mpoxscan.web.schemas import ModelInfo
from mpoxscan.web.settings import ORT_DIST, STATIC

router = APIRouter()


@router.get("/model.onnx", include_in_schema=False)
def model_file(settings: AppSettings) -> FileResponse:
    """The model at a fixed address, for other clients (the page loads its versioned, compressed copy)."""
    return FileResponse(settings.model, media_type="application/octet-stream", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """What browsers ask for on pages that name no icon (and some whatever the page says)."""
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})


@router.get("/api/model")
def model_info(screener: ModelScreener, sha256: ModelSha256) -> ModelInfo:
    """What the page needs to preprocess and answer: classes, preprocessing, threshold, the answer rule (the same
    thresholds the server applies, read from the model file), the disclaimer."""
    meta = screener.meta
    return ModelInfo(classes=meta["classes"], positive_class=meta["positive_class"],
                     screening_threshold=meta["screening_threshold"], answer_rule=screener.rule.as_dict(),
                     advice=ADVICE, preprocessing=meta["preprocessing"], architecture=meta["architecture"],
                     precision=meta["precision"], disclaimer=DISCLAIMER, on_device_runtime=ORT_DIST.is_dir(),
                     sha256=sha256)
