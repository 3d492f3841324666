"""Magnitude pruning on a briefly trained tiny U-Net: the sparsity is real and the source intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from optimize.finetune import Run
from optimize.pruning import _schedule, magnitude_prune
from optimize.wrapping import KernelSparsity, check_prunable, kernels, sparsity_report
from runtime.errors import UserError
from train.config import preset
from train.model import build_unet
from train.tfk import keras

KEEP_DENSE = ("enc1_conv_a", "head")


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    """The session's briefly trained tiny U-Net (tests/conftest.py)."""
    return Run.load(tiny_run)


@pytest.mark.parametrize(
    ("total", "ramp", "last_update"), [(36, 0.5, 18), (36, 1.0, 36), (100, 0.5, 48)]
)
def test_the_schedule_reaches_the_sparsity_at_the_ramps_end_and_then_holds(
    total: int, ramp: float, last_update: int
) -> None:
    schedule = _schedule(0.5, total, ramp)

    def at(step: int) -> tuple[bool, float]:
        update, sparsity = schedule(tf.constant(step, tf.int64))
        return bool(update), float(sparsity)

    assert at(last_update) == (True, pytest.approx(0.5))
    assert not any(at(step)[0] for step in range(last_update + 1, total + 1))
    assert 0 < at(last_update // 2)[1] < 0.5


@pytest.mark.slow
def test_magnitude_prune_reaches_the_sparsity_and_leaves_the_source_alone(run: Run) -> None:
    model = run.load_model()
    before = [w.copy() for w in model.get_weights()]

    pruned = magnitude_prune(model, run, sparsity=0.5, epochs=2, steps_per_epoch=3, verbose=0)

    layers = sparsity_report(pruned).layers
    for name, entry in layers.items():
        if name in KEEP_DENSE:
            assert entry.zeros == 0, name
        else:
            # Top-k by magnitude on each kernel: off only by rounding (1/params) and ties.
            assert abs(entry.sparsity - 0.5) <= 0.02, (name, entry)
    assert len(layers) == len(kernels(model))
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert sparsity_report(model).sparsity == 0.0


@pytest.mark.slow
def test_two_of_four_zeroes_two_in_every_group_of_four_input_channels(run: Run) -> None:
    pruned = magnitude_prune(
        run.load_model(), run, m_by_n=(2, 4), epochs=1, steps_per_epoch=2, verbose=0
    )

    checked = 0
    for name, kernel in kernels(pruned).items():
        if name in KEEP_DENSE:
            assert np.count_nonzero(kernel) == kernel.size, name
            continue
        assert kernel.shape[2] % 4 == 0, name  # every pruned layer of the tiny U-Net fits 4-groups
        # tfmot groups m-by-n along the last axis of the TFLite layout [C_out, H, W, C_in]:
        # 4 consecutive input channels at one (kernel position, output channel).
        groups = kernel.transpose(3, 0, 1, 2).reshape(-1, 4)
        zeros = np.count_nonzero(groups == 0, axis=1)
        assert np.all(zeros == 2), (name, np.bincount(zeros))
        checked += 1
    assert checked == 11


def test_sparsity_report_counts_the_zeros_of_each_kernel() -> None:
    model = build_unet(preset("tiny"))
    layer = model.get_layer("enc2_conv_b")
    kernel, *rest = layer.get_weights()
    kernel.flat[::4] = 0.0  # a quarter of the kernel
    layer.set_weights([kernel, *rest])

    report = sparsity_report(model)

    entry = report.layers["enc2_conv_b"]
    assert entry == KernelSparsity(params=kernel.size, zeros=kernel.size // 4, sparsity=0.25)
    assert report.layers["head"].zeros == 0
    kernels = sum(e.params for e in report.layers.values())
    assert report.sparsity == pytest.approx(kernel.size / 4 / kernels)
    assert report.params == sum(w.size for w in model.get_weights())
    assert report.nonzero_params == sum(np.count_nonzero(w) for w in model.get_weights())


def test_check_prunable_names_a_lambda_layer() -> None:
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="head")(x))

    with pytest.raises(UserError, match=r"layer 'double' \(Lambda\).*replace it with built-in"):
        check_prunable(model)
    check_prunable(build_unet(preset("tiny")))  # the project's own U-Net passes


def test_check_prunable_refuses_a_subclassed_model() -> None:
    class Doubler(keras.Model):
        def call(self, inputs):
            return inputs * 2.0

    with pytest.raises(UserError, match=r"subclassed.*Functional"):
        check_prunable(Doubler(name="doubler"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sparsity": 1.0}, "sparsity must be in"),
        ({"m_by_n": (4, 2)}, "m_by_n must be"),
        ({"keep_dense": ("enc9_conv_a",)}, r"keep_dense names no layer.*enc9_conv_a"),
        ({"epochs": 0}, "epochs must be >= 1"),
    ],
)
def test_magnitude_prune_rejects_bad_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        magnitude_prune(build_unet(preset("tiny")), run=None, **arguments)  # type: ignore[arg-type]
