"""`benchmarks.train_speed`: the trainer's step on random crops, timed in a child process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.train_speed import _reason, main
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


def test_a_failed_child_is_named_by_the_kernel_that_refused() -> None:
    # What TensorFlow printed when bf16 ran with oneDNN capped at AVX2 (2026-12-07).
    stderr = (
        "W0000 00:00:1796627376.235416 25061 op_kernel.cc:1858] OP_REQUIRES failed at "
        "mkl_conv_ops.cc:1115 : ABORTED: Operation received an exception:Status: 3, message: "
        "could not create a primitive descriptor for the convolution\n"
        "Traceback (most recent call last):\n"
        "tensorflow.python.framework.errors_impl.AbortedError: Graph execution error:\n"
    )
    assert _reason(stderr).startswith("mkl_conv_ops.cc:1115 : ABORTED")
    assert _reason("x\nValueError: bad crop\n") == "ValueError: bad crop"
