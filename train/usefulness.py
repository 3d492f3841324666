"""Is a model better than a trivial one? Training's closing line and the int8 gate ask this.

Two trivial segmenters set the floor on the validation images:
- marking every pixel foreground: Dice 2f / (1 + f) for a foreground share f;
- one global intensity threshold (the best of any level, either polarity): a model that does no
  better learned nothing that a threshold would not have given.
Below MIN_USEFUL_DICE a model is useless whatever the task: Dice = 2PR / (P + R) < 0.1 means
precision or recall is under 0.1 / 1.9, so at least 95% of its marked pixels are wrong or it
misses at least 95% of the labelled ones. The int8 gate refuses only under that floor or the
all-foreground one; training also names the threshold baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

MIN_USEFUL_DICE = 0.1
# Threshold levels: normalized images lie within a few training stds of 0; beyond +-8 they
# are clipped (one level takes all of them).
_LEVELS, _RANGE = 512, 8.0
_EDGES = np.linspace(-_RANGE, _RANGE, _LEVELS + 1)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The trivial segmenters' Dice on the same images, and how much foreground the labels hold."""

    foreground_share: float
    all_foreground_dice: float
    threshold_dice: float | None  # None: not measured (several classes)

    @property
    def floor(self) -> float:
        """Under it a model is useless: what the int8 gate refuses."""
        return max(self.all_foreground_dice, MIN_USEFUL_DICE)

    def to_dict(self) -> dict[str, float | None]:
        return {**dataclasses.asdict(self), "floor": self.floor}


def all_foreground_dice(share: float) -> float:
    return 2.0 * share / (1.0 + share)


def _histograms(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of all and of foreground pixels of a normalized image over fixed levels."""
    grey = np.clip(np.asarray(image, np.float32).mean(axis=-1), -_RANGE, _RANGE)
    return np.histogram(grey, _EDGES)[0], np.histogram(grey[np.asarray(mask) > 0], _EDGES)[0]


def best_threshold_dice(every: np.ndarray, fore: np.ndarray) -> float:
    """The best pooled Dice of one global threshold, bright or dark side, from the histograms
    of all and of foreground pixels: every level at once."""
    true = int(fore.sum())
    if true == 0:
        return 0.0
    best = 0.0
    for predicted, hits in (  # pixels at or above each level, then at or below it
        (np.cumsum(every[::-1]), np.cumsum(fore[::-1])),
        (np.cumsum(every), np.cumsum(fore)),
    ):
        best = max(best, float(np.max(2.0 * hits / (predicted + true))))
    return best


def baseline(pairs: Iterable[tuple[np.ndarray, np.ndarray]], classes: int) -> Baseline:
    """The trivial segmenters on (normalized image (H, W, C), class-index mask) pairs, one
    pair in memory at a time."""
    every = np.zeros(_LEVELS, np.int64)
    fore = np.zeros(_LEVELS, np.int64)
    for image, mask in pairs:
        all_pixels, foreground = _histograms(image, mask)
        every += all_pixels
        fore += foreground
    share = float(fore.sum() / max(every.sum(), 1))
    threshold = round(best_threshold_dice(every, fore), 4) if classes == 1 else None
    return Baseline(round(share, 6), round(all_foreground_dice(share), 4), threshold)


def verdict(
    dice: float, predicted_foreground: int, base: Baseline, against_threshold: bool = True
) -> str | None:
    """One line when the model is no better than a trivial one (with `against_threshold`, the
    threshold baseline counts too), or the labels cannot tell; None when it is better."""
    if base.foreground_share == 0:
        return (
            "the validation labels hold no foreground, so their Dice cannot tell a useful model "
            "from a useless one: put images with objects among the last --val-fraction"
        )
    if predicted_foreground == 0:
        return (
            f"the model finds no foreground on the validation images, where the labels cover "
            f"{base.foreground_share:.2%} of the pixels"
        )
    floor = base.floor
    if against_threshold and base.threshold_dice is not None:
        floor = max(floor, base.threshold_dice)
    if dice > floor:
        return None
    trivial = f"marking every pixel scores {base.all_foreground_dice:.4f}"
    if base.threshold_dice is not None:
        trivial += f", one global intensity threshold {base.threshold_dice:.4f}"
    return (
        f"the model is no better than a trivial one: Dice {dice:.4f} on the validation images, "
        f"where {trivial} (and below {MIN_USEFUL_DICE} at least 95% of the marked pixels are "
        "wrong or 95% of the labelled ones missed)"
    )
