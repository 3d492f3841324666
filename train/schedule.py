"""The learning-rate schedule, early stopping and the weight average of a training run.

`cosine` decays the rate from its start to 5% over the planned epochs; `plateau` halves it each
time the validation Dice has not improved for `REDUCE_AFTER` epochs. Early stopping ends the run
once the Dice has not improved for `patience` epochs (0: never).

Every decision is a function of the validation Dice of the epochs before, which `EpochDice`
keeps in a variable of the optimizer: BackupAndRestore saves and restores it with the weights
and the epoch, so a run killed and started again decides exactly as one that was never
stopped, on every worker of a cluster alike.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from train.config import Schedule
from train.tfk import keras, tf

log = logging.getLogger(__name__)

REDUCE_AFTER = 3  # plateau: epochs without a better validation Dice before the rate halves
FACTOR = 0.5
MIN_FACTOR = 1 / 64  # plateau: the rate never falls below the start rate times this
MIN_DELTA = 5e-4  # a validation Dice counts as better when it beats the best by this
COSINE_ALPHA = 0.05  # cosine: the rate ends at the start rate times this
MAX_HORIZON_SHARE = 0.05  # the weight average spans at most this share of the run's steps


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the validation Dice of the epochs so far decides."""

    best_epoch: int  # 0-based; -1 before the first
    stale: int  # epochs since the best
    reductions: int  # plateau: times the rate was halved


def progress(dice: list[float]) -> Progress:
    """Replays the epochs' validation Dice (NaN for an epoch that diverged)."""
    best, best_epoch, stale, since_reduction, reductions = -math.inf, -1, 0, 0, 0
    for epoch, value in enumerate(dice):
        if math.isfinite(value) and value > best + MIN_DELTA:
            best, best_epoch, stale, since_reduction = value, epoch, 0, 0
            continue
        stale += 1
        since_reduction += 1
        if since_reduction >= REDUCE_AFTER and FACTOR**reductions > MIN_FACTOR:
            reductions, since_reduction = reductions + 1, 0
    return Progress(best_epoch, stale, reductions)


def make_learning_rate(schedule: Schedule, start: float, total_steps: int):
    """The optimizer's learning rate: a cosine schedule, or a value `EpochDice` sets."""
    if schedule is Schedule.COSINE:
        return keras.optimizers.schedules.CosineDecay(
            start, decay_steps=total_steps, alpha=COSINE_ALPHA
        )
    return start


class EpochDice(keras.callbacks.Callback):
    """Records each epoch's validation Dice; sets the plateau rate; stops early.

    Create it inside the strategy's scope, after the model is compiled, and put it before
    BackupAndRestore in the callbacks so its record of an epoch is saved with that epoch.
    """

    def __init__(
        self,
        model: keras.Model,
        schedule: Schedule,
        start_rate: float,
        epochs: int,
        patience: int,
        monitor: str = "val_dice",
    ) -> None:
        super().__init__()
        self.schedule, self.start_rate, self.patience = schedule, start_rate, patience
        self.monitor = monitor
        # On the optimizer, so that BackupAndRestore's checkpoint of the model carries it.
        model.optimizer.epoch_dice = tf.Variable(
            np.full(epochs, np.nan, np.float32), trainable=False, name="epoch_dice"
        )
        self._record = model.optimizer.epoch_dice

    def _dice_before(self, epoch: int) -> list[float]:
        return [float(v) for v in self._record.numpy()[:epoch]]

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.schedule is not Schedule.PLATEAU:
            return
        dice = self._dice_before(epoch)
        reductions = progress(dice).reductions
        rate = self.start_rate * FACTOR**reductions
        if epoch and reductions > progress(dice[:-1]).reductions:
            log.info("epoch %d: learning rate %.3g (validation Dice on a plateau)", epoch + 1, rate)
        self.model.optimizer.learning_rate.assign(rate)

    def _rate(self) -> float:
        rate = self.model.optimizer.learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(self.model.optimizer.iterations)
        return float(keras.backend.get_value(rate))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self._rate()  # history.csv's column
        value = logs.get(self.monitor, math.nan)
        record = self._record.numpy()
        record[epoch] = value if math.isfinite(value) else math.nan
        self._record.assign(record)  # whole: a distributed variable takes no slice assignment
        if not self.patience:
            return
        state = progress(self._dice_before(epoch + 1))
        if state.stale >= self.patience:
            log.info(
                "early stop after epoch %d: no better validation Dice for %d epochs "
                "(the best was epoch %d)",
                epoch + 1,
                state.stale,
                state.best_epoch + 1,
            )
            self.model.stop_training = True


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of every weight, batch-norm statistics included, over
    about `horizon` epochs (at most 5% of the run's `total_steps`): validation, best.keras and
    model.keras are the average.

    At batch 2 the weights of one epoch and the next give validation Dice 0.01 apart even at a
    small rate (ISBI, `small`): the last epoch is then a draw. Their average moves as the
    trend does. Early on, the average forgets faster (its decay grows with the steps, as in
    `tf.train.ExponentialMovingAverage`), so it does not drag the first epochs' weights along.

    Create it inside the strategy's scope, after the model is compiled: the average lives on
    the optimizer, so BackupAndRestore saves and restores it with the epoch.
    """

    def __init__(
        self,
        model: keras.Model,
        steps_per_epoch: int,
        horizon: float = 2.0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        steps = horizon * steps_per_epoch
        if total_steps:  # a short run: the average's lag would cost (synthetic, 60 steps: 0.003)
            steps = min(steps, total_steps * MAX_HORIZON_SHARE)
        self.decay = math.exp(-1.0 / max(1.0, steps))
        model.optimizer.weight_average = [
            tf.Variable(w, trainable=False, name="weight_average") for w in model.get_weights()
        ]
        self._average = model.optimizer.weight_average
        self._training: list[np.ndarray] | None = None  # the model's own, during validation

    def averaged(self) -> list[np.ndarray]:
        return [a.numpy() for a in self._average]

    def on_train_begin(self, logs=None) -> None:
        # Traces the blend before the first batch, a no-op at decay 1: tracing inside the first
        # batches made Keras warn that on_train_batch_end is slow, even with -q.
        _blend(self._average, self.model.weights, tf.constant(1.0, tf.float32))

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        step = float(self.model.optimizer.iterations.numpy())
        decay = min(self.decay, (1 + step) / (10 + step))
        _blend(self._average, self.model.weights, tf.constant(decay, tf.float32))

    def on_test_begin(self, logs=None) -> None:
        self._training = self.model.get_weights()
        self.model.set_weights(self.averaged())

    def on_test_end(self, logs=None) -> None:
        if self._training is not None:
            self.model.set_weights(self._training)
            self._training = None


@tf.function
def _blend(average: list[tf.Variable], weights: list[tf.Variable], decay: tf.Tensor) -> None:
    for a, w in zip(average, weights, strict=True):
        a.assign(decay * a + (1.0 - decay) * tf.cast(w, a.dtype))
