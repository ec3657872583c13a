"""Find, verify and load pretrained weights from the packages that ship them (never from the network)."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mpoxscan.errors import WeightsError
from mpoxscan.models.registry import WeightSource


@dataclass(frozen=True)
class WeightStatus:
    path: Path | None
    state: str  # "verified", "missing" or "corrupted"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "verified"


def locate(source: WeightSource) -> Path | None:
    """Where the weight file of ``source`` lies on disk, or None if its package is not installed."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / source.path
        if candidate.is_file():
            return candidate
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check(source: WeightSource) -> WeightStatus:
    """Whether the weights are installed and match the recorded SHA-256."""
    path = locate(source)
    if path is None:
        return WeightStatus(None, "missing", f"package {source.package} is not installed: {source.install_hint}")
    actual = sha256_file(path)
    if actual != source.sha256:
        return WeightStatus(
            path, "corrupted", f"{path} has SHA-256 {actual[:12]}..., expected {source.sha256[:12]}...; "
            f"reinstall it: {source.install_hint} --force-reinstall"
        )
    return WeightStatus(path, "verified")


def load_state_dict(source: WeightSource) -> dict:
    """The verified state dict of ``source``, loaded with ``weights_only=True`` (no code runs from the file)."""
    import torch

    status = check(source)
    if not status.ok:
        raise WeightsError(status.detail)
    try:
        return torch.load(status.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable pickles
        raise WeightsError(f"{status.path}: cannot be read as PyTorch weights ({exc})") from None
