"""PyTorch modules to ONNX bytes: the one exporter, shared by the frozen backbones of training and curation
(data/embedding.py) and by the deployed files (deploy/export.py)."""

from __future__ import annotations

import io
import warnings

#: The ONNX opset of every file mpoxscan writes.
OPSET = 17


def onnx_bytes(module, input_size: int, output_names: list[str]) -> bytes:
    """One self-contained ONNX file (batch size dynamic) of a module taking images (N, 3, S, S) named ``image``.

    The TorchScript-based exporter (``dynamo=False``) is used: with torch 2.13 it writes a single file with no
    extra dependency, and its graphs quantize cleanly with ONNX Runtime."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(module, torch.zeros(1, 3, input_size, input_size), buf, input_names=["image"],
                          output_names=output_names, dynamic_axes={n: {0: "n"} for n in ["image", *output_names]},
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()
