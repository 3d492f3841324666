"""Filter pruning to a latency measured on this machine (`--target-ms`, `--target-speedup`).

The per-layer table (`optimize.latency`) predicts a thin model's time; pruning goes there in
steps, each one pruning the model it has (`filter_prune`), fine-tuning it (with the float model
as teacher when asked) and timing the whole thin model through the engine, because the table is
a model of the time, not the time. A step is predicted to take at most MAX_FALL of the time
away, so the fine-tuning can follow, and the last step the ratio predicted to hit the target;
before each step the table is scaled by how far it was off for the model in hand. Pruning stops
at the first step whose measured time meets the target.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from optimize.configs import PruneConfig
from optimize.filter_prune import filter_prune
from optimize.finetune import Run, fine_tune
from optimize.latency import (
    LatencyTable,
    Timer,
    checked_size,
    engine_for_int8,
    keep_ratio_floor,
    measure_table,
    table_ratios,
    widths_at,
)
from runtime.errors import UserError
from runtime.typed_json import JsonRecord
from train.tfk import keras

log = logging.getLogger(__name__)

# A step is predicted by the table to take at most this fraction of the time away: gradual
# pruning, so each fine-tuning has less to win back. A chosen bound, not one tuned here.
MAX_FALL = 0.35
# The smallest step in keep ratio: the table may be off for the model in hand, and a step that
# removes no filter would measure the same time again.
MIN_STEP = 0.02
# The table predicts a step to within a few tens of percent (see the record's `error_pct`); a
# target further below its prediction at the floor than this factor fails before any step.
HOPELESS = 1.5
_GRID = 0.005  # keep ratios are chosen on this grid


@dataclasses.dataclass(frozen=True)
class LatencyStep:
    keep_ratio: float  # global, against the model pruning started from
    predicted_ms: float  # by the table as measured, uncorrected
    measured_ms: float  # the whole thin model through the engine, after fine-tuning
    dice: float  # validation Dice after the step's fine-tuning


@dataclasses.dataclass(frozen=True)
class LatencyPrune(JsonRecord):
    """What pruning to a latency measured and did: the table, the target and each step."""

    JSON_NAME = "latency"

    table: LatencyTable
    target_ms: float
    floor: float  # the smallest keep ratio it would prune to
    steps: tuple[LatencyStep, ...]

    @property
    def error_pct(self) -> float:
        """How far the table's prediction of the final model was off its measured time, in %
        (0 steps: the unpruned model, which the table measured itself)."""
        if not self.steps:
            return 0.0
        last = self.steps[-1]
        return 100 * (last.predicted_ms - last.measured_ms) / last.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "error_pct": self.error_pct}  # for a reader of the JSON


# A global keep ratio -> (measured ms, Dice) of the model pruned there and fine-tuned.
Advance = Callable[[float], tuple[float, float]]


def _grid(high: float, low: float) -> list[float]:
    """Keep ratios from `high` down to `low`, both included, _GRID apart."""
    steps = int(np.floor((high - low) / _GRID + 1e-9))
    return [round(high - i * _GRID, 4) for i in range(steps + 1)] + [low]


def next_ratio(
    table: LatencyTable, ratio: float, measured_ms: float, target_ms: float, floor: float
) -> float:
    """The keep ratio of the next step from `ratio`, where the model measured `measured_ms`.

    Going down from `ratio` less MIN_STEP: the first ratio that the table, scaled to agree with
    that measurement, predicts to meet the target, unless the table's own prediction falls
    below (1 - MAX_FALL) x its prediction at `ratio` first; then the last ratio above that. The
    bound is the table's own fall, which the scale cancels out of: one slow measurement (another
    process on the core) makes the target look further away, not the step deeper. Never below
    the floor; at least MIN_STEP down, even where that alone falls further.
    """
    scale = measured_ms / table.predict(ratio)
    lowest_ms = (1 - MAX_FALL) * table.predict(ratio)
    below = max(floor, ratio - MIN_STEP)
    chosen = below
    for candidate in _grid(below, floor):
        predicted = table.predict(candidate)
        if predicted < lowest_ms:
            break
        chosen = candidate
        if scale * predicted <= target_ms:
            break
    return chosen


def step_to_target(
    table: LatencyTable, target_ms: float, floor: float, advance: Advance
) -> list[LatencyStep]:
    """Prunes in steps (`advance`) until a step measures at most `target_ms`.

    Raises:
        UserError: the target is below what the floor ratio reaches (measured, or clearly
            predicted before any step), naming the best time reached and its ratio.
    """
    ratio, measured = 1.0, table.unpruned_ms
    if measured <= target_ms:
        return []
    best = (measured, ratio)
    _check_hopeless(table, target_ms, floor)
    steps: list[LatencyStep] = []
    while ratio > floor:
        ratio = next_ratio(table, ratio, measured, target_ms, floor)
        measured, dice = advance(ratio)
        steps.append(LatencyStep(ratio, table.predict(ratio), measured, dice))
        log.info(
            "prune: step %d: keep ratio %.3f, predicted %.1f ms, measured %.1f ms, Dice %.4f",
            len(steps),
            ratio,
            steps[-1].predicted_ms,
            measured,
            dice,
        )
        if measured <= target_ms:
            return steps
        best = min(best, (measured, ratio))
    raise UserError(
        f"target {target_ms:.1f} ms is out of reach: the best was {best[0]:.1f} ms at keep "
        f"ratio {best[1]:g} (the floor is {floor:g}): ask for a larger --target-ms or a "
        "smaller --target-speedup"
    )


def _check_hopeless(table: LatencyTable, target_ms: float, floor: float) -> None:
    predicted = table.predict(floor)
    if predicted > HOPELESS * target_ms:
        raise UserError(
            f"target {target_ms:.1f} ms is out of reach: the best was {table.unpruned_ms:.1f} ms "
            f"at keep ratio 1 (unpruned), and the table predicts {predicted:.1f} ms at the floor "
            f"ratio {floor:g}: ask for a larger --target-ms or a smaller --target-speedup"
        )


def target_ms_of(table: LatencyTable, target_ms: float, target_speedup: float) -> float:
    """The target in ms: as given, or the unpruned model's measured time / the speedup."""
    return target_ms or table.unpruned_ms / target_speedup


