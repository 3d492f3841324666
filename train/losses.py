"""Losses and metrics that match the head: binary with sigmoid, categorical with softmax.

Labels are class-index masks (B, H, W, 1) for both heads; one-hot encoding happens here, so
the data pipeline does not depend on the head.
"""

from __future__ import annotations

from collections.abc import Callable

from train.config import Loss, resolve_loss
from train.tfk import keras, tf

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
_SMOOTH = 1.0


def _targets(y_true: tf.Tensor, classes: int) -> tf.Tensor:
    """Class-index labels as float targets shaped like the head's output."""
    labels = tf.cast(y_true[..., 0], tf.int32)
    if classes == 1:
        return tf.cast(labels, tf.float32)[..., None]
    return tf.one_hot(labels, classes, dtype=tf.float32)


def _soft_dice_loss(targets: tf.Tensor, probs: tf.Tensor, classes: int) -> tf.Tensor:
    """1 - soft Dice per image, averaged over the foreground channels (not the background)."""
    if classes > 1:
        targets, probs = targets[..., 1:], probs[..., 1:]
    intersection = tf.reduce_sum(targets * probs, axis=[1, 2])
    total = tf.reduce_sum(targets + probs, axis=[1, 2])
    dice = (2.0 * intersection + _SMOOTH) / (total + _SMOOTH)
    return 1.0 - tf.reduce_mean(dice, axis=-1)


def _batch_overlap_loss(
    targets: tf.Tensor, probs: tf.Tensor, classes: int, misses: float
) -> tf.Tensor:
    """1 - a soft overlap summed over the whole batch, averaged over the foreground channels.

    Summed over the batch, a crop without foreground adds its false alarms to the others'
    counts instead of scoring 0 or 1 on its own (what makes the per-image Dice unstable on rare
    objects). `misses` 0.5 is Dice; above it, a Tversky index that weighs a missed pixel more
    than a false alarm (Salehi et al., 2017: 0.7).
    """
    if classes > 1:
        targets, probs = targets[..., 1:], probs[..., 1:]
    axes = [0, 1, 2]
    hits = tf.reduce_sum(targets * probs, axis=axes)
    missed = tf.reduce_sum(targets * (1.0 - probs), axis=axes)
    false = tf.reduce_sum((1.0 - targets) * probs, axis=axes)
    index = (hits + _SMOOTH) / (hits + misses * missed + (1.0 - misses) * false + _SMOOTH)
    return 1.0 - tf.reduce_mean(index)


TVERSKY_MISSES = 0.7


def make_loss(loss: Loss, classes: int) -> LossFn:
    """The loss function for the head; a mismatch (bce_dice on softmax) is a UserError."""
    loss = resolve_loss(loss, classes)
    if loss is Loss.FOCAL:
        focal = (
            keras.losses.BinaryFocalCrossentropy(reduction="none")
            if classes == 1
            else keras.losses.CategoricalFocalCrossentropy(reduction="none")
        )
    cross_entropy = (
        keras.losses.BinaryCrossentropy(reduction="none")
        if classes == 1
        else keras.losses.CategoricalCrossentropy(reduction="none")
    )

    def loss_fn(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        targets = _targets(y_true, classes)
        probs = tf.cast(y_pred, tf.float32)
        if loss is Loss.FOCAL:
            return tf.reduce_mean(focal(targets, probs), axis=[1, 2])
        ce = tf.reduce_mean(cross_entropy(targets, probs), axis=[1, 2])
        if loss is Loss.BATCH_DICE:
            return ce + _batch_overlap_loss(targets, probs, classes, 0.5)
        if loss is Loss.TVERSKY:
            return ce + _batch_overlap_loss(targets, probs, classes, TVERSKY_MISSES)
        return ce + _soft_dice_loss(targets, probs, classes)

    loss_fn.__name__ = loss.value
    return loss_fn


_EPS = 1e-7


def _divergence(teacher: tf.Tensor, probs: tf.Tensor, classes: int) -> tf.Tensor:
    """KL(teacher || student) per pixel, averaged per image: 0 when they agree."""
    t = tf.clip_by_value(teacher, _EPS, 1.0 - _EPS)
    p = tf.clip_by_value(probs, _EPS, 1.0 - _EPS)
    if classes == 1:  # a sigmoid head: the Bernoulli of each pixel
        pixel = t * tf.math.log(t / p) + (1.0 - t) * tf.math.log((1.0 - t) / (1.0 - p))
        pixel = pixel[..., 0]
    else:
        pixel = tf.reduce_sum(t * tf.math.log(t / p), axis=-1)
    return tf.reduce_mean(pixel, axis=[1, 2])


def distilled(label_loss: LossFn, classes: int, weight: float, labels: bool = True) -> LossFn:
    """The label loss plus `weight` x KL(teacher || student), for targets (B, H, W, 1 + K):
    the class-index label in channel 0, the teacher's probabilities after it (what
    `optimize.finetune` feeds). Without `labels` the divergence alone (label-free)."""

    def loss_fn(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        divergence = _divergence(y_true[..., 1:], tf.cast(y_pred, tf.float32), classes)
        if not labels:
            return divergence
        return label_loss(y_true[..., :1], y_pred) + weight * divergence

    loss_fn.__name__ = f"{getattr(label_loss, '__name__', 'loss')}_distilled"
    return loss_fn


class _OverlapMetric(keras.metrics.Metric):
    """Dice or IoU of thresholded (sigmoid) or argmax (softmax) masks over the whole epoch.

    Counts accumulate over batches, so the score is the data set's, not a mean of batches.
    """

    def __init__(self, classes: int, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.classes = classes
        self.tp = self.add_weight(name="tp", initializer="zeros", dtype=tf.float64)
        self.pred = self.add_weight(name="pred", initializer="zeros", dtype=tf.float64)
        self.true = self.add_weight(name="true", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        labels = tf.cast(y_true[..., 0], tf.int32)
        if self.classes == 1:
            predicted = tf.cast(y_pred[..., 0] >= 0.5, tf.int32)
        else:
            predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        pred_fg, true_fg = predicted > 0, labels > 0
        # For several classes a pixel is a hit only when its foreground class is the right one.
        hit = tf.logical_and(pred_fg, tf.equal(predicted, labels))
        for var, mask in ((self.tp, hit), (self.pred, pred_fg), (self.true, true_fg)):
            var.assign_add(tf.reduce_sum(tf.cast(mask, tf.float64)))

    def reset_state(self) -> None:
        for var in (self.tp, self.pred, self.true):
            var.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "classes": self.classes}


class DiceScore(_OverlapMetric):
    def __init__(self, classes: int = 1, name: str = "dice", **kwargs) -> None:
        super().__init__(classes, name, **kwargs)

    def result(self) -> tf.Tensor:
        total = self.pred + self.true
        return tf.cast(tf.where(total > 0, 2.0 * self.tp / tf.maximum(total, 1.0), 1.0), tf.float32)


class IoUScore(_OverlapMetric):
    def __init__(self, classes: int = 1, name: str = "iou", **kwargs) -> None:
        super().__init__(classes, name, **kwargs)

    def result(self) -> tf.Tensor:
        union = self.pred + self.true - self.tp
        return tf.cast(tf.where(union > 0, self.tp / tf.maximum(union, 1.0), 1.0), tf.float32)
