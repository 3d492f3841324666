"""Losses follow the head; the Keras metrics agree with the numpy ones devices use."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.metrics import dice, iou, masks_from_probabilities
from train.config import Loss
from train.losses import DiceScore, IoUScore, make_loss


def test_a_loss_that_does_not_match_the_head_is_refused():
    with pytest.raises(UserError, match="sigmoid head"):
        make_loss(Loss.BCE_DICE, classes=3)
    with pytest.raises(UserError, match="softmax head"):
        make_loss(Loss.CE_DICE, classes=1)


MATCHING = [
    (loss, c)
    for c in (1, 3)
    for loss in Loss
    if loss is not (Loss.CE_DICE if c == 1 else Loss.BCE_DICE)
]


@pytest.mark.parametrize("loss, classes", MATCHING)
def test_losses_are_low_for_right_and_high_for_wrong_predictions(loss, classes):
    fn = make_loss(loss, classes)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, max(classes, 2), (2, 8, 8, 1))
    if classes == 1:
        right = labels.astype(np.float32) * 0.98 + 0.01
        wrong = 1.0 - right
    else:
        right = np.eye(classes, dtype=np.float32)[labels[..., 0]] * 0.97 + 0.01
        wrong = np.roll(right, 1, axis=-1)
    low, high = float(np.mean(fn(labels, right))), float(np.mean(fn(labels, wrong)))
    assert np.isfinite(low) and low < 0.2 < high


@pytest.mark.parametrize("classes", [1, 3])
def test_keras_dice_and_iou_equal_the_numpy_metrics(classes):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, max(classes, 2), (3, 16, 16, 1))
    probs = rng.random((3, 16, 16, classes)).astype(np.float32)
    if classes > 1:
        probs /= probs.sum(-1, keepdims=True)
    dice_metric, iou_metric = DiceScore(classes), IoUScore(classes)
    for i in range(3):  # accumulated over batches, as over an epoch
        dice_metric.update_state(labels[i : i + 1], probs[i : i + 1])
        iou_metric.update_state(labels[i : i + 1], probs[i : i + 1])
    masks = masks_from_probabilities(probs)
    assert float(dice_metric.result()) == pytest.approx(
        dice(masks, labels[..., 0], classes), abs=1e-6
    )
    assert float(iou_metric.result()) == pytest.approx(
        iou(masks, labels[..., 0], classes), abs=1e-6
    )
