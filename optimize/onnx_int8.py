"""Real int8 ONNX: static QDQ quantization of the fp32 ONNX export with onnxruntime's tools.

tf2onnx folds a QAT model's fake-quant nodes into float weights (tensorflow-onnx issues 1719 and
1394), so converting the QAT Keras model gives an fp32-sized, slower ONNX file. Instead the float
ONNX model is quantized after the fact, calibrated on the same normalized tiles as the TFLite int8
export: 7-bit int8 weights (symmetric, per output channel), 8-bit activations (asymmetric,
min/max, as TFLite), and QuantizeLinear/DequantizeLinear pairs around each op, which onnxruntime's
CPU provider fuses into integer kernels. The model keeps its float input and output, so the runtime
feeds normalized tiles and reads probabilities exactly as from the fp32 model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optimize.saturation import check_no_saturation, u8s8_saturation
from optimize.sensitivity import layers_in_name

if TYPE_CHECKING:
    import onnx

# Activations as uint8 (U8S8), not int8 (S8S8): onnxruntime's CPU provider has uint8 kernels for
# every op of the U-Net (QLinearConv, NhwcMaxPool, QLinearConcat, Resize, QLinearSigmoid), so the
# whole graph runs in integers; with int8 activations it runs MaxPool, Resize, Concat and the
# up-convolutions in float between Q/DQ pairs and is ~1.7x slower (U-Net small, 256 px, 1 thread),
# for the same mask agreement. The grid is TFLite's int8 one shifted by 128 (zero point + 128).
_ACTIVATION_TYPE = "QUInt8"
_WEIGHT_TYPE = "QInt8"
# 7-bit weights ([-64, 64]): onnxruntime's u8 x s8 kernels on x86 without VNNI add pairs of
# products into int16 (VPMADDUBSW), and 255 * 127 * 2 overflows it; 255 * 64 * 2 does not
# (`optimize.saturation`). Measured on the demo model (Xeon with AVX-512 VNNI, 2 threads,
# 256 px): full range 99.67% mask agreement with float, 7-bit 99.66%, same speed; on an AVX2-only
# EPYC the full-range file fell to 97.10% and the 7-bit one kept 99.69% (issue 9). u8 weights
# (U8U8, no saturation either) ran 2.7x slower here, int8 activations (S8S8) 1.9x.
_REDUCE_RANGE = True
# Tiles that the saturation check runs: the weights say whether a pair can saturate at all.
_SATURATION_TILES = 4


class _TileReader:
    """Feeds onnxruntime's calibrator one (1, size, size, C) float32 tile at a time.

    Duck-typed `CalibrationDataReader` (the calibrator only calls `get_next`), so importing this
    module does not import onnxruntime.
    """

    def __init__(self, input_name: str, tiles: list[np.ndarray]) -> None:
        self._input_name = input_name
        self._tiles: Iterator[np.ndarray] = iter(tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._tiles, None)
        return None if tile is None else {self._input_name: tile[None]}


def _calibration_tiles(calibration: list[np.ndarray]) -> list[np.ndarray]:
    tiles = [np.asarray(tile, np.float32) for tile in calibration]
    if not tiles:
        raise ValueError("int8 ONNX calibration needs at least one tile")
    return tiles


def _load(path: Path) -> onnx.ModelProto:
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _input_name(model: onnx.ModelProto) -> str:
    initializers = {init.name for init in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def _preprocess(source: Path, target: Path) -> Path:
    """Shape inference and graph optimization, which the quantizer needs to place Q/DQ well.

    ONNX's own shape inference carries the export's run-time dimensions (batch, height, width)
    through every op of the U-Net; the symbolic pass (which needs sympy, not a dependency) has
    nothing to add and is skipped.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    return target


