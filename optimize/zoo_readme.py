"""The README.md of a bioimage.io package (`optimize.bioimageio`), generated from the manifest.

It is the package's `documentation`: what the model is, what it was trained on, what the parity
gate and the golden tiles measured, and which files ride along. Kept apart from the packager so
that the package logic stays small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.preprocess import Normalization, Preprocessing

if TYPE_CHECKING:
    from runtime.bundle import Manifest


def _data_line(configs: dict[str, Any]) -> str:
    data = configs.get("data", {})
    train = configs.get("train", {})
    source = data.get("source", "unknown")
    what = {
        "synthetic": "the toolkit's synthetic EM-like images (Voronoi cells with dark membranes)",
        "synthetic-defects": "the toolkit's synthetic surface defects (scratches, pits, cracks)",
    }.get(source, f"the image/label folder `{source}`")
    crop = train.get("input_size", "?")
    return (
        f"Trained on {what}, {crop} px crops, {train.get('epochs', '?')} epochs; the last "
        f"{data.get('val_fraction', 0.2):g} of the images held out."
    )


def _parity_rows(raw: dict[str, Any]) -> list[str]:
    models = raw.get("parity", {}).get("models", {})
    rows = [
        "| model | agreement with float | Dice vs float | Dice vs labels | max prob. error |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in models.items():
        rows.append(
            f"| {name} | {m.get('agreement_with_float', 0):.2%} | {m.get('dice_vs_float', 0):.4f} "
            f"| {m.get('dice_vs_truth', 0):.4f} | {m.get('max_abs_error', 0):.3g} |"
        )
    return rows if len(rows) > 2 else ["(the bundle has no parity section)"]


def _golden_rows(raw: dict[str, Any]) -> list[str]:
    golden = raw.get("golden", {})
    rows = ["| file | engine | agreement with float | Dice vs float |", "| --- | --- | --- | --- |"]
    for file, f in golden.get("models", {}).items():
        rows.append(
            f"| {file} | {f['backend']} | {f['agreement_with_float']:.2%} | "
            f"{f['dice_vs_float']:.4f} |"
        )
    built = golden.get("built_on", {})
    cpu = built.get("model", "unknown CPU")
    return [f"Measured on {cpu} ({built.get('int8', '?')}):", "", *rows]


def model_depth(manifest: Manifest, raw: dict[str, Any]) -> int:
    """The U-Net's poolings, from its config (the size multiple also counts a patch stem)."""
    depth = raw.get("configs", {}).get("model", {}).get("depth")
    return int(depth) if depth else manifest.size_multiple.bit_length() - 1


def readme(
    manifest: Manifest,
    raw: dict[str, Any],
    precision: str,
    tolerance: str,
    files: list[str],
    binarize: bool,
) -> str:
    configs = raw.get("configs", {})
    model = configs.get("model", {})
    padding = raw["input"].get("padding", "same")
    depth = model_depth(manifest, raw)
    prep = manifest.preprocessing
    tflite = [f for f in files if f.endswith(".tflite")]
    size_rule = (
        f"any height and width that is a multiple of {manifest.size_multiple} (its pooling grid)"
        if manifest.input_size == manifest.output_size
        else f"a fixed {manifest.input_size} px tile, giving the centre {manifest.output_size} px"
    )
    output = (
        f"the mask (1 where the {manifest.activation} probability > {manifest.threshold:g})"
        if binarize
        else f"{manifest.activation} probabilities, one channel per "
        f"{'foreground class' if manifest.classes == 1 else 'class'}"
    )
    lines = [
        f"# U-Net ({padding}, depth {depth}), {precision} ONNX",
        "",
        "A 2-D U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) for semantic segmentation, "
        "trained, compressed and exported by the unet-edge toolkit and packaged from its bundle "
        "with `python -m optimize.bioimageio`.",
        "",
        "## Model",
        "",
        f"- Architecture: base {model.get('base_filters', '?')} filters, depth {depth}, "
        f"{padding} padding, {model.get('upsampling', '?')} up-sampling, "
        f"{'batch norm' if model.get('batch_norm') else 'no batch norm'}.",
        f"- Input: {manifest.channels} channel(s), axes batch, y, x, channel; {size_rule}.",
        _preprocessing_line(prep),
        f"- Output: {output}. Classes: {', '.join(manifest.class_names)}.",
        f"- Weights: `{precision}` ONNX (opset 17). "
        + (
            "int8 is the model that passed the toolkit's parity gate (quantization-aware "
            "training when it ran)."
            if precision == "int8"
            else "float32, the reference."
        ),
        "",
        "## Training data",
        "",
        _data_line(configs),
        "",
        "## Parity gate (held-out tiles, against the float Keras model)",
        "",
        *_parity_rows(raw),
        "",
        "## Golden tiles (the package's test tensors)",
        "",
        *_golden_rows(raw),
        "",
        "## Validation",
        "",
        "The package passes bioimage.io's own test (`bioimageio test model.zip`): its ONNX model "
        "reproduces the test outputs from the test inputs, golden tiles of the bundle (held-out "
        "tiles the parity gate saw), within the tolerance below, and runs at the sizes the axes "
        "allow. The tables above are the toolkit's own validation of the model.",
        "",
        "### Reproducibility tolerance",
        "",
        tolerance,
        "",
        "## Attachments",
        "",
        *(
            [f"- `{f}`: TFLite model for LiteRT (edge devices)" for f in tflite]
            or ["- (no TFLite models)"]
        ),
        "- `unet_edge_manifest.json`: the bundle's manifest (configs, versions, parity).",
        "",
        "## Use",
        "",
        "Fiji (deepImageJ), ilastik and napari (bioimageio.core) open the zip as it is; QuPath's "
        "extension reads ONNX weights in builds from source. "
        "On a device without PyTorch or TensorFlow: `python -m runtime.predict model.zip "
        "IMAGE --out DIR --verify` (unet-edge's runtime, numpy and onnxruntime only).",
        "",
    ]
    return "\n".join(lines)


def _preprocessing_line(prep: Preprocessing) -> str:
    if prep.normalization is Normalization.IMAGE:
        return (
            "- Pre-processing: each image's own mean and std per channel over the whole image "
            "(one `zero_mean_unit_variance` over y and x on raw pixel values)."
        )
    return (
        f"- Pre-processing: pixels divided by their dtype's range, then (x - {prep.mean:g}) / "
        f"{prep.std:g}, the training set's mean and std (one `fixed_zero_mean_unit_variance` "
        "on raw pixel values)."
    )
