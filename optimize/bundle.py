"""The bundle writer: files first, manifest.json last, the folder renamed into place whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from optimize.threshold import DEFAULT as DEFAULT_THRESHOLD
from optimize.threshold import ThresholdChoice
from runtime.backends import litert_interpreter_class
from runtime.bundle import FORMAT_VERSION, MANIFEST, read_manifest, sha256_of
from runtime.io import check_out_folder, write_json_atomic
from runtime.memory import measure_model, measurement_shapes
from train.config import ModelConfig

# Bundle key -> (file name, format). "int8" is always the int8 model that passed the parity
# gate; keys ending in "-onnx" are the ONNX files of that precision.
BUNDLE_FILES: dict[str, tuple[str, str]] = {
    "fp32": ("model_fp32.tflite", "tflite"),
    "fp16": ("model_fp16.tflite", "tflite"),
    "dynamic": ("model_dynamic.tflite", "tflite"),
    "int8": ("model_int8.tflite", "tflite"),
    "int8_float_io": ("model_int8_float_io.tflite", "tflite"),
    "int8_ptq": ("model_int8_ptq.tflite", "tflite"),
    "fp32-onnx": ("model_fp32.onnx", "onnx"),
    "int8-onnx": ("model_int8.onnx", "onnx"),
    "int8_ptq-onnx": ("model_int8_ptq.onnx", "onnx"),
}


def _tensor_info_tflite(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Input and output dtype and quantization, and the input shape (-1: set at run time)."""
    interpreter = litert_interpreter_class()(model_path=str(path))

    def info(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        quantized = scale != 0.0
        return {
            "dtype": detail["dtype"].__name__,
            "scale": float(scale) if quantized else None,
            "zero_point": int(zero_point) if quantized else None,
        }

    model_input = interpreter.get_input_details()[0]
    shape = [int(d) for d in model_input["shape_signature"]]
    return info(model_input), info(interpreter.get_output_details()[0]), shape


def _input_shape_onnx(path: Path) -> list[int]:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def artifact_entry(folder: Path, file: str, fmt: str, precision: str, tile: int) -> dict[str, Any]:
    """The manifest's entry for one model file; a model that takes any size gets its memory
    per pixel measured at the tile side and twice that, one that takes any batch at 1 and 4
    tiles (`runtime.memory`)."""
    path = folder / file
    if fmt == "tflite":
        tensor_in, tensor_out, shape = _tensor_info_tflite(path)
    else:  # ONNX models keep float I/O; QDQ sits inside
        tensor_in = tensor_out = {"dtype": "float32", "scale": None, "zero_point": None}
        shape = _input_shape_onnx(path)
    entry = {
        "file": file,
        "format": fmt,
        "precision": precision.removesuffix("-onnx"),
        "sha256": sha256_of(path),
        "size": path.stat().st_size,
        "input": tensor_in,
        "output": tensor_out,
        "shape": shape,
    }
    shapes = measurement_shapes(tuple(shape), tile)
    if shapes:
        entry["memory"] = measure_model(path, fmt, shapes).to_dict()
    return entry


def check_bundle_out(out: Path, overwrite: bool) -> None:
    """Refuses a folder that already holds a bundle or other files (unless overwrite)."""
    what = "a bundle" if (out / MANIFEST).exists() else "files"
    check_out_folder(out, overwrite, what=what)


def write_bundle(
    out: Path,
    files: dict[str, tuple[str, str, bytes]],
    manifest: dict[str, Any],
    overwrite: bool,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Writes a bundle so that a crash never leaves a folder that looks whole.

    Args:
        out: the bundle folder.
        files: precision -> (file name, format, bytes).
        manifest: every manifest field except `format_version` and `artifacts`.
        overwrite: replace an existing bundle in `out`.
        extra: further files by name (the golden tiles), which the manifest hashes itself.
    """
    check_bundle_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)
    try:
        for name, data in (extra or {}).items():
            (staging / name).write_bytes(data)
        artifacts = []
        for precision, (name, fmt, data) in files.items():
            (staging / name).write_bytes(data)
            artifacts.append(
                artifact_entry(staging, name, fmt, precision, manifest["input"]["size"])
            )
        write_json_atomic(
            staging / MANIFEST,
            {"format_version": FORMAT_VERSION, **manifest, "artifacts": artifacts},
        )
        read_manifest(staging)  # what we wrote must be what the runtime reads
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def manifest_fields(
    run_config: dict[str, Any],
    input_size: int,
    output_size: int,
    versions: dict[str, str],
    source_model: Path,
    calibration: ThresholdChoice | None = None,
) -> dict[str, Any]:
    """The manifest's description of the model, from a training run's config.json.

    `source_model` is the .keras the bundle was made from: the benchmarks measure it as the
    float reference (the SHA-256 tells whether the file there is still the same one).
    `calibration` is the threshold chosen on the validation images (None: 0.5, or a softmax).
    """
    model = run_config["model"]
    classes = model["classes"]
    names = ["background", "foreground"] if classes == 1 else [f"class_{i}" for i in range(classes)]
    postprocessing: dict[str, Any] = {
        "activation": "sigmoid" if classes == 1 else "softmax",
        "threshold": calibration.threshold if calibration else DEFAULT_THRESHOLD,
        "class_names": names,
    }
    if calibration:
        postprocessing["calibration"] = calibration.to_dict()
    return {
        "input": {
            "size": input_size,
            "multiple": ModelConfig.from_dict(model).size_multiple,
            "channels": model["channels"],
            "layout": "NHWC",
            "padding": model["padding"],
        },
        "output": {"size": output_size, "classes": classes},
        "preprocessing": run_config["preprocessing"],
        "postprocessing": postprocessing,
        # "prune" when the model was pruned: the benchmarks tell filter-pruned bundles by it.
        # "fingerprint": the training data's, and the recipe chosen from it.
        "configs": {
            k: run_config[k]
            for k in ("model", "data", "train", "prune", "fingerprint")
            if k in run_config
        },
        "versions": versions,
        "source_model": {"path": str(source_model.resolve()), "sha256": sha256_of(source_model)},
    }
