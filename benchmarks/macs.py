"""Multiply-accumulates of a TFLite model, counted from its own operators and tensor shapes.

Counting from the model file works for every variant, thin (filter-pruned) models included,
without the Keras model that made it. Convolutions are nearly all of a U-Net's work; pooling,
resizing, concatenation and activations are not counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends import allocate, litert_interpreter_class
from runtime.private_api import operators


def _conv(out: np.ndarray, weights: np.ndarray) -> int:
    # CONV_2D: out (N, H, W, Cout), weights (Cout, kh, kw, Cin)
    return int(np.prod(out[1:])) * int(np.prod(weights[1:]))


def _depthwise(out: np.ndarray, weights: np.ndarray) -> int:
    # DEPTHWISE_CONV_2D: weights (1, kh, kw, Cout), one input channel per output channel
    return int(np.prod(out[1:])) * int(weights[1] * weights[2])


def _transpose_conv(inp: np.ndarray, weights: np.ndarray) -> int:
    # TRANSPOSE_CONV: every input pixel scatters a (kh, kw, Cout) patch; weights (Cout, kh, kw, Cin)
    return int(np.prod(inp[1:])) * int(np.prod(weights[:3]))


def _fully_connected(out: np.ndarray, weights: np.ndarray) -> int:
    return int(np.prod(out[1:])) * int(weights[1])


def tflite_macs(path: Path, side: int) -> int:
    """MACs of one batch-1 inference of a side x side input (a model with a fixed input
    size: at that size)."""
    interpreter = litert_interpreter_class()(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    if (detail["shape_signature"] < 0).any():
        interpreter.resize_tensor_input(detail["index"], [1, side, side, detail["shape"][-1]])
        allocate(interpreter)
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    total = 0
    for op in operators(interpreter):
        name, inputs, outputs = op["op_name"], op["inputs"], op["outputs"]
        if name == "CONV_2D":
            total += _conv(shapes[outputs[0]], shapes[inputs[1]])
        elif name == "DEPTHWISE_CONV_2D":
            total += _depthwise(shapes[outputs[0]], shapes[inputs[1]])
        elif name == "TRANSPOSE_CONV":  # inputs: output shape, weights, input
            total += _transpose_conv(shapes[inputs[2]], shapes[inputs[1]])
        elif name == "FULLY_CONNECTED":
            total += _fully_connected(shapes[outputs[0]], shapes[inputs[1]])
    return total
