"""`python -m optimize.bioimageio BUNDLE --out model.zip`: a bundle as a bioimage.io model package.

Fiji (deepImageJ), ilastik, napari and QuPath share the BioImage Model Zoo's format: a zip with
`rdf.yaml` (format 0.5) at its root, the weights, test tensors, a README and a cover. ONNX is the
weights format all of them read, so the package carries one ONNX model of the bundle (the gated
int8 one by default, else fp32) and the TFLite models as attachments. Everything comes from the
bundle: the manifest (`runtime.bundle`), the golden tiles (`runtime.golden`) and the model files,
each checked against its SHA-256. The zoo's own tester (`bioimageio test`) is the judge of the
package; this module needs neither it nor TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import string
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from optimize.zoo_readme import model_depth, readme
from runtime.backends import BACKENDS
from runtime.bundle import MANIFEST, Artifact, Manifest, read_manifest
from runtime.bundle import verified_model_path as _verified
from runtime.errors import UserError
from runtime.golden import Golden, golden_of
from runtime.io import atomic_path
from runtime.log import add_verbosity, configure
from runtime.metrics import masks_from_probabilities
from runtime.preprocess import Normalization, Preprocessing
from runtime.segmenter import overlay
from runtime.tiling import default_overlap

log = logging.getLogger(__name__)

FORMAT_VERSION = "0.5.4"  # the first 0.5 release with config.bioimageio.reproducibility_tolerance
PRECISIONS = ("fp32", "int8")
MAX_OPSET = 17  # deepImageJ 3's default ONNX engine reads opsets 8-17
INPUT_ID, OUTPUT_ID = "input", "output"
UNET_CITATION = {
    "text": "Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
# The zoo's fixed_zero_mean_unit_variance divides by (std + eps). A bundle's std is at least
# 1e-3 of the dtype's range (measure_preprocessing's floor), so eps moves the model input by at
# most 4e-6 of itself: the packager's second run (zoo_inputs) includes it.
ZOO_EPS = 1e-6
_RANGE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """config.bioimageio.reproducibility_tolerance for the onnx weights, and why it holds.

    The zoo counts an element as mismatched when |actual - expected| > absolute + relative x
    |expected| and fails the test when more than `mismatched_per_million` elements are.
    """

    absolute: float
    relative: float
    mismatched_per_million: int
    why: str

    def mismatched(self, actual: np.ndarray, expected: np.ndarray) -> int:
        bound = self.absolute + self.relative * np.abs(expected)
        return int((np.abs(actual.astype(np.float32) - expected) > bound).sum())

    def holds(self, actual: np.ndarray, expected: np.ndarray) -> bool:
        return (
            self.mismatched(actual, expected) * 1e6 <= self.mismatched_per_million * expected.size
        )

    def line(self) -> str:
        return (
            f"absolute {self.absolute:g}, relative {self.relative:g}, "
            f"{self.mismatched_per_million:g} mismatched elements per million: {self.why}."
        )

    def to_rdf(self) -> dict[str, Any]:
        return {
            "absolute_tolerance": self.absolute,
            "relative_tolerance": self.relative,
            "mismatched_elements_per_million": self.mismatched_per_million,
            "output_ids": [OUTPUT_ID],
            "weights_formats": ["onnx"],
        }


@dataclasses.dataclass(frozen=True)
class Options:
    precision: str | None = None  # None: int8 when its tolerance holds, else fp32
    binarize: bool = False
    name: str | None = None
    authors: tuple[str, ...] = ("unet-edge",)
    license: str = "CC-BY-4.0"
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Written:
    path: Path
    precision: str
    tolerance: Tolerance
    size: int
    files: tuple[str, ...]


def budget_flips_per_million(golden: Golden, max_dice_drop: float) -> int:
    """Output elements per million that may change while the masks stay in the Dice budget.

    Flipping k pixels of a mask with F foreground pixels lowers Dice by at most k / F (k lost:
    1 - 2(F-k)/(2F-k) <= k/F; k added: k/(2F+k)). So k <= max_dice_drop x F keeps the loss
    within the budget the parity gate allowed; per million output pixels of the golden tiles.
    """
    foreground = float(np.mean(golden.masks > 0))
    return int(max_dice_drop * foreground * 1e6)  # the zoo takes whole elements; rounded down


def tolerance_for(
    precision: str, output_step: float | None, float_error: float, budget_ppm: int, binarize: bool
) -> Tolerance:
    """The reproducibility tolerance of the packaged model on another machine.

    fp32: other CPUs' float kernels sum in another order; the parity gate measured the float
    models of three libraries (Keras, XNNPACK, onnxruntime) within `float_error` of each other
    on the held-out tiles, and 1e-4 (or 10x that, when larger) leaves a wide margin.
    int8: the output lies on its quantization grid (`output_step`, 1/256 for a sigmoid). Another
    CPU's requantization may round an activation the other way, which moves an output by one
    step: allowed. Elements further off may be as many as the mask flips the Dice budget allows.
    A binarized output is 0 or 1: any change is a flip, so only the budget applies.
    """
    if binarize:
        return Tolerance(
            0.0,  # the zoo caps it at 1% of the output's maximum; 0 and 1 differ by 1 anyway
            0.0,
            budget_ppm,
            f"binarized output: an element that changes is a flipped pixel; at most {budget_ppm:g} "
            "per million, the flips that keep the masks within the bundle's Dice budget",
        )
    if precision == "fp32" or output_step is None:
        absolute = max(1e-4, 10 * float_error)
        return Tolerance(
            absolute,
            0.0,
            0,
            f"float32 on other CPUs sums in another order; the gate measured float models of "
            f"three libraries within {float_error:.1e} of each other, {absolute:.0e} leaves a "
            "10x margin at least",
        )
    return Tolerance(
        1.5 * output_step,
        0.0,
        budget_ppm,
        f"int8 output on a grid of {output_step:g}: one step (another CPU rounding a "
        f"requantization the other way) passes; at most {budget_ppm:g} elements per million "
        "further off, the mask flips that keep the masks within the bundle's Dice budget",
    )


def _onnx_facts(path: Path) -> tuple[int, float | None]:
    """The model's default-domain opset, and the output's quantization step (None: float)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    out = model.graph.output[0].name
    last = next((n for n in model.graph.node if out in n.output), None)
    if last is not None and last.op_type == "Reshape":  # tf2onnx's final reshape of the head
        last = next((n for n in model.graph.node if last.input[0] in n.output), None)
    if last is None or last.op_type != "DequantizeLinear":
        return opset, None
    inits = {i.name: i for i in model.graph.initializer}
    scale = inits.get(last.input[1])
    return opset, float(numpy_helper.to_array(scale)) if scale is not None else None


