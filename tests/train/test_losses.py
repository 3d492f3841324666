"""Losses follow the head; the Keras metrics agree with the numpy ones devices use."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.metrics import dice, iou, masks_from_probabilities
from train.config import Loss
from train.losses import DiceScore, IoUScore, distilled, make_loss


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


def _batch_overlap(labels: np.ndarray, probs: np.ndarray, misses: float) -> float:
    """The batch Dice (misses 0.5) or Tversky loss counted by hand over the whole batch."""
    t, p = labels.astype(np.float64), probs.astype(np.float64)
    hits, missed, false = (t * p).sum(), (t * (1 - p)).sum(), ((1 - t) * p).sum()
    return 1 - (hits + 1) / (hits + misses * missed + (1 - misses) * false + 1)


@pytest.mark.parametrize("loss, misses", [(Loss.BATCH_DICE, 0.5), (Loss.TVERSKY, 0.7)])
def test_batch_losses_are_cross_entropy_plus_an_overlap_over_the_whole_batch(loss, misses):
    rng = np.random.default_rng(3)
    labels = (rng.random((3, 8, 8, 1)) < 0.05).astype(np.int64)
    labels[0] = (
        0  # a crop without foreground: it adds to the batch's counts, not a 0 or 1 of its own
    )
    probs = rng.uniform(0.05, 0.95, (3, 8, 8, 1)).astype(np.float32)
    cross_entropy = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean(
        axis=(1, 2, 3)
    )
    expected = cross_entropy + _batch_overlap(labels[..., 0], probs[..., 0], misses)
    np.testing.assert_allclose(make_loss(loss, 1)(labels, probs).numpy(), expected, rtol=1e-4)


def test_tversky_weighs_a_missed_pixel_more_than_a_false_alarm():
    labels = np.zeros((1, 4, 4, 1), np.int64)
    labels[0, :2] = 1
    missed, false = labels.astype(np.float32) * 0.9 + 0.05, labels.astype(np.float32) * 0.9 + 0.05
    missed[0, 0, 0], false[0, 3, 3] = 0.05, 0.95  # one pixel wrong each way
    tversky = make_loss(Loss.TVERSKY, 1)
    assert float(tversky(labels, missed)[0]) > float(tversky(labels, false)[0])


def _kl_by_hand(teacher: np.ndarray, probs: np.ndarray) -> np.ndarray:
    t, p = teacher.astype(np.float64), probs.astype(np.float64)
    pixel = t * np.log(t / p) + (1 - t) * np.log((1 - t) / (1 - p))
    return pixel.mean(axis=(1, 2, 3))


def test_distillation_adds_the_divergence_from_the_teacher_to_the_label_loss():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (2, 6, 6, 1)).astype(np.float32)
    teacher = rng.uniform(0.05, 0.95, (2, 6, 6, 1)).astype(np.float32)
    probs = rng.uniform(0.05, 0.95, (2, 6, 6, 1)).astype(np.float32)
    targets = np.concatenate([labels, teacher], axis=-1)
    base = make_loss(Loss.BCE_DICE, 1)
    expected = base(labels, probs).numpy() + 0.5 * _kl_by_hand(teacher, probs)
    np.testing.assert_allclose(distilled(base, 1, 0.5)(targets, probs).numpy(), expected, rtol=1e-4)
    label_free = distilled(base, 1, 0.5, labels=False)
    np.testing.assert_allclose(
        label_free(targets, probs).numpy(), _kl_by_hand(teacher, probs), rtol=1e-4
    )
    assert np.allclose(label_free(targets, teacher).numpy(), 0.0, atol=1e-6)  # agreeing: 0


def test_distillation_of_a_softmax_head_is_the_categorical_divergence():
    rng = np.random.default_rng(5)
    teacher = rng.dirichlet([1, 1, 1], (1, 4, 4)).astype(np.float32)
    probs = rng.dirichlet([1, 1, 1], (1, 4, 4)).astype(np.float32)
    targets = np.concatenate([np.zeros((1, 4, 4, 1), np.float32), teacher], axis=-1)
    loss = distilled(make_loss(Loss.CE_DICE, 3), 3, 1.0, labels=False)
    expected = (teacher * np.log(teacher / probs)).sum(-1).mean()
    assert float(loss(targets, probs)[0]) == pytest.approx(expected, rel=1e-4)
