"""The parity gate: every exported model against the float Keras model, on held-out tiles.

Each model runs in the runtime's own backend (what a device runs), on the validation tiles of
the run, and is compared with the float model's masks and, where labels exist, ground truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optimize.bundle import BUNDLE_FILES
from optimize.configs import ParityGateFailed
from runtime.backends import BACKENDS, backend_for
from runtime.cpu import cpu_info
from runtime.golden import GOLDEN_FILE, Golden, golden_count, measure
from runtime.metrics import (
    Scores,
    dice,
    float_parity,
    iou,
    masks_from_probabilities,
    pixel_accuracy,
    probability_error,
)
from runtime.preprocess import Preprocessing
from runtime.typed_json import JsonRecord, json_name
from train.tfk import keras


def predicted(model: keras.Model, tiles: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities of (N, H, W, C) tiles, 8 at a time."""
    return np.concatenate(
        [model(tiles[i : i + 8], training=False).numpy() for i in range(0, len(tiles), 8)]
    )


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float model's output on the held-out tiles, and their labels."""

    tiles: np.ndarray
    labels: np.ndarray  # (N, h, w) class indices
    probabilities: np.ndarray
    classes: int
    threshold: float = 0.5  # the bundle's sigmoid threshold: every mask here is made with it

    @classmethod
    def of(
        cls,
        model: keras.Model,
        tiles: np.ndarray,
        labels: np.ndarray,
        classes: int,
        threshold: float = 0.5,
    ) -> Reference:
        probs = predicted(model, tiles)
        return cls(tiles, labels[..., 0] if labels.ndim == 4 else labels, probs, classes, threshold)

    def masks_of(self, probabilities: np.ndarray) -> np.ndarray:
        return masks_from_probabilities(probabilities, self.threshold)

    # Computed once: every model's comparison reads both (a frozen dataclass keeps a
    # cached_property in its instance dict).
    @functools.cached_property
    def masks(self) -> np.ndarray:
        return self.masks_of(self.probabilities)

    @functools.cached_property
    def float_scores(self) -> Scores:
        """The float model's own scores against the labels."""
        return self.truth_scores(self.masks)

    def truth_scores(self, masks: np.ndarray) -> Scores:
        return Scores(
            dice_vs_truth=dice(masks, self.labels, self.classes),
            iou_vs_truth=iou(masks, self.labels, self.classes),
            accuracy_vs_truth=pixel_accuracy(masks, self.labels),
        )


def compare(
    reference: Reference, probabilities: np.ndarray, threshold: float | None = None
) -> Scores:
    """Agreement with the float model and accuracy against the labels; the masks at
    `threshold` when given (a bundle that calibrated its own), else at the reference's."""
    masks = masks_from_probabilities(
        probabilities, reference.threshold if threshold is None else threshold
    )
    truth = reference.truth_scores(masks)
    return dataclasses.replace(
        truth,
        **float_parity(masks, reference.masks, reference.classes),
        **probability_error(probabilities, reference.probabilities),
        dice_drop=reference.float_scores.dice_vs_truth - truth.dice_vs_truth,
    )


@dataclasses.dataclass(frozen=True)
class ParityReport(JsonRecord):
    """What the gate measured, as the manifest's `parity` section keeps it.

    `float_model` (JSON `float`) is the float model's own scores against the labels; `models`
    each export's (bundle key -> scores); `pairs` the mask agreement of two exports with each
    other ("int8-onnx vs int8"). `optimize.quantize` adds what QAT started from: the float
    model's sparsity and whether it was clustered.
    """

    JSON_NAME = "parity"

    float_model: Scores = dataclasses.field(metadata=json_name("float"))
    models: Mapping[str, Scores]
    pairs: Mapping[str, float]
    float_sparsity: float | None = None
    float_clustered: bool | None = None


@contextlib.contextmanager
def written(exports: dict[str, bytes]) -> Iterator[dict[str, tuple[Path, str]]]:
    """The exported models as files in a scratch folder: bundle key -> (path, format)."""
    with tempfile.TemporaryDirectory() as scratch:
        paths = {}
        for key, data in exports.items():
            name, fmt = BUNDLE_FILES[key]
            (Path(scratch) / name).write_bytes(data)
            paths[key] = (Path(scratch) / name, fmt)
        yield paths