def _raw_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST).read_text())


def _onnx_models(bundle: Path, manifest: Manifest) -> dict[str, Artifact]:
    found = {a.precision: a for a in manifest.artifacts if a.format == "onnx"}
    if not any(p in found for p in PRECISIONS):
        raise UserError(
            f"{bundle} has no ONNX model (bioimage.io's consumers read ONNX): rebuild it with "
            "python -m optimize.quantize (or optimize.export)"
        )
    return found


def _input_range(images: np.ndarray) -> float:
    """What the runtime divides raw pixels by (`runtime.preprocess.scale_to_unit`)."""
    return _RANGE.get(images.dtype, 1.0)


def zoo_inputs(images: np.ndarray, prep: Preprocessing, scale: float) -> np.ndarray:
    """The input the zoo's pre-processing computes from raw pixels (ensure_dtype float32, then
    (x - mean) / (std + eps) with mean and std in raw units, fixed or each sample's own per
    channel): a second path to the same input."""
    x = images.astype(np.float32)
    if prep.normalization is Normalization.IMAGE:
        mean = x.mean(axis=(1, 2), keepdims=True)
        std = x.std(axis=(1, 2), keepdims=True)
    else:
        mean, std = np.float32(prep.mean * scale), np.float32(prep.std * scale)
    return ((x - mean) / (std + np.float32(ZOO_EPS))).astype(np.float32)