def latency_timer(model: keras.Model, run: Run, config: PruneConfig) -> Timer:
    """The timer of the config's engine, threads and size (checked against the model)."""
    size = checked_size(model, run.model_config, config.latency_size)
    return Timer(engine_for_int8(config.engine), config.latency_threads, size)


class _Pruner:
    """`Advance` for a real model: prunes the model in hand to a global keep ratio, times it
    and fine-tunes it (the run's teacher and labels as configured); the step that meets the
    target fine-tunes `final_epochs` with a decaying rate, since no step follows to recover."""

    def __init__(
        self, model: keras.Model, run: Run, config: PruneConfig, timer: Timer, target_ms: float
    ) -> None:
        self.model, self.run, self.config, self.timer = model, run, config, timer
        self.original, self.target_ms = model, target_ms
        self.widths = widths_at(model, 1.0)

    def _level_ratios(self, ratio: float) -> dict[str, float]:
        """Per level, the fraction of the model in hand's filters that leaves the widths the
        table assumed at `ratio`. One ratio of the model in hand would not: rounding keeps a
        4-filter layer at 4 under any step smaller than 1/8, step after step. (The layers of a
        level have one width in a U-Net that build_unet made.)"""
        target = widths_at(self.original, ratio)
        return {
            name.split("_", 1)[0]: min(1.0, target[name] / self.widths[name]) for name in target
        }

    def __call__(self, ratio: float) -> tuple[float, float]:
        config = self.config
        thin, widths = filter_prune(
            self.model,
            self.run.model_config,
            self.model.input_shape[1],
            self._level_ratios(ratio),
            config.criterion,
        )
        # Timed before fine-tuning: an int8 model's time does not depend on its weights' values.
        measured = self.timer.time_whole(thin)
        steps = self.run.steps_per_epoch(config.steps_per_epoch or None)
        epochs, rate = config.epochs, config.learning_rate
        if measured <= self.target_ms and config.final_epochs:
            epochs = config.final_epochs
            rate = keras.optimizers.schedules.CosineDecay(rate, epochs * steps)
        history = fine_tune(thin, self.run, epochs, rate, steps)
        self.model, self.widths = thin, widths
        return measured, float(history.history["val_dice"][-1])


def prune_to_latency(
    model: keras.Model, run: Run, config: PruneConfig
) -> tuple[keras.Model, dict[str, int], LatencyPrune]:
    """Measures the table of `model`, then prunes and fine-tunes it in steps to the target.

    Returns:
        The thin model (`model` itself after 0 steps), its widths and the record.

    Raises:
        UserError: a size or engine that does not fit, or a target out of reach.
    """
    timer = latency_timer(model, run, config)
    floor = keep_ratio_floor(model)
    log.info(
        "prune: timing each layer at keep ratios %s on %s (int8, %d thread(s), %d px)",
        ", ".join(f"{r:g}" for r in table_ratios(floor)),
        timer.engine,
        timer.threads,
        timer.size,
    )
    table = measure_table(model, run.model_config, timer, table_ratios(floor))
    target = target_ms_of(table, config.target_ms, config.target_speedup)
    log.info(
        "prune: unpruned %.1f ms, target %.1f ms; the table predicts %.1f ms at the floor ratio %g",
        table.unpruned_ms,
        target,
        table.predict(floor),
        floor,
    )
    pruner = _Pruner(model, run, config, timer, target)
    steps = step_to_target(table, target, floor, pruner)
    return pruner.model, pruner.widths, LatencyPrune(table, target, floor, tuple(steps))
