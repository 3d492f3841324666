"""Segmentation metrics in numpy: the parity gate, the reports and a device all use these."""

from __future__ import annotations

import dataclasses

import numpy as np

from runtime.errors import UserError


@dataclasses.dataclass(frozen=True)
class Scores:
    """A model's masks against the float model's and against the labels: what the parity gate
    records per model (`optimize.parity`) and the benchmark report per variant and image. None:
    not measured (the float model's own scores have only the `_vs_truth` ones)."""

    agreement_with_float: float | None = None  # share of pixels of the float model's class
    dice_vs_float: float | None = None
    iou_vs_float: float | None = None
    dice_vs_truth: float | None = None
    iou_vs_truth: float | None = None
    accuracy_vs_truth: float | None = None
    max_abs_error: float | None = None  # of the probabilities against float's
    mean_abs_error: float | None = None
    dice_drop: float | None = None  # float's Dice vs truth minus this one's


def _foreground_classes(classes: int) -> range:
    """Class 1 for a one-channel (sigmoid) model, else every class but background 0."""
    return range(1, 2) if classes == 1 else range(1, classes)


def overlap_counts(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> tuple[int, int, int]:
    """True positives, predicted and true pixel counts, summed over the foreground classes."""
    tp = pred_count = true_count = 0
    for c in _foreground_classes(classes):
        p, t = pred == c, true == c
        tp += int(np.count_nonzero(p & t))
        pred_count += int(np.count_nonzero(p))
        true_count += int(np.count_nonzero(t))
    return tp, pred_count, true_count


def dice(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> float:
    """Dice of the foreground; 1.0 when both masks are empty (they agree perfectly)."""
    return dice_of_counts(*overlap_counts(np.asarray(pred), np.asarray(true), classes))


def dice_of_counts(tp: int, predicted: int, true: int) -> float:
    """Dice from `overlap_counts` (summed over images: a pooled Dice)."""
    return 1.0 if predicted + true == 0 else 2.0 * tp / (predicted + true)


def iou(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> float:
    """Intersection over union of the foreground; 1.0 when both masks are empty."""
    tp, p, t = overlap_counts(np.asarray(pred), np.asarray(true), classes)
    union = p + t - tp
    return 1.0 if union == 0 else tp / union


def pixel_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of pixels whose class agrees."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    return float(np.mean(pred == true))


def probability_error(probs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max and mean absolute difference of two probability maps."""
    diff = np.abs(np.asarray(probs, np.float64) - np.asarray(reference, np.float64))
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean())}


def segmentation_scores(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> dict[str, float]:
    """Pixel accuracy, Dice and IoU of a predicted mask against a reference mask."""
    return {
        "pixel_accuracy": pixel_accuracy(pred, true),
        "dice": dice(pred, true, classes),
        "iou": iou(pred, true, classes),
    }


def float_parity(masks: np.ndarray, float_masks: np.ndarray, classes: int) -> dict[str, float]:
    """How far a model's masks are from the float model's: the parity gate and a device's
    verification (`runtime.verify`) both judge by these."""
    return {
        "agreement_with_float": pixel_accuracy(masks, float_masks),
        "dice_vs_float": dice(masks, float_masks, classes),
        "iou_vs_float": iou(masks, float_masks, classes),
    }


def check_threshold(threshold: float | None) -> None:
    """A sigmoid threshold must lie strictly between 0 and 1: at 0 or above 1 every pixel is
    one class, whatever the model says."""
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise UserError(
            f"threshold {threshold:g} is outside (0, 1): give a probability such as 0.5"
        )


def masks_from_probabilities(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class-index mask from (..., 1) sigmoid probabilities (threshold) or (..., K) softmax."""
    probs = np.asarray(probs)
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= threshold).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)