def _normalization_step(prep: Preprocessing, scale: float) -> dict[str, Any]:
    """The zoo's step for the bundle's normalization, on raw values."""
    if prep.normalization is Normalization.IMAGE:
        return {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"], "eps": ZOO_EPS}}
    return {
        "id": "fixed_zero_mean_unit_variance",
        "kwargs": {"mean": prep.mean * scale, "std": prep.std * scale},
    }


def _run(path: Path, inputs: np.ndarray) -> np.ndarray:
    model = BACKENDS["onnx"][1](path, None)
    return model.run(inputs)


def _binarized(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    return (probabilities > threshold).astype(np.uint8)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _cover(image: np.ndarray, mask: np.ndarray) -> bytes:
    """A golden tile beside the package's mask on it: 2:1, as the zoo asks of covers."""
    tinted = overlay(image, mask)
    grey = overlay(image, np.zeros_like(mask))
    return _png(np.concatenate([grey, tinted], axis=1))


def _halo(manifest: Manifest, test_side: int) -> int:
    """The runtime's tiling context, at most what leaves the test tensor above the smallest
    input the package then declares (2 x halo + a grid step): a model trained on crops smaller
    than its receptive field would otherwise be refused on its own test tensor."""
    step = manifest.size_multiple
    return min(default_overlap(step, manifest.output_size, True) // 2, (test_side - step) // 2)


def _axes(manifest: Manifest, halo: int | None, input_side: bool) -> list[dict[str, Any]]:
    """batch, y, x, channel: run-time sizes for a 'same' U-Net, fixed ones for a 'valid' one."""
    if input_side:
        names = ["grey"] if manifest.channels == 1 else ["red", "green", "blue"]
    else:
        names = [_channel_id(n) for n in _output_channels(manifest)]
    axes: list[dict[str, Any]] = [{"type": "batch"}]
    for axis in ("y", "x"):
        if manifest.input_size != manifest.output_size:  # 'valid': the tile it was built for
            size: Any = manifest.input_size if input_side else manifest.output_size
        elif input_side:
            step = manifest.size_multiple
            size = {"min": (2 * (halo or 0) // step + 1) * step, "step": step}
        else:
            size = {"tensor_id": INPUT_ID, "axis_id": axis}
        entry = {"type": "space", "id": axis, "size": size}
        if not input_side and halo and isinstance(size, dict):
            entry["halo"] = halo
        axes.append(entry)
    axes.append({"type": "channel", "channel_names": names})
    return axes


def _output_channels(manifest: Manifest) -> tuple[str, ...]:
    if manifest.classes == 1:
        return (manifest.class_names[-1] if manifest.class_names else "foreground",)
    return manifest.class_names or tuple(f"class{i}" for i in range(manifest.classes))


def _channel_id(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name.lower())[:16] or "c"


@dataclasses.dataclass(frozen=True)
class _Chosen:
    precision: str
    artifact: Artifact
    path: Path
    output: np.ndarray  # the packaged model's output on the golden tiles (the test tensor)
    tolerance: Tolerance
    opset: int


def _choose(
    bundle: Path, manifest: Manifest, raw: dict[str, Any], golden: Golden, options: Options
) -> _Chosen:
    models = _onnx_models(bundle, manifest)
    if options.precision is not None and options.precision not in models:
        have = ", ".join(p for p in PRECISIONS if p in models)
        raise UserError(f"{bundle} has no {options.precision} ONNX model: it has {have}")
    wanted = (
        [options.precision] if options.precision else [p for p in ("int8", "fp32") if p in models]
    )
    last_reason = ""
    for precision in wanted:
        chosen, reason = _try(bundle, manifest, raw, golden, options, models[precision])
        if chosen is not None:
            return chosen
        last_reason = reason
        if options.precision is None and precision == "int8" and "fp32" in models:
            log.warning(
                "bioimageio: the int8 ONNX model is not packaged (%s): fp32 instead", reason
            )
    raise UserError(f"cannot package {wanted[-1]}: {last_reason}")


def _try(
    bundle: Path,
    manifest: Manifest,
    raw: dict[str, Any],
    golden: Golden,
    options: Options,
    artifact: Artifact,
) -> tuple[_Chosen | None, str]:
    """The precision's model, test output and tolerance, or None and why it cannot be packaged."""
    path = _verified(bundle, artifact)
    opset, step = _onnx_facts(path)
    if opset > MAX_OPSET:
        return None, f"{artifact.file} has opset {opset}, deepImageJ reads up to {MAX_OPSET}"
    if artifact.precision != "fp32" and raw.get("keep_float"):
        # onnxruntime's WeightBiasQuantization would re-quantize the float layers in every
        # consumer's session (the runtime turns it off: runtime.backends).
        return (
            None,
            f"{artifact.file} keeps layers in float (--keep-float), which the zoo's onnxruntime re-quantizes",
        )
    prep = manifest.preprocessing
    output = _run(path, golden.inputs(prep))
    scale = _input_range(golden.images)
    again = _run(path, zoo_inputs(golden.images, prep, scale))
    threshold = manifest.threshold
    if options.binarize:
        output, again = _binarized(output, threshold), _binarized(again, threshold)
    tolerance = tolerance_for(
        artifact.precision,
        step,
        _float_error(raw),
        budget_flips_per_million(golden, float(raw["golden"]["max_dice_drop"])),
        options.binarize,
    )
    if not tolerance.holds(again, output):
        wrong = tolerance.mismatched(again, output)
        return (
            None,
            f"its output moves beyond the tolerance on {wrong} of {output.size} elements when the zoo pre-processes",
        )
    return _Chosen(artifact.precision, artifact, path, output, tolerance, opset), ""


def _float_error(raw: dict[str, Any]) -> float:
    """The largest probability error between float models the gate measured (fp32 TFLite and
    ONNX against Keras); 0 in a bundle without a parity section."""
    models = raw.get("parity", {}).get("models", {})
    return max(
        (float(m.get("max_abs_error", 0.0)) for k, m in models.items() if k.startswith("fp32")),
        default=0.0,
    )


def _attachments(bundle: Path, manifest: Manifest) -> dict[str, Path]:
    """The bundle's fp32 and gated int8 TFLite models, hash-checked."""
    return {
        a.file: _verified(bundle, a)
        for a in manifest.artifacts
        if a.format == "tflite" and a.precision in PRECISIONS
    }


def _rdf(
    manifest: Manifest,
    raw: dict[str, Any],
    chosen: _Chosen,
    options: Options,
    files: dict[str, bytes],
    golden: Golden,
) -> dict[str, Any]:
    def entry(name: str) -> dict[str, str]:
        return {"source": name, "sha256": hashlib.sha256(files[name]).hexdigest()}

    prep = manifest.preprocessing
    scale = _input_range(golden.images)
    resizable = manifest.input_size == manifest.output_size
    halo = _halo(manifest, golden.images.shape[1]) if resizable else None
    postprocessing: list[dict[str, Any]] = []
    if options.binarize:
        postprocessing = [
            {"id": "binarize", "kwargs": {"threshold": manifest.threshold}},
            {"id": "ensure_dtype", "kwargs": {"dtype": "uint8"}},
        ]
    depth = model_depth(manifest, raw)
    padding = raw["input"].get("padding", "same")
    name = options.name or f"U-Net {padding} depth {depth} ({chosen.precision}) unet-edge"
    activation = manifest.activation
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": (
            f"2-D U-Net (Ronneberger et al. 2015) for semantic segmentation, {padding} padding, "
            f"depth {depth}, {chosen.precision} ONNX from the unet-edge toolkit; outputs "
            f"{activation} probabilities" + (" binarized" if options.binarize else "")
        ),
        "authors": [{"name": a} for a in options.authors],
        "cite": [UNET_CITATION],
        "license": options.license,
        "tags": sorted(
            {"segmentation", "semantic-segmentation", "unet", "2d", "onnx", chosen.precision}
            | set(options.tags)
        ),
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": [entry(n) for n in files if n.endswith(".tflite") or n.endswith(".json")],
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw image pixels; the pre-processing scales them as in training",
                "axes": _axes(manifest, halo, True),
                "test_tensor": entry("test_input.npy"),
                "sample_tensor": entry("sample_input.png"),
                "data": {"type": str(golden.images.dtype) if scale != 1.0 else "float32"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    _normalization_step(prep, scale),
                    # The zoo casts back to `data.type` unless the steps end in a dtype.
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": (
                    f"{activation} probabilities (the model's head applies the {activation})"
                    + (f", binarized at {manifest.threshold:g}" if options.binarize else "")
                ),
                "axes": _axes(manifest, halo, False),
                "test_tensor": entry("test_output.npy"),
                "sample_tensor": entry("sample_output.png"),
                "data": {"type": "uint8"}
                if options.binarize
                else {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": postprocessing,
            }
        ],
        "weights": {"onnx": {**entry(chosen.artifact.file), "opset_version": chosen.opset}},
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [chosen.tolerance.to_rdf()],
                "architecture_type": "U-Net",
                "task": "semantic segmentation",
            },
            "unet_edge": {
                "bundle_manifest_sha256": manifest.digest,
                "precision": chosen.precision,
                "padding": padding,
                "multiple": manifest.size_multiple,
                "preprocessing": prep.to_dict(),
                "activation": activation,
                "threshold": manifest.threshold,
                "class_names": list(manifest.class_names),
                "max_dice_drop": float(raw["golden"]["max_dice_drop"]),
                "memory": dataclasses.asdict(chosen.artifact.memory)
                if chosen.artifact.memory
                else None,
                "tolerance_why": chosen.tolerance.why,
                # What the training images look like: the toolkit's runtime flags drifted
                # images of the packages it wrote (runtime.quality).
                "quality": raw.get("quality"),
            },
        },
    }


