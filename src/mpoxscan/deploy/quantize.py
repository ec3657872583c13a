"""fp16 and int8 variants of an exported fp32 ONNX model (ONNX Runtime's own converters; no PyTorch).

int8 is either static post-training quantization in QDQ form with per-channel weights, calibrated on training
images, or weight-only: int8 weights (per output channel) dequantized to float before each convolution, activations
float. Which to use is measured, not assumed: on x86 CPUs without VNNI, ONNX Runtime's default U8S8 kernels can
saturate and lose most of the accuracy (see ../shared/TOOLCHAIN.md), so :data:`INT8_CANDIDATES` are all tried and
the one that agrees best with fp32 on selection images is kept.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


#: Name prefixes of the graph's measurement nodes (deploy/checks.py), which stay float32 in every variant: the
#: variance of the Laplacian overflows fp16 (it reaches 10^5 on noise), and 8-bit rounding would move thresholds.
CHECK_PREFIXES = ("/quality/", "/offtask/")


def check_nodes(nodes) -> list[str]:
    return [n.name for n in nodes if n.name.startswith(CHECK_PREFIXES)]


def to_fp16(model):
    """fp16 weights and activations, float32 input and outputs (so that callers need not change); the measurement
    nodes stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    blocked = check_nodes(model.graph.node)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked or None)
    return _without_fp16_round_trips(half, set(blocked))


