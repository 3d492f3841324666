"""Real, short trainings of the tiny U-Net: learning, artifacts, resume, devices, divergence."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import UserError
from train.config import DataConfig, Loss, ModelConfig, TrainConfig, preset
from train.tfk import keras
from train.trainer import TrainingDiverged, run_training

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = preset("tiny")
DATA = DataConfig(synthetic_count=6, synthetic_size=64)
QUICK = TrainConfig(input_size=32, batch_size=4, epochs=3, steps_per_epoch=8, learning_rate=1e-2)
CLI = ["--preset", "tiny", "--synthetic-count", "6", "--synthetic-size", "64", "--input-size", "32",
       "--batch-size", "4", "--learning-rate", "0.01"]  # fmt: skip


def _history(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def test_short_training_lowers_the_loss_and_writes_every_artifact(tmp_path):
    result = run_training(TINY, DATA, QUICK.replace(epochs=4), tmp_path, verbose=0)
    rows = _history(tmp_path)
    losses = [float(r["loss"]) for r in rows]
    assert len(rows) == 4 and losses[-1] < losses[0] * 0.9
    assert {"dice", "iou", "val_dice", "val_iou"} <= set(rows[0])
    model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert (
        model.count_params()
        == keras.models.load_model(tmp_path / "best.keras", compile=False).count_params()
    )
    written = json.loads((tmp_path / "config.json").read_text())
    assert ModelConfig.from_dict(written["model"]) == TINY
    # The fields left to the data, as its fingerprint decided them (synthetic EM: common
    # foreground, the per-image Dice and uniform crops).
    planned = QUICK.replace(epochs=4, loss=Loss.BCE_DICE, foreground_crops=0.0)
    assert TrainConfig.from_dict(written["train"]) == planned
    assert written["fingerprint"]["plan"]["loss"] == "bce_dice"
    assert {"mean", "std"} <= set(written["preprocessing"]) and "tensorflow" in written["versions"]
    assert set(result.metrics) == {"final", "best"}
    overall = result.metrics["final"]["overall"]
    assert 0.0 <= overall["dice"] <= 1.0 and overall["pixel_accuracy"] > 0.5
    assert not (tmp_path / "backup").exists() and (tmp_path / "logs").is_dir()
    with pytest.raises(UserError, match="already holds a trained model"):
        run_training(TINY, DATA, QUICK, tmp_path, verbose=0)


def _train_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", *CLI, "--out", str(out), *extra]


def _kill_after_epochs(command: list[str], out: Path, epochs: int) -> None:
    """Runs a training command and kill -9s it once `epochs` rows are in its history."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if (out / "history.csv").exists() and len(_history(out)) >= epochs:
            break
        time.sleep(0.1)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_training_resumes_from_the_last_finished_epoch(tmp_path):
    out = tmp_path / "run"
    command = _train_command(out, "--epochs", "5", "--steps-per-epoch", "12")
    _kill_after_epochs(command, out, 2)
    finished_before = len(_history(out))
    assert not (out / "model.keras").exists()
    changed = subprocess.run([*command[:-1], "99"], cwd=ROOT, capture_output=True, text=True)
    assert changed.returncode == 2 and "other settings (train.steps_per_epoch)" in changed.stderr
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr  # logged
    epochs = [int(r["epoch"]) for r in _history(out)]
    assert sorted(set(epochs)) == [0, 1, 2, 3, 4]
    assert epochs.count(0) == 1, "the resumed run started over"
    assert len(epochs) <= finished_before + 5 - 1 + 1
    assert (out / "model.keras").exists() and not (out / "backup").exists()


def test_mirrored_strategy_trains_over_two_logical_cpus(tmp_path):
    script = (
        "import sys, train.tfk as t\n"
        "cpu = t.tf.config.list_physical_devices('CPU')[0]\n"
        "t.tf.config.set_logical_device_configuration(cpu, [t.tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from train.cli import main, parse_args\n"
        "sys.exit(main(parse_args(sys.argv[1:])))\n"
    )
    args = [
        *CLI,
        "--epochs",
        "2",
        "--steps-per-epoch",
        "6",
        "--strategy",
        "mirrored",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 replica(s) on the CPU (no GPU found), global batch 8" in done.stderr  # logged
    losses = [float(r["loss"]) for r in _history(tmp_path)]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_mixed_precision_forced_on_cpu_trains_and_saves_float32(tmp_path):
    run_training(TINY, DATA, QUICK.replace(epochs=2, mixed_precision="on"), tmp_path, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    losses = [float(r["loss"]) for r in _history(tmp_path)]
    assert all(np.isfinite(losses))
    model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert {layer.compute_dtype for layer in model.layers if layer.weights} == {"float32"}


def test_nan_loss_stops_training_with_a_clear_message(tmp_path):
    config = QUICK.replace(learning_rate=1e30, epochs=3)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite.*lower --learning-rate"):
        run_training(TINY.replace(batch_norm=False), DATA, config, tmp_path, verbose=0)
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "backup").exists()


def _decisions(out: Path) -> list[tuple[int, str]]:
    return [(int(r["epoch"]), f"{float(r['learning_rate']):.3g}") for r in _history(out)]


def test_a_killed_plateau_run_halves_and_stops_as_one_never_stopped(tmp_path):
    """The rate schedule and early stopping replay the recorded validation Dice after a kill.

    At a rate too small to move the Dice, epoch 1 stays the best: the rate halves before epoch
    5 (3 epochs without a better Dice) and the run stops after epoch 6 (patience 5). A resumed
    run that had forgotten the first epochs would halve and stop later."""
    args = ["--epochs", "20", "--steps-per-epoch", "6", "--learning-rate", "1e-9"]
    args += ["--schedule", "plateau", "--patience", "5"]
    whole = subprocess.run(
        _train_command(tmp_path / "whole", *args), cwd=ROOT, capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "early stop after epoch 6" in whole.stderr
    expected = [(e, "1e-09") for e in range(4)] + [(4, "5e-10"), (5, "5e-10")]
    assert _decisions(tmp_path / "whole") == expected

    out = tmp_path / "killed"
    _kill_after_epochs(_train_command(out, *args), out, 3)
    resumed = subprocess.run(
        _train_command(out, *args), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and "early stop after epoch 6" in resumed.stderr
    # An epoch the kill cut short before its backup was saved runs again: the last row counts.
    assert sorted(dict(_decisions(out)).items()) == expected


def test_jit_trains_the_transposed_up_convolution(tmp_path):
    """XLA compiles the step where it can (the nearest up-sampling's gradient it cannot: that is
    a one-line error, tests/train/test_cli.py)."""
    from train.cli import main, parse_args

    out = tmp_path / "jit"
    argv = [*CLI, "--epochs", "1", "--steps-per-epoch", "3", "--jit", "--upsampling", "transpose"]
    assert main(parse_args([*argv, "--out", str(out)])) == 0
    assert (out / "model.keras").is_file()