def package_files(bundle: Path, options: Options) -> tuple[dict[str, bytes], _Chosen]:
    """Every file of the package, rdf.yaml last, read from the bundle."""
    manifest = read_manifest(bundle)
    raw = _raw_manifest(bundle)
    golden = golden_of(bundle, manifest)
    if options.binarize and manifest.classes > 1:
        raise UserError(
            "--binarize applies to a sigmoid model: a softmax model's mask is the argmax"
        )
    chosen = _choose(bundle, manifest, raw, golden, options)
    files: dict[str, bytes] = {chosen.artifact.file: chosen.path.read_bytes()}
    test_input = (
        golden.images if _input_range(golden.images) != 1.0 else golden.images.astype(np.float32)
    )
    files["test_input.npy"] = _npy(test_input)
    files["test_output.npy"] = _npy(chosen.output)
    probabilities = chosen.output.astype(np.float32)
    mask = (
        probabilities[0, ..., 0].astype(np.uint8)
        if options.binarize
        else masks_from_probabilities(probabilities[:1], manifest.threshold)[0]
    )
    files["cover.png"] = _cover(_cover_image(golden, manifest), mask)
    files.update(_samples(golden, probabilities[0], mask, manifest))
    for name, path in _attachments(bundle, manifest).items():
        files[name] = path.read_bytes()
    files["unet_edge_manifest.json"] = (bundle / MANIFEST).read_bytes()
    files["README.md"] = readme(
        manifest, raw, chosen.precision, chosen.tolerance.line(), sorted(files), options.binarize
    ).encode()
    rdf = _rdf(manifest, raw, chosen, options, files, golden)
    files["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode()
    return files, chosen


def _samples(
    golden: Golden, output: np.ndarray, mask: np.ndarray, manifest: Manifest
) -> dict[str, bytes]:
    """The first test tile as pictures a person can open (the zoo's FAIR `sample_tensor`): its
    pixels (8 bit; a 16-bit or float tile scaled to it) and the foreground probability x 255,
    or the class mask of a softmax model."""
    image = golden.images[0].astype(np.float32) / _input_range(golden.images)
    picture = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if manifest.classes == 1:
        result = np.rint(np.clip(output[..., 0], 0, 1) * 255).astype(np.uint8)
    else:
        result = mask.astype(np.uint8)
    return {
        "sample_input.png": _png(picture[..., 0] if picture.shape[-1] == 1 else picture),
        "sample_output.png": _png(result),
    }


def _cover_image(golden: Golden, manifest: Manifest) -> np.ndarray:
    """The first golden tile's centre, cut to the output tile for a 'valid' U-Net."""
    image = golden.images[0]
    crop = (manifest.input_size - manifest.output_size) // 2
    if crop:
        image = image[crop : crop + manifest.output_size, crop : crop + manifest.output_size]
    if np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return image[..., 0] if image.shape[-1] == 1 else image


def _check_name(name: str | None) -> None:
    """The zoo's rule for a model's name, checked before any work."""
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    if name is not None and (not 5 <= len(name) <= 128 or not set(name) <= allowed):
        raise UserError(
            f"--name {name!r}: bioimage.io takes 5-128 letters, digits, spaces and _+-() only"
        )


def check_out(out: Path, overwrite: bool, flag: str = "--out") -> None:
    """The package path, checked before any work: a .zip, not there unless `overwrite`."""
    if out.suffix.lower() != ".zip":
        raise UserError(f"{flag} {out} must end in .zip: a bioimage.io package is a zip file")
    if out.is_dir():
        raise UserError(f"{flag} {out} is a folder: give a .zip file name")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists: pass --overwrite or choose another {flag}")


def write_package(bundle: Path, out: Path, options: Options, overwrite: bool = False) -> Written:
    """Writes the package zip atomically (a temporary file, then os.replace)."""
    _check_name(options.name)
    check_out(out, overwrite)
    files, chosen = package_files(bundle, options)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return Written(out, chosen.precision, chosen.tolerance, out.stat().st_size, tuple(files))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m optimize.bioimageio",
        description="Write a bundle as a bioimage.io model package (rdf.yaml 0.5, ONNX weights, "
        "test tensors from the golden tiles) for Fiji/deepImageJ, ilastik, napari and QuPath.",
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (optimize.quantize's --out)")
    parser.add_argument("--out", type=Path, required=True, help="the package, a .zip file")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="which ONNX model (default: the gated int8 one when its tolerance holds, else fp32)",
    )
    parser.add_argument(
        "--binarize",
        action="store_true",
        help="output the mask (0/1 at the manifest's threshold) instead of probabilities "
        "(default: probabilities)",
    )
    parser.add_argument("--name", help="the model's name (default: from padding, depth, precision)")
    parser.add_argument(
        "--author",
        action="append",
        help="an author's name; repeat for several (default: unet-edge)",
    )
    parser.add_argument("--license", default="CC-BY-4.0", help="SPDX id (default: CC-BY-4.0)")
    parser.add_argument("--tag", action="append", default=[], help="an extra tag; repeatable")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_verbosity(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    configure(args)
    options = Options(
        precision=args.precision,
        binarize=args.binarize,
        name=args.name,
        authors=tuple(args.author or ("unet-edge",)),
        license=args.license,
        tags=tuple(args.tag),
    )
    try:
        written = write_package(args.bundle, args.out, options, overwrite=args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(
            f"error: cannot write {args.out} ({error.strerror}): choose another --out",
            file=sys.stderr,
        )
        return 2
    t = written.tolerance
    print(
        f"{written.path}: {written.precision} ONNX, {written.size / 1e6:.2f} MB; tolerance "
        f"absolute {t.absolute:g}, {t.mismatched_per_million:g} mismatched per million"
    )
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
