"""The sigmoid threshold a bundle uses: the one that gives the float model its best Dice on the
validation images at full size.

0.5 is where a model trained with cross-entropy puts the boundary on average, not where its
Dice is best: published mitochondria results tune it (pytorch_connectomics' Lucchi benchmark
gains about 0.02 IoU at 0.8). The search stays within `CANDIDATES` and keeps 0.5 unless
another value beats it by more than `TIE`: a few validation images should not move the
threshold on noise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from runtime.metrics import dice_of_counts, masks_from_probabilities, overlap_counts
from runtime.typed_json import JsonRecord

log = logging.getLogger(__name__)

CANDIDATES = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # 0.20 ... 0.80
DEFAULT = 0.5
TIE = 5e-4  # Dice: values within this of the best count as equal; the one nearest 0.5 wins


@dataclasses.dataclass(frozen=True)
class ThresholdChoice(JsonRecord):
    """The chosen threshold and the float model's Dice at it and at 0.5 (the manifest's
    `postprocessing.calibration`)."""

    JSON_NAME = "calibration"

    threshold: float
    dice: float
    dice_at_default: float
    images: int  # validation images, scored at full size
    candidates: tuple[float, ...] = CANDIDATES

    def describe(self) -> str:
        return (
            f"threshold {self.threshold:g}: float Dice {self.dice:.4f} on the {self.images} "
            f"validation images at full size ({self.dice_at_default:.4f} at {DEFAULT:g})"
        )


def _counts(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`overlap_counts` of the masks the runtime would make at each candidate threshold."""
    return np.asarray(
        [overlap_counts(masks_from_probabilities(probabilities, t), truth) for t in CANDIDATES],
        np.int64,
    )


def choose_threshold(images: Iterable[tuple[np.ndarray, np.ndarray]]) -> ThresholdChoice:
    """The threshold with the best Dice over all images' pixels together.

    Args:
        images: (probabilities (H, W, 1), class-index truth (H, W)) of each validation image,
            one at a time: only the counts are kept.
    """
    counts, seen = np.zeros((len(CANDIDATES), 3), np.int64), 0
    for probabilities, truth in images:
        counts += _counts(probabilities, truth)
        seen += 1
    if not seen:
        raise ValueError("no validation images to calibrate the threshold on")
    scores = [dice_of_counts(*row) for row in counts.tolist()]
    near_best = [i for i, s in enumerate(scores) if s >= max(scores) - TIE]
    chosen = min(near_best, key=lambda i: abs(CANDIDATES[i] - DEFAULT))
    return ThresholdChoice(
        threshold=CANDIDATES[chosen],
        dice=float(scores[chosen]),
        dice_at_default=float(scores[CANDIDATES.index(DEFAULT)]),
        images=seen,
    )


def calibrated_threshold(model: Any, run: Any) -> ThresholdChoice | None:
    """The float Keras `model`'s threshold on the validation images of `run`
    (`optimize.finetune.Run`); None for a softmax model, whose decision is the argmax."""
    from train.trainer import full_image_probabilities

    if run.model_config.classes != 1:
        return None
    images = full_image_probabilities(
        model, run.splits[1], run.preprocessing, run.model_config, run.tile_size
    )
    choice = choose_threshold((probs, sample.mask) for sample, probs in images)
    log.info("calibrated %s", choice.describe())
    return choice


def threshold_of(choice: ThresholdChoice | None) -> float:
    return choice.threshold if choice else DEFAULT
