"""TFLite (LiteRT) export for Android, through litert-torch, checked with the LiteRT interpreter.

litert-torch and ai-edge-litert are heavy (about 2 GB with jax): they live in the ``tflite`` extra, installed in
its own environment by ``make tflite`` (.venv-tflite), so that the main environment stays light. A TFLite file has
no free-form metadata table, so the same metadata as the ONNX file's goes to a JSON file beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mpoxscan.errors import MpoxscanError

HINT = ("the tflite format needs the `tflite` extra (litert-torch, about 2 GB): run `make tflite`, then "
        "`.venv-tflite/bin/mpoxscan export ... --formats onnx,tflite`")


def available() -> bool:
    try:
        import ai_edge_litert  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def to_tflite(module, input_size: int, path: Path, meta: dict) -> Path:
    """Convert ``module`` (batch size 1: the TFLite graph is static) and write ``path`` and ``path``.json."""
    import torch

    if not available():
        raise MpoxscanError(HINT)
    import litert_torch

    edge = litert_torch.convert(module.eval(), (torch.zeros(1, 3, input_size, input_size),))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    edge.export(str(tmp))
    tmp.replace(path)
    Path(f"{path}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


class TFLiteRunner:
    """The LiteRT interpreter over a converted file, one image at a time: outputs by name, as Screener.run."""

    def __init__(self, path: Path, names: list[str]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        # Outputs come back in the order of the module's return values (output_0, output_1, ...).
        details = sorted(self.interpreter.get_output_details(), key=lambda d: d["name"])
        self.outputs = dict(zip(names, [d["index"] for d in details]))

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results: dict[str, list] = {n: [] for n in self.outputs}
        for x in batch:
            self.interpreter.set_tensor(self.input, x[None].astype(np.float32))
            self.interpreter.invoke()
            for name, index in self.outputs.items():
                results[name].append(self.interpreter.get_tensor(index)[0])
        return {n: np.stack(v) for n, v in results.items()}
