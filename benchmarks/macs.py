"""Multiply-accumulates of a model, counted from its ONNX graph with static shapes.

ONNX's own shape inference gives every tensor's shape once the input's are fixed, so the count
cannot go stale: it needs no interpreter. The earlier count read LiteRT's tensor details after
resizing the input, which do not follow a resize for every tensor (the first convolution of
each block read [1, 1, 1, C]) and counted the demo U-Net at 3.02 GMAC at 512 px instead of
13.67. Convolutions are nearly all of a U-Net's work; pooling, resizing, concatenation and
activations are not counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _static(model, side: int):
    """The model with its input fixed at batch 1 and `side` x `side` (NHWC, as exported)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for index, value in ((0, 1), (1, side), (2, side)):
        if dims[index].dim_value not in (0, value):
            raise ValueError(f"the model's input is fixed at {dims[index].dim_value}, not {value}")
        dims[index].Clear()
        dims[index].dim_value = value
    return model


def _shapes(model) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape: weights from the initializers, the rest inferred."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        shapes[info.name] = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
    return shapes


def _node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    if node.op_type == "Conv":  # every output value: kh * kw * Cin / group MACs
        out, weights = shapes[node.output[0]], shapes[node.input[1]]
        return int(np.prod(out[1:])) * int(np.prod(weights[1:]))
    if node.op_type == "ConvTranspose":  # every input value scatters kh * kw * Cout / group
        inp, weights = shapes[node.input[0]], shapes[node.input[1]]
        return int(np.prod(inp[1:])) * int(np.prod(weights[1:]))
    if node.op_type in ("MatMul", "Gemm"):
        out, inp = shapes[node.output[0]], shapes[node.input[0]]
        return int(np.prod(out)) * int(inp[-1])
    return 0


def onnx_macs(path: Path, side: int) -> int:
    """MACs of one batch-1 inference of a side x side input."""
    import onnx

    model = _static(onnx.load(str(path)), side)
    shapes = _shapes(model)
    return sum(_node_macs(node, shapes) for node in model.graph.node)
