"""Per-layer quantization sensitivity: the Dice each layer costs when it alone is int8.

The float model is calibrated once, by TFLite's `QuantizationDebugger` around the full-integer
converter of `optimize.export`. From that one calibration the debugger's selective quantization
(a denylist of op outputs) makes, without calibrating again, a model with a single layer in int8
and every other op in float, and, for `--keep-float`, the full-integer model with the most
sensitive layers left in float (the converter puts quantize and dequantize ops around them).
Each single-layer model runs in the runtime's LiteRT backend on the held-out tiles and is scored
against the float model exactly as the parity gate scores (`optimize.parity.compare`).

TFLite names an op's output after the TensorFlow ops fused into it, e.g.
`unet/enc1_relu_a/Relu;unet/enc1_bn_a/FusedBatchNormV3;unet/enc1_conv_a/Conv2D1`: the Keras layer
names are path components (with tfmot's `quant_` prefix in a QAT model), and tf2onnx names ONNX
nodes the same way (`unet/enc1_conv_a/Conv2D`). A "layer" here is a layer with a kernel
(convolution, up-convolution, head) together with the batch norm and ReLU fused into its op.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optimize.converters import int8_converter, int8_converter_notes_hidden
from optimize.parity import Reference, compare, run_exported
from runtime.backends import litert_interpreter_class
from runtime.private_api import operators, tensor_name
from train.tfk import keras, tf

log = logging.getLogger(__name__)

_NAME_PARTS = re.compile(r"[;/:]")
# The debugger's statistics are means over every value of a layer's output: a few tiles give
# them (all 24 ISBI calibration tiles at 512 px took 44 s, as long as the whole per-layer loop).
STATISTICS_TILES = 4
# The parity scores each layer's row keeps (see optimize.parity.compare).
_SCORES = ("dice_drop", "agreement_with_float", "dice_vs_truth", "mean_abs_error", "max_abs_error")


def layers_in_name(name: str, layers: Collection[str]) -> set[str]:
    """The Keras layers (of `layers`) that a TFLite tensor or ONNX node name is made of."""
    return {part.removeprefix("quant_") for part in _NAME_PARTS.split(name)} & set(layers)


def kernel_layers(model: keras.Model) -> list[str]:
    """The layers whose weights int8 rounds, in model order."""
    return [layer.name for layer in model.layers if hasattr(layer, "kernel")]


def op_outputs(tflite_model: bytes) -> list[list[str]]:
    """Per op of a TFLite model, its output tensor names (what the debugger's denylist takes)."""
    interpreter = litert_interpreter_class()(model_content=tflite_model)
    return [[tensor_name(interpreter, i) for i in op["outputs"]] for op in operators(interpreter)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The debugger's own noise, once per model it makes: the int8 converter's notes, and the
    deprecation of tf.lite.Interpreter, which it runs its models in (the runtime uses LiteRT)."""
    with int8_converter_notes_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated")
        yield


class CalibratedModel:
    """The float model calibrated once on the tiles; int8 models with chosen layers in float."""

    def __init__(self, model: keras.Model, size: int, calibration: list[np.ndarray]) -> None:
        """Raises ValueError on an empty calibration list (as `optimize.export.tflite_int8`)."""
        debug = [np.asarray(tile, np.float32)[None] for tile in calibration[:STATISTICS_TILES]]
        with _quiet():
            self._debugger = tf.lite.experimental.QuantizationDebugger(
                converter=int8_converter(model, size, calibration),
                debug_dataset=lambda: ([batch] for batch in debug),
            )
        names = [layer.name for layer in model.layers]
        kernels = kernel_layers(model)
        self._nodes: list[str] = []
        self._nodes_of: dict[str, list[str]] = {}  # kernel layer -> its op outputs
        self.fused: dict[str, set[str]] = {}  # kernel layer -> every Keras layer in its op
        for outputs in op_outputs(self._debugger.calibrated_model):
            for node in outputs:
                self._nodes.append(node)
                in_op = layers_in_name(node, names)
                for layer in in_op & set(kernels):
                    self._nodes_of.setdefault(layer, []).append(node)
                    self.fused.setdefault(layer, set()).update(in_op)
        self.layers = [layer for layer in kernels if layer in self._nodes_of]

    def with_fused(self, layers: Iterable[str]) -> set[str]:
        """The layers and every layer fused into their ops (what QAT must leave unannotated)."""
        return set().union(*(self.fused[layer] for layer in layers))

    def _quantized(self, denylist: list[str], fully_quantize: bool) -> bytes:
        with _quiet():
            self._debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=denylist, fully_quantize=fully_quantize
            )
            return self._debugger.get_nondebug_quantized_model()

    def int8(self, keep_float: Iterable[str] = (), float_io: bool = False) -> bytes:
        """The int8 model (int8 I/O as `tflite_int8`, or float I/O) with these layers in float.

        `keep_float` may hold the fused layers too (`with_fused`): they share their op.
        """
        nodes = [node for layer in keep_float for node in self._nodes_of.get(layer, ())]
        return self._quantized(nodes, fully_quantize=not float_io)

    def only(self, layer: str) -> bytes:
        """A float model (float I/O) with only this layer's op in int8."""
        own = set(self._nodes_of[layer])
        return self._quantized([n for n in self._nodes if n not in own], False)

    def statistics(self) -> dict[str, dict[str, float]]:
        """The debugger's own error per layer, every op in int8, on the first calibration tiles.

        In units of the op's output quantization step: rounding alone gives an RMSE of
        1/sqrt(12) ~ 0.29; much more means clipped ranges or coarse weights.
        """
        with _quiet():
            self._debugger.options = tf.lite.experimental.QuantizationDebugOptions()
            self._debugger.run()
        dump = io.StringIO()
        self._debugger.layer_statistics_dump(dump)
        found: dict[str, dict[str, float]] = {}
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            scale = float(row["scale"])
            for layer in layers_in_name(row["tensor_name"], self.layers):
                found[layer] = {
                    "rmse_over_scale": math.sqrt(float(row["mean_squared_error"])) / scale,
                    "max_error_over_scale": float(row["max_abs_error"]) / scale,
                }
        return found


def layer_sensitivity(calibrated: CalibratedModel, reference: Reference) -> list[dict[str, Any]]:
    """Each layer's cost when it alone is int8, most sensitive (largest Dice drop) first.

    Each row: `layer`, `fused` (the layers in its op), the parity scores of the model with only
    that layer in int8 (`dice_drop` against the labels, `agreement_with_float`, ...), and the
    debugger's `rmse_over_scale` and `max_error_over_scale`.
    """
    statistics = calibrated.statistics()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as scratch:
        path = Path(scratch) / "one_layer_int8.tflite"
        for number, layer in enumerate(calibrated.layers, 1):
            path.write_bytes(calibrated.only(layer))
            scores = compare(reference, run_exported(path, "tflite", reference.tiles))
            rows.append(
                {
                    "layer": layer,
                    "fused": sorted(calibrated.fused[layer] - {layer}),
                    **{key: getattr(scores, key) for key in _SCORES},
                    **statistics.get(layer, {}),
                }
            )
            log.info(
                "sensitivity %d/%d: %s alone in int8 loses %+.4f Dice",
                number,
                len(calibrated.layers),
                layer,
                scores.dice_drop,
            )
    # Ties (a layer whose rounding flips no mask pixel) fall back to agreement with float.
    return sorted(rows, key=lambda row: (-row["dice_drop"], row["agreement_with_float"]))


def print_sensitivity(rows: list[dict[str, Any]], limit: int = 10) -> None:
    print(
        f"\n{'layer (alone in int8)':24s} {'Dice drop':>10s} {'agree w/ float':>15s} {'rmse/scale':>11s}"
    )
    for row in rows[:limit]:
        print(
            f"{row['layer']:24s} {row['dice_drop']:+10.4f} {row['agreement_with_float']:15.4f} "
            f"{row.get('rmse_over_scale', float('nan')):11.3f}"
        )
    if len(rows) > limit:
        print(f"({len(rows) - limit} more layers in manifest.json)")
