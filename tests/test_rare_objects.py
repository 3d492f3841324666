"""Small, rare objects through the chain's commands: the fingerprint's recipe, training's
closing line for a useless model, and the int8 gate refusing one (issue 31)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimize import quantize
from train import cli
from train.data.defects import write_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def useless_run(tmp_path_factory) -> tuple[Path, int]:
    """A tiny U-Net given two steps at a learning rate too small to move it, on defects: the
    untrained model's probabilities near 0.5 mark about every pixel or none."""
    root = tmp_path_factory.mktemp("rare")
    write_folder(root / "defects", count=10, size=48, seed=0)
    out = root / "run"
    argv = ["--data", str(root / "defects"), "--preset", "tiny", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "4", "--learning-rate", "1e-7",
            "--out", str(out)]  # fmt: skip
    return out, cli.main(cli.parse_args(argv))


def test_training_on_rare_objects_plans_for_them_and_names_a_useless_model(useless_run, capfd):
    out, code = useless_run
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    plan = config["fingerprint"]["plan"]
    assert plan["loss"] == "batch_dice" and plan["foreground_crops"] == pytest.approx(1 / 3, 1e-3)
    assert config["train"]["loss"] == "batch_dice"  # what trained, for the stages after
    assert config["fingerprint"]["foreground_share"] < 0.02
    trivial = json.loads((out / "metrics.json").read_text())["trivial"]
    assert 0 < trivial["foreground_share"] < 0.05 and trivial["floor"] >= 0.1


def test_the_closing_line_says_useless_with_a_fix(tmp_path, capsys):
    write_folder(tmp_path / "defects", count=10, size=48, seed=1)
    argv = ["--data", str(tmp_path / "defects"), "--preset", "tiny", "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "4", "--learning-rate", "1e-7",
            "--loss", "bce_dice", "--foreground-crops", "0", "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(cli.parse_args(argv)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1
    assert "no better than a trivial one" in warnings[0] or "finds no foreground" in warnings[0]
    assert "leave --loss and --foreground-crops to the data" in warnings[0]


def test_the_int8_gate_refuses_a_useless_float_model(useless_run, tmp_path, capsys):
    out, _ = useless_run
    argv = ["--model", str(out / "model.keras"), "--out", str(tmp_path / "bundle")]
    assert quantize.main(quantize.parse_args(argv)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1  # one line, no traceback
    assert str(out / "model.keras") in errors[0] and "--allow-useless" in errors[0]
    assert not (tmp_path / "bundle").exists()
