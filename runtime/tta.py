"""Test-time augmentation: the model's probabilities averaged over flipped and rotated views.

`flips` averages the 4 flips (none, vertical, horizontal, both), `d4` the 8 symmetries of the
square (those 4, of the image and of its transpose), as the U-Net paper did on ISBI 2012 with
rotations. A membrane or an organelle has no preferred orientation, so each view is as good a
guess; their mean is a better one than any (the issue's organelle data: d4 +0.0045 Dice).

A view is mapped back before averaging, so the result is aligned with the input. The views
of one orientation have the same shape and run as one batch when `together` (the memory
budget allows it), else one after another.

With `spread` the views' disagreement comes along as one more channel: per pixel, the standard
deviation of the views' probabilities (the mean over the classes' channels). A model that
finds an image strange often disagrees with itself across views where it would not on the
images it was trained on; `runtime.quality` judges its mean against the held-out tiles'.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.errors import UserError

Predict = Callable[[np.ndarray], np.ndarray]

# Axes of an (N, H, W, C) batch each view flips: every one is its own inverse.
FLIPS: tuple[tuple[int, ...], ...] = ((), (1,), (2,), (1, 2))
# Kind -> the orientations whose 4 flips it averages (True: the transposed image).
ORIENTATIONS: dict[str, tuple[bool, ...]] = {"none": (), "flips": (False,), "d4": (False, True)}
TTA_KINDS = tuple(ORIENTATIONS)


def check_tta(kind: str) -> None:
    if kind not in TTA_KINDS:
        raise UserError(f"unknown tta {kind!r}: choose one of {', '.join(TTA_KINDS)}")


def view_count(kind: str) -> int:
    return len(FLIPS) * len(ORIENTATIONS[kind]) or 1


def _transposed(batch: np.ndarray) -> np.ndarray:
    return batch.transpose(0, 2, 1, 3)


def _flipped(batch: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(batch, axes) if axes else batch


def augmented(predict: Predict, kind: str, together: bool, spread: bool = False) -> Predict:
    """`predict` averaged over the views of `kind` ("none" returns it unchanged).

    Args:
        predict: maps an (N, H, W, C) batch to (N, h, w, K) probabilities.
        together: run the 4 views of each orientation as one batch of 4N.
        spread: append the views' disagreement as channel K (see the module's docstring).
    """
    check_tta(kind)
    if kind == "none":
        return predict
    orientations = ORIENTATIONS[kind]

    def run_views(batch: np.ndarray) -> list[np.ndarray]:
        views = [np.ascontiguousarray(_flipped(batch, axes)) for axes in FLIPS]
        if together:
            return np.split(predict(np.concatenate(views)), len(FLIPS))
        return [predict(view) for view in views]

    def averaged(batch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        squares: np.ndarray | None = None
        for transposed in orientations:
            source = _transposed(batch) if transposed else batch
            for axes, output in zip(FLIPS, run_views(source), strict=True):
                back = _flipped(output, axes).astype(np.float32)
                back = _transposed(back) if transposed else back
                total = back if total is None else total + back
                if spread:
                    squares = np.square(back) if squares is None else squares + np.square(back)
        assert total is not None
        mean = total / view_count(kind)
        if squares is None:
            return mean
        variance = np.maximum(squares / view_count(kind) - np.square(mean), 0.0)
        return np.concatenate([mean, np.sqrt(variance).mean(axis=-1, keepdims=True)], axis=-1)

    return averaged
