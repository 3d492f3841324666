"""Converters from a float tf_keras U-Net to TFLite and ONNX model bytes.

A 'same' U-Net is exported with its batch, height and width set at run time: the runtime
resizes the input to the whole image (any multiple of 2**depth) when it fits its memory budget,
else to the tiles that fit. A 'valid' U-Net keeps the fixed tile it was trained at (its skip
crops are fixed) with a run-time batch: the runtime runs several of its tiles at once. `size`
is the tile that calibrates int8 models and measures parity. Exporters are data: `EXPORTERS`
maps a bundle key to its converter, and `optimize.quantize` runs them all.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from runtime.log import native_lines_kept_back
from runtime.private_api import tf2onnx_without_optimizers
from train.tfk import keras, tf

ONNX_OPSET = 17  # tf2onnx 1.17 supports up to 18; 17 is what onnxruntime's tools know best


def export_shape(model: keras.Model, size: int) -> list[int | None]:
    """(batch, height, width, channels) of the exported input: None where set at run time.

    The batch always; height and width for a model built for any side (a 'same' U-Net:
    `build_unet(config, None)`). A model with a fixed side (a 'valid' U-Net) takes tiles of
    `size`, as many to a run as the runtime's memory budget allows.
    """
    _, height, width, channels = model.input_shape
    if height is None and width is None:
        return [None, None, None, channels]
    return [None, size, size, channels]


def serving_function(model: keras.Model, size: int) -> tuple[Any, tf.TensorSpec]:
    """The model as a tf.function of its exported input (`export_shape`), and the input spec."""
    spec = tf.TensorSpec(export_shape(model, size), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image: tf.Tensor) -> tf.Tensor:
        return model(image, training=False)

    return serve, spec


def _converter(model: keras.Model, size: int) -> tf.lite.TFLiteConverter:
    serve, _ = serving_function(model, size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    # The frozen-function path: the default detour through a SavedModel costs ~8 s a model.
    converter.experimental_lower_to_saved_model = False
    return converter


def tflite_fp32(model: keras.Model, size: int) -> bytes:
    return _converter(model, size).convert()


def tflite_fp16(model: keras.Model, size: int) -> bytes:
    """float16 weights (half the size), computed in float32 on CPUs, float16 on many GPUs."""
    converter = _converter(model, size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def tflite_dynamic(model: keras.Model, size: int) -> bytes:
    """Dynamic-range quantization: int8 weights, activations quantized on the fly; no data."""
    converter = _converter(model, size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def int8_converter(
    model: keras.Model, size: int, calibration: Iterable[np.ndarray]
) -> tf.lite.TFLiteConverter:
    """The full-integer converter (int8 I/O) calibrated on tiles; `optimize.sensitivity` takes
    it apart layer by layer.

    Args:
        calibration: normalized (size, size, C) tiles, as the runtime feeds them.
    """
    tiles = [np.asarray(t, np.float32) for t in calibration]
    if not tiles:
        raise ValueError("int8 calibration needs at least one tile")
    converter = _converter(model, size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([tile[None]] for tile in tiles)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


@contextlib.contextmanager
def int8_converter_notes_hidden() -> Iterator[None]:
    """The int8 converter's two notes, neither of which asks for anything: the warning that
    quantized inputs were given no statistics (TF1's `quantized_input_stats`; here calibration,
    or the QAT input layer, sets the input's range) and the calibrator's `fully_quantize: 0,
    inference_type: 6, ...` line, which its C++ writes straight to file descriptor 2."""
    with (
        warnings.catch_warnings(),
        native_lines_kept_back(lambda line: not line.startswith("fully_quantize:")),
    ):
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        yield


def tflite_int8(model: keras.Model, size: int, calibration: Iterable[np.ndarray]) -> bytes:
    """Full-integer model (int8 weights, activations, input and output) calibrated on tiles."""
    with int8_converter_notes_hidden():
        return int8_converter(model, size, calibration).convert()


def onnx_fp32(model: keras.Model, size: int) -> bytes:
    import tf2onnx

    serve, spec = serving_function(model, size)
    # tf2onnx's reshape optimizer, given a Reshape with a run-time shape, writes the shape as a
    # constant with leading 1s plus a Squeeze after it; when that Reshape is the graph output it
    # leaves the Squeeze unread and the model returns (1, N, H, W, 1), not (N, H, W, 1). A
    # 1-channel model's last NCHW->NHWC Transpose becomes such a Reshape about once in 200
    # conversions (which one varies from run to run, with the same model and names): 1 in
    # 400 here, two in CI. Without the pass, the two Reshapes (in and out) read their shape
    # through Shape->Gather: same speed, and 400 conversions in 400 kept the output's shape.
    # tests/optimize/test_export.py shows the bug on a four-node graph.
    with tf2onnx_without_optimizers("reshape_optimizer"):
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
    return proto.SerializeToString()


# Every export of the float model: bundle key -> converter(model, calibration size, tiles).
# optimize.quantize runs them all (and adds the gated int8 models); the quick path below a few.
EXPORTERS: dict[str, Callable[[keras.Model, int, list[np.ndarray]], bytes]] = {
    "fp32": lambda m, s, _: tflite_fp32(m, s),
    "fp16": lambda m, s, _: tflite_fp16(m, s),
    "dynamic": lambda m, s, _: tflite_dynamic(m, s),
    "int8_ptq": tflite_int8,
    "fp32-onnx": lambda m, s, _: onnx_fp32(m, s),
}
QUICK = ("fp32", "int8_ptq", "fp32-onnx")  # without QAT, int8_ptq is the bundle's int8