def run_exported(path: Path, fmt: str, tiles: np.ndarray) -> np.ndarray:
    """Probabilities of an exported model file, run by the runtime's backend for its format,
    tile by tile: all held-out tiles as one batch would need gigabytes."""
    backend = BACKENDS[backend_for(fmt)][1](path, None)
    outputs = [backend.run(tile[None]) for tile in tiles]
    shapes = {out.shape for out in outputs}
    if any(len(shape) != 4 for shape in shapes):  # tf2onnx once made 5-D ones: optimize/export.py
        raise RuntimeError(
            f"{path.name} ({fmt}) gave outputs of shape {sorted(shapes)} for "
            f"tiles of shape {tiles[0].shape}: (1, h, w, K) expected"
        )
    return np.concatenate(outputs)


def parity_report(
    reference: Reference,
    files: dict[str, tuple[Path, str]],
    pairs: tuple[tuple[str, str], ...] = (("int8-onnx", "int8"),),
) -> ParityReport:
    """`files`: bundle key -> (path, format). Float's own scores, each model's, and the mask
    agreement of the `pairs` of exported models with each other (ONNX and TFLite int8)."""
    models, masks = {}, {}
    for key, (path, fmt) in files.items():
        probabilities = run_exported(path, fmt, reference.tiles)
        models[key] = compare(reference, probabilities)
        masks[key] = reference.masks_of(probabilities)
    agreement = {
        f"{a} vs {b}": pixel_accuracy(masks[a], masks[b])
        for a, b in pairs
        if a in masks and b in masks
    }
    return ParityReport(reference.float_scores, models, agreement)


def check_gate(report: ParityReport, gated: list[str], max_dice_drop: float) -> None:
    """Raises ParityGateFailed naming every gated model whose Dice drop exceeds the limit."""
    failures = [
        f"{key} loses {scores.dice_drop:.4f} Dice against the labels (float "
        f"{report.float_model.dice_vs_truth:.4f}, {key} {scores.dice_vs_truth:.4f}; "
        f"agreement with float {scores.agreement_with_float:.4f})"
        for key, scores in report.models.items()
        if key in gated and scores.dice_drop > max_dice_drop
    ]
    if failures:
        raise ParityGateFailed(
            f"parity gate failed (--max-dice-drop {max_dice_drop}): " + "; ".join(failures)
        )


def golden_section(
    reference: Reference,
    raw_tiles: np.ndarray,
    paths: dict[str, tuple[Path, str]],
    report: ParityReport,
    preprocessing: Preprocessing,
    max_dice_drop: float,
) -> tuple[bytes, dict[str, Any]]:
    """The bundle's golden tiles and the manifest's `golden` section.

    A few held-out tiles, evenly spread, with the float model's outputs; every model is scored
    on them here with `runtime.golden.measure`, the function a device runs to compare.

    Args:
        raw_tiles: the held-out tiles as raw pixels, in the order of `reference.tiles`.
        paths: bundle key -> (model file, format), as for `parity_report`.
        report: the parity report, for each model's Dice loss at the gate.
    """
    count = golden_count(raw_tiles.shape[1], len(raw_tiles))
    chosen = np.linspace(0, len(raw_tiles) - 1, count).round().astype(int)
    golden = Golden.of(raw_tiles[chosen], reference.probabilities[chosen], reference.masks[chosen])
    models = {}
    for key, (path, fmt) in paths.items():
        name = backend_for(fmt)
        model = BACKENDS[name][1](path, None)
        scores = measure(model, golden, preprocessing, reference.classes, reference.threshold)
        models[path.name] = {
            "backend": name,
            "agreement_with_float": scores["agreement_with_float"],
            "dice_vs_float": scores["dice_vs_float"],
            "ms_per_tile": scores["ms_per_tile"],
            "gate_dice_drop": report.models[key].dice_drop,
        }
    data = golden.to_bytes()
    section = {
        "file": GOLDEN_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "tiles": count,
        "max_dice_drop": max_dice_drop,
        "built_on": cpu_info(),
        "models": models,
    }
    return data, section
