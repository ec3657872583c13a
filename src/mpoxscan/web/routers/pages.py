"""The phone page and the files it needs: the page, the model, the model's description."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from mpoxscan.deploy.answer import ADVICE
from mpoxscan.deploy.runtime import DISCLAIMER
from mpoxscan.web.deps import AppSettings, ModelScreener, ModelSha256, PageVersion
from mpoxscan.web.schemas import ModelInfo
from mpoxscan.web.settings import ORT_DIST, STATIC

router = APIRouter()


@router.get("/", include_in_schema=False)
def phone_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/sw.js", include_in_schema=False)
def service_worker(version: PageVersion) -> Response:
    """The offline cache's worker, served from the root so that it controls the whole page; its cache is named after
    the model and the page's files."""
    script = (STATIC / "sw.js").read_text().replace("__VERSION__", version)
    return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/model.onnx", include_in_schema=False)
def model_file(settings: AppSettings) -> FileResponse:
    return FileResponse(settings.model, media_type="application/octet-stream",
                        headers={"Cache-Control": "public, max-age=86400"})


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