def _probability_overrides(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Puts sigmoid and softmax outputs on TFLite's fixed [0, 1) grid of step 1/256.

    Calibrated min/max would make the largest probability seen on the calibration tiles the top
    of the range and clip any higher one at deployment (a model that never predicts foreground on
    them could then never predict it), and 0.5 would fall between two levels. On TFLite's grid the
    threshold is the same level in both int8 models: on the tiny test U-Net, mask agreement with
    TFLite int8 went from 99.43 to 99.63 %.
    """
    dtype = np.uint8 if _ACTIVATION_TYPE == "QUInt8" else np.int8
    grid = {
        "scale": np.array(1 / 256, np.float32),
        "zero_point": np.array(np.iinfo(dtype).min, dtype),
    }
    return {
        output: [dict(grid)]
        for node in model.graph.node
        if node.op_type in ("Sigmoid", "Softmax")
        for output in node.output
    }


def _drop_unused_domains(content: bytes) -> bytes:
    """Drops the opset imports that no node uses.

    onnxruntime's optimizer (in the pre-processing) imports every domain it knows, down to
    training and PyTorch ones; other ONNX runtimes should see a plain standard-op model.
    """
    import onnx

    model = onnx.load_from_string(content)
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model.SerializeToString()


def _nodes_of(model: onnx.ModelProto, layers: Collection[str]) -> list[str]:
    """The ONNX nodes that compute these Keras layers: tf2onnx names them after the TensorFlow
    ops (`unet/enc1_conv_a/Conv2D`, `unet/enc1_relu_a/Relu`; batch norms are folded away).

    Raises:
        ValueError: layers were given but no node carries their names.
    """
    nodes = [node.name for node in model.graph.node if layers_in_name(node.name, layers)]
    if layers and not nodes:
        raise ValueError(f"no ONNX node is named after the layers {', '.join(sorted(layers))}")
    return nodes


def quantize_qdq(
    fp32_onnx: bytes,
    tiles: list[np.ndarray],
    per_channel: bool,
    keep_float: Collection[str],
    reduce_range: bool = _REDUCE_RANGE,
) -> bytes:
    """`onnx_int8_qdq` without its saturation check: with `reduce_range=False`, the full-range
    model that saturates AVX2 kernels, which the saturation test and the cross-CPU control need
    on purpose."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # Calibration sessions would repeat tf2onnx's Resize deprecation warning for every model.
    onnxruntime.set_default_logger_severity(3)
    # onnxruntime's tools read and write paths, and calibrate through a model they write.
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as tmp:
        folder = Path(tmp)
        source = folder / "fp32.onnx"
        source.write_bytes(fp32_onnx)
        prepared = _preprocess(source, folder / "prepared.onnx")
        model = _load(prepared)
        target = folder / "int8.onnx"
        quantize_static(
            prepared,
            target,
            _TileReader(_input_name(model), tiles),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType[_ACTIVATION_TYPE],
            weight_type=QuantType[_WEIGHT_TYPE],
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_nodes_of(model, keep_float),
            extra_options={"TensorQuantOverrides": _probability_overrides(model)},
        )
        return _drop_unused_domains(target.read_bytes())


def onnx_int8_qdq(
    fp32_onnx: bytes,
    calibration: list[np.ndarray],
    per_channel: bool = True,
    keep_float: Collection[str] = (),
) -> bytes:
    """Quantizes an fp32 ONNX model (`optimize.export.onnx_fp32`) to QDQ int8.

    Args:
        fp32_onnx: the serialized float model, NHWC float input.
        calibration: normalized (size, size, C) tiles, as the runtime feeds them: the same tiles
            the TFLite int8 export calibrates on, so both int8 models see the same ranges.
        per_channel: one weight scale per output channel, as TFLite does; per-tensor weights
            lose accuracy on convolutions whose channels differ in magnitude.
        keep_float: Keras layers whose nodes stay float (float weights; their quantized
            neighbours' Q/DQ at the borders), as in the TFLite int8 model: give a convolution
            with its fused batch norm and ReLU. onnxruntime would quantize such a Conv's
            weights again at load time: `runtime.backends.OnnxBackend` turns that pass off.

    Returns:
        The serialized QDQ model: float input and output, 7-bit int8 weights and uint8
        activations, which no x86 CPU's int8 kernels saturate.

    Raises:
        ValueError: on an empty calibration list, or a keep_float layer without ONNX nodes.
        SaturationRisk: a weight pair could saturate onnxruntime's AVX2 kernels (a bug here).
    """
    tiles = _calibration_tiles(calibration)
    model = quantize_qdq(fp32_onnx, tiles, per_channel, keep_float)
    check_no_saturation(u8s8_saturation(model, tiles[:_SATURATION_TILES]))
    return model