def _without_fp16_round_trips(model, blocked: set[str]):
    """Bypass each float32 -> float16 -> float32 pair of Casts the converter puts around the blocked nodes: the
    float32 image reaches the checks through fp16 (a measure of 129.35 read 129.5) and their float32 outputs are
    rounded to fp16 on the way out. The converter has no option for it, hence this small rewrite: the second Cast
    reads the float32 tensor directly (a float32 -> float32 Cast, a no-op), and a first Cast left unused is removed."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    float_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == 1}

    def cast_to(node, dtype: int) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)

    for node in graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if not (cast_to(node, 1) and first is not None and cast_to(first, 10)):
            continue
        source = first.input[0]
        source_node = producer.get(source)
        if source in float_inputs or (source_node is not None and source_node.name in blocked):
            node.input[0] = source
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
    for n in dead:
        graph.node.remove(n)
    return model


@dataclass(frozen=True)
class Int8Settings:
    name: str
    activations: str = "uint8"  # uint8 | int8
    weights: str = "int8"  # int8 | uint8
    reduce_range: bool = False  # 7-bit weights: avoids the int16 overflow of u8*s8 kernels without VNNI
    calibration: str = "minmax"  # minmax | percentile | entropy (entropy: same agreement on Lite0, 4x slower)
    # Everything after the global pooling (classifier, temperature, softmax) stays float: a few thousand weights,
    # and quantizing the probabilities themselves to 8 bits would flip near-ties for nothing.
    keep_head_float: bool = True
    # The stem and first blocks stay float (mixed precision): they see the full-resolution image, where rounding
    # errors start and then grow through the network; their weights are tiny (~20 k in Lite0), so the file barely
    # grows. Measured on the shipped Lite0: mean |dp| against fp32 halves (0.0030 -> 0.0015) with 9 float convs.
    float_leading_convs: int = 0
    # "static": quantize_static (activations and weights int8); "weights": weight-only int8 (:func:`weights_int8`),
    # with the first ``float_leading_convs`` convolutions' weights stored fp16 instead.
    mode: str = "static"

    def describe(self) -> dict:
        """What the settings do, for the card: a weight-only candidate names only the fields that apply to it (its
        activations stay float; calibration and reduce_range are static quantization's)."""
        if self.mode == "weights":
            return {"name": self.name, "mode": "weights", "weights": "int8, symmetric, one scale per output channel",
                    "activations": "float32", "fp16_leading_convs": self.float_leading_convs,
                    "keep_head_float": self.keep_head_float}
        return asdict(self)


INT8_CANDIDATES = {
    s.name: s for s in (
        Int8Settings("u8s8"),
        Int8Settings("u8s8-reduced", reduce_range=True),
        Int8Settings("u8u8", weights="uint8"),
        Int8Settings("s8s8", activations="int8"),
        Int8Settings("u8s8-float-stem", float_leading_convs=9),
        Int8Settings("u8u8-float-stem", weights="uint8", float_leading_convs=9),
        # The stem and the first three stages float (15 convolutions, ~60 k weights): added when a rebuild of the
        # shipped Lite0 lost 2.7 % agreement with the 9-convolution setting (benchmarks/results/offtask note).
        Int8Settings("u8s8-float-stem15", float_leading_convs=15),
        # Its uint8-weight twin: on the pool-trained Lite0, u8u8 beat u8s8 at both 0 and 9 float convolutions.
        Int8Settings("u8u8-float-stem15", weights="uint8", float_leading_convs=15),
        # Weight-only: the file is as small as int8 where the weights are (the last blocks hold most of them), the
        # arithmetic stays float. Added when every static candidate missed the 99 % gate on the pool-trained Lite0
        # (98.5 %); weight-only int8 of every convolution missed it too (98.3 %): measured block by block, the first
        # 8 convolutions (11 k weights) made most of the flips and the last 18 (2.7 M weights) none.
        Int8Settings("w8-fp16-stem24", mode="weights", float_leading_convs=24),
        Int8Settings("w8-fp16-stem32", mode="weights", float_leading_convs=32),
    )
}


class _Batches:
    """The CalibrationDataReader protocol over an array of preprocessed images."""

    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        self.chunks = [images[i:i + batch] for i in range(0, len(images), batch)]

    def get_next(self):
        return {"image": self.chunks.pop(0)} if self.chunks else None

    def rewind(self) -> None:  # pragma: no cover - not called by the MinMax/percentile calibrators
        pass


def to_int8(model, calibration: np.ndarray, settings: Int8Settings):
    """int8 of an fp32 ``onnx.ModelProto``: static QDQ calibrated on ``calibration`` (N, 3, S, S), or weight-only."""
    if settings.mode == "weights":
        return weights_int8(model, settings.float_leading_convs)
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="mpoxscan-int8-") as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        nodes = onnx.load(pre).graph.node
        exclude = ((_head_nodes(nodes) if settings.keep_head_float else []) + _leading_nodes(nodes, settings.float_leading_convs)
                   + check_nodes(nodes))
        logging.disable(logging.WARNING)  # ORT logs one line per clipped bias to the root logger: dozens per model
        try:
            quantize_static(pre, dst, _Batches(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=settings.reduce_range, activation_type=types[settings.activations],
                            weight_type=types[settings.weights], calibrate_method=methods[settings.calibration],
                            nodes_to_exclude=exclude or None,
                            extra_options={"CalibPercentile": 99.99} if settings.calibration == "percentile" else None)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(dst)


def weights_int8(model, fp16_leading_convs: int = 0):
    """Weight-only int8 of an fp32 ``onnx.ModelProto``: each convolution's weights stored int8 (symmetric, one scale
    per output channel) behind a DequantizeLinear, the first ``fp16_leading_convs`` convolutions' weights stored
    fp16 behind a Cast; every activation, bias and the measurement nodes stay float32.

    Written here because ONNX Runtime's quantizers quantize activations along with the weights (quantize_static,
    quantize_dynamic) or offer weight-only only for MatMul (MatMulNBits); the transform is a rewrite of initializers.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: the caller's fp32 model stays as it is
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    skip = set(check_nodes(graph.node))
    convs = [n for n in graph.node if n.op_type == "Conv" and n.name not in skip]
    added = []
    for k, node in enumerate(convs):
        w = node.input[1]
        if w not in inits or readers[w] != 1:  # a computed or shared weight: left as it is
            continue
        weights = numpy_helper.to_array(inits[w]).astype(np.float32)
        graph.initializer.remove(inits[w])
        if k < fp16_leading_convs:
            graph.initializer.append(numpy_helper.from_array(weights.astype(np.float16), f"{w}_fp16"))
            added.append(helper.make_node("Cast", [f"{w}_fp16"], [w], name=f"{w}_cast", to=TensorProto.FLOAT))
            continue
        scale = np.abs(weights).reshape(len(weights), -1).max(axis=1) / 127.0
        scale[scale == 0] = 1.0  # an all-zero filter: any scale gives zeros
        q = np.clip(np.round(weights / scale.reshape(-1, *[1] * (weights.ndim - 1))), -127, 127).astype(np.int8)
        graph.initializer.extend([numpy_helper.from_array(q, f"{w}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{w}_scale"),
                                  numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{w}_zero")])
        added.append(helper.make_node("DequantizeLinear", [f"{w}_int8", f"{w}_scale", f"{w}_zero"], [w],
                                      name=f"{w}_dequantize", axis=0))
    nodes = added + list(graph.node)  # the new nodes read initializers only: first keeps the graph sorted
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _head_nodes(nodes) -> list[str]:
    """Names of the nodes after the (last) global average pooling, in graph order."""
    names = [n.name for n in nodes]
    pools = [k for k, n in enumerate(nodes) if n.op_type == "GlobalAveragePool"]
    return names[pools[-1] + 1:] if pools else [n.name for n in nodes if n.op_type == "Gemm"]


def _leading_nodes(nodes, convs: int) -> list[str]:
    """Names of the nodes before the (convs + 1)-th convolution: the part of the network kept float."""
    positions = [k for k, n in enumerate(nodes) if n.op_type == "Conv"]
    if convs <= 0 or not positions:
        return []
    end = positions[convs] if convs < len(positions) else len(nodes)
    return [n.name for n in nodes[:end]]


def save(model, path: Path) -> None:
    """Write atomically: a half-written model file must never be mistaken for a good one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
