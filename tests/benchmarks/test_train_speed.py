"""`benchmarks.train_speed`: the trainer's step on random crops, timed in a child process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.train_speed import main
from optimize.filter_prune import count_macs
from train.config import preset
from train.model import build_unet


def test_rows_give_the_step_time_and_the_work_it_does(tmp_path: Path, capsys) -> None:
    out = tmp_path / "speed.json"
    argv = ["--preset", "tiny", "--crop", "32", "--batch-size", "2", "--steps", "2"]

    assert main([*argv, "--warmup", "1", "--json", str(out)]) == 0

    (row,) = json.loads(out.read_text())["rows"]
    assert row["precision"] == "float32" and row["isa"] == "default"
    seconds = row["seconds_per_step"]
    assert seconds > 0 and row["crops_per_second"] == pytest.approx(2 / seconds, rel=1e-2)
    # A training step counts as three forward passes of the batch.
    macs = 3 * 2 * count_macs(build_unet(preset("tiny"), 32), 32)
    assert row["train_gmac_per_second"] == pytest.approx(macs / seconds / 1e9, abs=0.06)
    assert "float32" in capsys.readouterr().out
