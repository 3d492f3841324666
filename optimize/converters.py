"""Converters from a float tf_keras U-Net to TFLite and ONNX model bytes.

A 'same' U-Net is exported with its batch, height and width set at run time: the runtime
resizes the input to the whole image (any multiple of 2**depth) when it fits its memory budget,
else to the tiles that fit. A 'valid' U-Net keeps the fixed tile it was trained at (its skip
crops are fixed) with a run-time batch: the runtime runs several of its tiles at once. `size`
is the tile that calibrates int8 models and measures parity. Exporters are data: `EXPORTERS`
maps a bundle key to its converter, and `optimize.quantize` runs them all.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optimize.bundle import BUNDLE_FILES, check_bundle_out, manifest_fields, write_bundle
from optimize.finetune import Run
from optimize.parity import MAX_DICE_DROP, Reference, golden_section, parity_report, written
from runtime.bundle import read_manifest
from runtime.errors import UserError
from runtime.golden import GOLDEN_FILE
from runtime.log import add_verbosity, configure, native_lines_kept_back
from runtime.private_api import tf2onnx_without_optimizers
from runtime.versions import package_versions
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


def bundle_from_run(
    run_folder: str | Path,
    out: str | Path,
    precisions: Iterable[str] = QUICK,
    overwrite: bool = False,
    checkpoint: str = "model.keras",
) -> Path:
    """Exports a training run's model (final or best.keras) to a bundle (`EXPORTERS` keys)."""
    out = Path(out)
    check_bundle_out(out, overwrite)
    run = Run.load(run_folder)
    model = run.load_model(checkpoint)
    tiles = run.calibration_tiles()
    exports = {key: EXPORTERS[key](model, run.tile_size, tiles) for key in precisions}
    if "int8_ptq" in exports:
        exports["int8"] = exports.pop("int8_ptq")
    fields = manifest_fields(
        run.raw_config,
        run.tile_size,
        run.output_tile_size,
        package_versions(),
        run.folder / checkpoint,
    )
    # No gate on this quick path, but the same measurements, so a device can verify the bundle.
    images, labels = run.validation_tiles()
    reference = Reference.of(model, images, labels, run.model_config.classes)
    with written(exports) as paths:
        report = parity_report(reference, paths)
        fields["parity"] = report.to_dict()
        golden, fields["golden"] = golden_section(
            reference,
            run.raw_validation_tiles(),
            paths,
            report,
            run.preprocessing,
            MAX_DICE_DROP,
        )
    files = {key: (*BUNDLE_FILES[key], data) for key, data in exports.items()}
    return write_bundle(out, files, fields, overwrite, extra={GOLDEN_FILE: golden})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m optimize.export",
        description="Export a training run's float model to a bundle: fp32 and post-training "
        "int8 TFLite, fp32 ONNX, and manifest.json: the quick path without QAT (optimize.quantize "
        "prunes, fine-tunes with QAT and gates every export).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "run", type=Path, help="a `python -m train` output folder (model.keras, config.json)"
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument(
        "--checkpoint",
        choices=["final", "best"],
        default="final",
        help="the run's final model.keras, or best.keras (best validation Dice)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a bundle already in --out"
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        for name in ("config.json", "model.keras"):
            if not (args.run / name).is_file():
                raise UserError(
                    f"{args.run} has no {name}: give the --out folder of a finished `python -m train`"
                )
        out = bundle_from_run(
            args.run,
            args.out,
            overwrite=args.overwrite,
            checkpoint=f"{'model' if args.checkpoint == 'final' else 'best'}.keras",
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for artifact in read_manifest(out).artifacts:
        print(f"{artifact.file:20s} {artifact.precision:5s} {artifact.size / 1e6:7.2f} MB")
    print(f"bundle: {out}")
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
