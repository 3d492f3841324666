"""The plateau schedule and early stopping, replayed from the validation Dice of each epoch."""

from __future__ import annotations

import math

from train.schedule import MIN_FACTOR, REDUCE_AFTER, progress


def test_a_better_dice_resets_the_count_and_a_stall_halves_the_rate():
    state = progress([0.5, 0.6, 0.6, 0.6001, 0.59])
    assert (state.best_epoch, state.stale, state.reductions) == (1, 3, 1)
    assert progress([0.5, 0.6, 0.7]).stale == 0


def test_the_rate_halves_every_few_stale_epochs_down_to_its_floor():
    stale = 40
    state = progress([0.8] + [0.7] * stale)
    assert state.stale == stale and state.best_epoch == 0
    assert 0.5**state.reductions == MIN_FACTOR
    assert progress([0.8] + [0.7] * (2 * REDUCE_AFTER)).reductions == 2


def test_a_diverged_epoch_is_never_the_best():
    state = progress([0.5, math.nan, math.nan])
    assert (state.best_epoch, state.stale) == (0, 2)
    assert progress([]).best_epoch == -1


def _compiled_tiny():
    from train.config import preset
    from train.model import build_unet
    from train.tfk import keras

    model = build_unet(preset("tiny"), None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    return model


def test_the_weight_average_is_validated_and_comes_back_with_a_resumed_run(tmp_path):
    """Validation runs on the average (the model's own weights are back after it), and
    BackupAndRestore's checkpoint carries the average: a resumed run continues it instead of
    starting a new one from its fresh weights."""
    import numpy as np

    from train.schedule import WeightAverage
    from train.tfk import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y = (x > 0).astype("float32")
    model = _compiled_tiny()
    average = WeightAverage(model, steps_per_epoch=2, horizon=1.0)
    seen: list[list[np.ndarray]] = []

    class Watch(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            seen.append(self.model.get_weights())

    backup = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0,
              callbacks=[average, Watch(), backup])  # fmt: skip
    trained, averaged = model.get_weights(), average.averaged()
    assert any(not np.allclose(a, t) for a, t in zip(averaged, trained, strict=True))
    assert all(np.array_equal(s, a) for s, a in zip(seen[0], averaged, strict=True))

    fresh = _compiled_tiny()
    again = WeightAverage(fresh, steps_per_epoch=2, horizon=1.0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    fresh.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[again, backup])  # all done
    assert all(np.array_equal(a, b) for a, b in zip(again.averaged(), averaged, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained, strict=True))
