"""Filter pruning to a measured latency: the per-layer table, its prediction, the steps, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimize import latency_prune
from optimize.filter_prune import _PRUNABLE, count_macs
from optimize.finetune import fine_tune
from optimize.latency import (
    LatencyTable,
    Timer,
    checked_size,
    engine_for_int8,
    keep_ratio_floor,
    layer_models,
    measure_table,
    table_ratios,
)
from optimize.latency_prune import MAX_FALL, LatencyPrune, step_to_target
from optimize.prune import main, parse_args
from runtime.errors import UserError
from train.config import preset
from train.model import build_unet
from train.tfk import keras

# Base 16: tiny's base 4 has layers of 2-16 channels, which int8 kernels pad to their vector
# width, so thinning them does not change their time at all (measured: flat within noise).
WIDE_TINY = preset("tiny").replace(base_filters=16)


def _table(layers: dict[str, tuple[float, ...]], remainder: tuple[float, float]) -> LatencyTable:
    """A hand-made table at ratios 1, 0.5 and 0.25, the whole model at 1 and 0.25."""
    sums = [sum(ms[i] for ms in layers.values()) for i in (0, 2)]
    return LatencyTable(
        cpu={"model": "hand"},
        engine="litert",
        precision="int8",
        threads=1,
        size=64,
        ratios=(1.0, 0.5, 0.25),
        layers=layers,
        whole_ratios=(1.0, 0.25),
        whole_ms=(sums[0] + remainder[0], sums[1] + remainder[1]),
        remainder_ms=remainder,
    )


def test_table_times_every_prunable_layer_and_the_biggest_is_faster_thinned() -> None:
    model = build_unet(WIDE_TINY, None)
    timer = Timer(engine_for_int8("auto"), threads=1, size=128)

    table = measure_table(model, WIDE_TINY, timer, (1.0, 0.25))

    prunable = {layer.name for layer in model.layers if _PRUNABLE.match(layer.name)}
    assert set(table.layers) == prunable
    macs = {
        name: count_macs(m, m.input_shape[1])
        for name, m in layer_models(model, WIDE_TINY, 128, 1.0).items()
    }
    biggest = max(macs, key=macs.get)
    full, quarter = table.layers[biggest]
    # A quarter of the filters in and out is 1/16 of the MACs; a kernel that pads channels to
    # 16 still does half the work. 0.8 leaves room for the noise of two interleaved medians.
    assert quarter < 0.8 * full, (biggest, table.layers[biggest])
    # The remainder is what the layers leave of the whole model, at both measured ratios.
    for i, end in enumerate((0, 1)):
        layers = sum(ms[end] for ms in table.layers.values())
        assert table.remainder_ms[i] == pytest.approx(table.whole_ms[i] - layers)
    assert table.predict(1.0) == pytest.approx(table.unpruned_ms)
    assert table.cpu["model"] and table.engine == timer.engine and table.size == 128


def test_prediction_is_the_layers_interpolated_plus_the_remainder() -> None:
    table = _table({"a": (8.0, 4.0, 2.0), "b": (2.0, 2.0, 1.0)}, remainder=(5.0, 2.0))

    # At 0.75: a halfway between 8 and 4, b 2; the remainder a third of the way from 5 to 2.
    assert table.predict(0.75) == pytest.approx(6.0 + 2.0 + 4.0)
    assert table.predict(0.25) == pytest.approx(2.0 + 1.0 + 2.0)
    assert table.predict(0.1) == table.predict(0.25)  # below the table: its lowest ratio
    assert table.predict(1.0) == table.unpruned_ms == 15.0


def test_floor_keeps_two_filters_in_the_narrowest_layer_and_the_table_ends_there() -> None:
    tiny = build_unet(preset("tiny"), None)  # narrowest layers: 4 filters

    assert keep_ratio_floor(tiny) == 0.375  # 0.375 x 4 = 1.5, rounded half up: 2 filters
    assert table_ratios(0.375) == (1.0, 0.75, 0.5, 0.375)
    assert keep_ratio_floor(build_unet(WIDE_TINY, None)) == 0.125


# A table whose prediction runs from 110 ms (unpruned) down to 30 ms (floor 0.25).
STEP_TABLE = _table({"a": (100.0, 50.0, 20.0)}, remainder=(10.0, 10.0))


class FakeAdvance:
    """Measures each step as the table predicts it, off by a factor and an offset."""

    def __init__(self, factor: float = 1.1, offset: float = 0.0) -> None:
        self.factor, self.offset, self.ratios = factor, offset, []

    def __call__(self, ratio: float) -> tuple[float, float]:
        self.ratios.append(ratio)
        return self.factor * STEP_TABLE.predict(ratio) + self.offset, 0.9 - ratio / 10


def test_steps_stop_at_the_first_measured_under_the_target_and_never_fall_past_the_bound() -> None:
    advance = FakeAdvance(factor=1.1)

    steps = step_to_target(STEP_TABLE, 50.0, 0.25, advance)

    assert len(steps) >= 2  # 110 -> 50 ms is more than one bounded step
    assert steps[-1].measured_ms <= 50.0
    assert all(step.measured_ms > 50.0 for step in steps[:-1])
    ratios = [1.0] + [step.keep_ratio for step in steps]
    for before, step in zip(ratios, steps, strict=False):
        # The table's own fall (the correction cancels): at most MAX_FALL of the time.
        assert step.predicted_ms >= (1 - MAX_FALL) * STEP_TABLE.predict(before) - 1e-9
        assert step.keep_ratio < before
    assert [s.keep_ratio for s in steps] == advance.ratios
    assert steps[-1].dice == pytest.approx(0.9 - steps[-1].keep_ratio / 10)


def test_one_slow_measurement_makes_the_next_step_no_deeper_than_the_bound() -> None:
    advance = FakeAdvance(factor=1.0)
    spiked = iter([2.0])  # the first step measures twice its time: another process ran

    def noisy(ratio: float) -> tuple[float, float]:
        ms, dice = advance(ratio)
        return ms * next(spiked, 1.0), dice

    steps = step_to_target(STEP_TABLE, 50.0, 0.25, noisy)

    assert steps[0].measured_ms == pytest.approx(2 * steps[0].predicted_ms)
    assert steps[1].predicted_ms >= (1 - MAX_FALL) * steps[0].predicted_ms - 1e-9
    assert steps[-1].measured_ms <= 50.0


def test_a_target_the_unpruned_model_meets_takes_no_step() -> None:
    advance = FakeAdvance()

    assert step_to_target(STEP_TABLE, 110.0, 0.25, advance) == []
    assert advance.ratios == []


def test_a_target_below_the_floor_names_the_best_time_reached_and_its_ratio() -> None:
    # Predicted 30 ms at the floor, so 28 ms is worth trying; measured 5 ms slower each time.
    advance = FakeAdvance(factor=1.0, offset=5.0)

    with pytest.raises(UserError, match=r"out of reach: the best was 35\.0 ms at keep ratio 0\.25"):
        step_to_target(STEP_TABLE, 28.0, 0.25, advance)
    assert advance.ratios[-1] == 0.25


def test_a_target_far_below_the_tables_floor_fails_before_any_step() -> None:
    advance = FakeAdvance()

    with pytest.raises(UserError, match=r"the best was 110\.0 ms at keep ratio 1 "):
        step_to_target(STEP_TABLE, 10.0, 0.25, advance)
    assert advance.ratios == []


def test_the_record_round_trips_through_json() -> None:
    record = LatencyPrune(
        STEP_TABLE, 50.0, 0.25, tuple(step_to_target(STEP_TABLE, 50.0, 0.25, FakeAdvance()))
    )

    written = json.loads(json.dumps(record.to_dict()))

    assert LatencyPrune.from_dict(written) == record
    assert written["error_pct"] == pytest.approx(100 * (1 / 1.1 - 1))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--target-ms", "50", "--keep-ratio", "0.5"], "--keep-ratio and --target-ms exclude"),
        (["--target-ms", "50", "--target-speedup", "2"], "--target-ms and --target-speedup"),
        (["--target-speedup", "2", "--target-macs", "0.5"], "--target-macs and --target-speedup"),
        (["--target-ms", "-3"], "--target-ms must be > 0, got -3"),
        (["--target-speedup", "0.5"], "target-speedup must be >= 1 (or 0: off), got 0.5"),
        (["--target-ms", "50", "--engine", "tpu"], "unknown engine 'tpu'"),
        (["--target-ms", "50", "--latency-size", "0"], "latency-size must be >= 1, got 0"),
        (["--target-ms", "50", "--latency-threads", "0"], "latency-threads must be >= 1, got 0"),
        (["--target-ms", "50", "--method", "magnitude"], "needs method filter, not magnitude"),
    ],
)
def test_cli_bad_targets_are_one_line_errors_with_exit_2(flags, words, tmp_path, capsys) -> None:
    argv = ["--model", str(tmp_path / "model.keras"), "--out", str(tmp_path / "out")]
    if "--method" not in flags:
        argv += ["--method", "filter"]

    assert main(parse_args([*argv, *flags])) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err


def test_a_latency_size_the_model_cannot_take_is_a_user_error() -> None:
    model = build_unet(preset("tiny"), None)  # any multiple of 4

    assert checked_size(model, preset("tiny"), 64) == 64
    with pytest.raises(UserError, match=r"--latency-size 66 is not a multiple of 4: e\.g\. 64"):
        checked_size(model, preset("tiny"), 66)
    fixed = build_unet(preset("tiny"), 64)
    with pytest.raises(UserError, match="pass --latency-size 64"):
        checked_size(fixed, preset("tiny"), 128)


def _macs_as_ms(self: Timer, models: dict, rounds: int = 1) -> dict[str, float]:
    """Deterministic 'timings': 1 ms a million MACs."""
    return {key: count_macs(m, m.input_shape[1] or self.size) / 1e6 for key, m in models.items()}


@pytest.mark.slow
def test_cli_prunes_in_steps_and_records_the_table_and_each_step(
    tiny_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(Timer, "time", _macs_as_ms)
    tunings = []

    def spy(model, run, epochs, rate, *args, **kwargs):
        tunings.append((epochs, rate))
        return fine_tune(model, run, epochs, rate, *args, **kwargs)

    monkeypatch.setattr(latency_prune, "fine_tune", spy)
    out = tmp_path / "thin"
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(out), "--method", "filter"]
    flags = [
        "--target-speedup",
        "2",
        "--latency-size",
        "64",
        "--epochs",
        "1",
        "--final-epochs",
        "2",
    ]

    assert main(parse_args([*argv, *flags, "--steps-per-epoch", "2"])) == 0

    written = json.loads((out / "config.json").read_text())
    record = LatencyPrune.from_dict(written["prune"]["latency"])
    assert set(record.table.layers) == set(written["widths"])
    assert record.table.engine == engine_for_int8("auto") and record.table.size == 64
    assert record.steps and record.steps[-1].measured_ms <= record.target_ms
    assert record.target_ms == pytest.approx(record.table.unpruned_ms / 2)
    assert all(0 <= step.dice <= 1 for step in record.steps)
    # Only the step that met the target fine-tuned --final-epochs, its rate decaying.
    assert [epochs for epochs, _ in tunings] == [1] * (len(record.steps) - 1) + [2]
    assert isinstance(tunings[-1][1], keras.optimizers.schedules.CosineDecay)
    report = json.loads((out / "prune_report.json").read_text())
    assert report["latency"]["steps"][-1]["keep_ratio"] == record.steps[-1].keep_ratio
    printed = capsys.readouterr().out
    assert f"step(s) to keep ratio {record.steps[-1].keep_ratio:g}" in printed
    assert "the table predicted" in printed
