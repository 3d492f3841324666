"""The parity gate: every exported model against the float Keras model, on held-out tiles.

Each model runs in the runtime's own backend (what a device runs), on the validation tiles of
the run, and is compared with the float model's masks and, where labels exist, ground truth.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import BACKENDS
from runtime.metrics import dice, iou, masks_from_probabilities, pixel_accuracy, probability_error
from train.tfk import keras


class ParityGateFailed(RuntimeError):
    """An int8 model lost more Dice than allowed; the message names it and the numbers."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float model's output on the held-out tiles, and their labels."""

    tiles: np.ndarray
    labels: np.ndarray  # (N, h, w) class indices
    probabilities: np.ndarray
    classes: int

    @classmethod
    def of(
        cls, model: keras.Model, tiles: np.ndarray, labels: np.ndarray, classes: int
    ) -> Reference:
        probs = np.concatenate(
            [model(tiles[i : i + 8], training=False).numpy() for i in range(0, len(tiles), 8)]
        )
        return cls(tiles, labels[..., 0] if labels.ndim == 4 else labels, probs, classes)

    @property
    def masks(self) -> np.ndarray:
        return masks_from_probabilities(self.probabilities)

    def truth_scores(self, masks: np.ndarray) -> dict[str, float]:
        return {
            "dice_vs_truth": dice(masks, self.labels, self.classes),
            "iou_vs_truth": iou(masks, self.labels, self.classes),
            "accuracy_vs_truth": pixel_accuracy(masks, self.labels),
        }


def compare(reference: Reference, probabilities: np.ndarray) -> dict[str, float]:
    """Agreement with the float model and accuracy against the labels."""
    masks = masks_from_probabilities(probabilities)
    float_masks = reference.masks
    scores = {
        "agreement_with_float": pixel_accuracy(masks, float_masks),
        "dice_vs_float": dice(masks, float_masks, reference.classes),
        "iou_vs_float": iou(masks, float_masks, reference.classes),
        **reference.truth_scores(masks),
        **probability_error(probabilities, reference.probabilities),
    }
    scores["dice_drop"] = (
        reference.truth_scores(float_masks)["dice_vs_truth"] - scores["dice_vs_truth"]
    )
    return scores


def run_exported(path: Path, fmt: str, tiles: np.ndarray) -> np.ndarray:
    """Probabilities of an exported model file, run by the runtime's backend for its format."""
    loader = next(load for name, (f, load) in BACKENDS.items() if f == fmt)
    return loader(path, None).run(tiles)


def parity_report(
    reference: Reference,
    files: dict[str, tuple[Path, str]],
    pairs: tuple[tuple[str, str], ...] = (("int8-onnx", "int8"),),
) -> dict[str, Any]:
    """`files`: bundle key -> (path, format). Returns float's own scores, each model's, and the
    mask agreement of the `pairs` of exported models with each other (ONNX and TFLite int8)."""
    report: dict[str, Any] = {
        "float": reference.truth_scores(reference.masks),
        "models": {},
        "pairs": {},
    }
    masks = {}
    for key, (path, fmt) in files.items():
        probabilities = run_exported(path, fmt, reference.tiles)
        report["models"][key] = compare(reference, probabilities)
        masks[key] = masks_from_probabilities(probabilities)
    for a, b in pairs:
        if a in masks and b in masks:
            report["pairs"][f"{a} vs {b}"] = pixel_accuracy(masks[a], masks[b])
    return report


def check_gate(report: dict[str, Any], gated: list[str], max_dice_drop: float) -> None:
    """Raises ParityGateFailed naming every gated model whose Dice drop exceeds the limit."""
    failures = [
        f"{key} loses {scores['dice_drop']:.4f} Dice against the labels (float "
        f"{report['float']['dice_vs_truth']:.4f}, {key} {scores['dice_vs_truth']:.4f}; "
        f"agreement with float {scores['agreement_with_float']:.4f})"
        for key, scores in report["models"].items()
        if key in gated and scores["dice_drop"] > max_dice_drop
    ]
    if failures:
        raise ParityGateFailed(
            f"parity gate failed (--max-dice-drop {max_dice_drop}): " + "; ".join(failures)
        )
