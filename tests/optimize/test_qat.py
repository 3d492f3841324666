"""QAT on a briefly trained tiny U-Net: sparsity kept, int8 TFLite export and its parity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from optimize.finetune import Run
from optimize.qat import (
    init_activation_ranges,
    prepare_qat,
    qat_tflite_int8,
    qat_training_steps,
    quantize_aware,
)
from optimize.wrapping import kernels, sparsity_report
from runtime.errors import UserError
from runtime.metrics import masks_from_probabilities, pixel_accuracy
from train.config import preset
from train.model import build_unet
from train.tfk import keras, tf

KEEP_DENSE = ("enc1_conv_a", "head")


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    """The session's briefly trained tiny U-Net (tests/conftest.py)."""
    return Run.load(tiny_run)


@pytest.fixture(scope="module")
def float_model(run: Run) -> keras.Model:
    return run.load_model()


@pytest.fixture(scope="module")
def qat_model(run: Run, float_model: keras.Model) -> keras.Model:
    return quantize_aware(float_model, run, epochs=1, steps_per_epoch=4, verbose=0)


def _interpreter(content: bytes, size: int):
    """The model's interpreter, its input resized to one size x size tile."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [1, size, size, detail["shape"][-1]])
    interpreter.allocate_tensors()
    return interpreter


def _run_int8(interpreter, tile: np.ndarray) -> np.ndarray:
    """One normalized float tile in, dequantized probabilities out (as the runtime does it)."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    q = np.clip(np.rint(tile / scale + zero_point), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q[None])
    interpreter.invoke()
    scale, zero_point = out["quantization"]
    return (interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero_point) * scale


@pytest.mark.slow
def test_qat_int8_tflite_matches_the_qat_model_and_the_float_masks(
    run: Run, float_model: keras.Model, qat_model: keras.Model
) -> None:
    assert qat_training_steps(qat_model) == 4
    interpreter = _interpreter(qat_tflite_int8(qat_model, run.tile_size), run.tile_size)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    # Full integer: int8 tensors, int32 biases, no float op left behind.
    assert {t["dtype"] for t in interpreter.get_tensor_details()} <= {np.int8, np.int32}
    assert tuple(inp["shape_signature"]) == (-1, -1, -1, 1)  # any batch and size
    # The sigmoid head quantized as TFLite's int8 Logistic: fixed scale 1/256, zero point -128.
    assert out["quantization"] == pytest.approx((1 / 256, -128))

    tiles, _ = run.validation_tiles()
    lite = np.stack([_run_int8(interpreter, tile) for tile in tiles])
    keras_qat = qat_model.predict(tiles, verbose=0)
    # Both run int8 arithmetic, but not the same: Keras simulates it in float with batch norm
    # after the rounded kernel, TFLite folds batch norm into int8 kernels, requantizes with
    # fixed-point multipliers and requantizes each skip to its concat's range. A value on a
    # rounding boundary lands one step off here and there; through 13 convolutions that is up
    # to a few steps of the logits (range about (-6, 6): 0.047 a step), and the sigmoid's slope
    # (up to 1/4) turns one logit step into up to 3 output steps (1/256 each). Measured: mean
    # 1-1.5, 99th percentile 6-7, max 9-14 output steps. Masks move only where p is near 0.5.
    error = np.abs(lite - keras_qat) * 256
    assert error.mean() <= 2.5, error.mean()
    assert np.quantile(error, 0.99) <= 10, np.quantile(error, 0.99)
    assert error.max() <= 24, error.max()
    assert (
        pixel_accuracy(masks_from_probabilities(lite), masks_from_probabilities(keras_qat)) >= 0.99
    )

    float_masks = masks_from_probabilities(float_model.predict(tiles, verbose=0))
    assert pixel_accuracy(masks_from_probabilities(lite), float_masks) >= 0.9


def test_activation_ranges_start_at_the_float_models() -> None:
    model = build_unet(preset("tiny"))
    tiles = list(np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype(np.float32))
    qat = prepare_qat(model)
    ranges = {w.name.split("/")[-1]: w for w in qat.get_layer("quant_enc1_relu_a").weights}
    assert float(ranges["output_min:0"].numpy()) == -6.0  # tfmot's start

    init_activation_ranges(qat, model, tiles)

    relu = keras.Model(model.inputs, model.get_layer("enc1_relu_a").output)(np.stack(tiles))
    assert float(ranges["output_min:0"].numpy()) == 0.0
    assert float(ranges["output_max:0"].numpy()) == pytest.approx(float(np.max(relu)))


def test_an_untrained_qat_model_is_not_converted() -> None:
    qat = prepare_qat(build_unet(preset("tiny")))
    assert qat_training_steps(qat) == 0
    with pytest.raises(UserError, match="no training step"):
        qat_tflite_int8(qat, 32)


def _pruned_by_hand(model: keras.Model, sparsity: float) -> keras.Model:
    """Each kernel's smallest weights zeroed: what `magnitude_prune` (tested on its own) gives."""
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name not in KEEP_DENSE:
            kernel, *rest = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), sparsity)] = 0.0
            layer.set_weights([kernel, *rest])
    return pruned


@pytest.mark.slow
def test_prune_preserving_qat_keeps_the_zeros(run: Run, float_model: keras.Model) -> None:
    pruned = _pruned_by_hand(float_model, 0.5)
    pruned_before = [w.copy() for w in pruned.get_weights()]

    qat = quantize_aware(pruned, run, epochs=1, steps_per_epoch=4, verbose=0)  # auto: preserve

    zeros_kept = _zeros_kept(pruned, qat)
    assert min(zeros_kept.values()) >= 0.95, zeros_kept
    assert sparsity_report(qat).sparsity >= 0.95 * sparsity_report(pruned).sparsity
    assert all(
        np.array_equal(a, b) for a, b in zip(pruned_before, pruned.get_weights(), strict=True)
    )
    # Plain QAT lets the pruned weights train back: most zeros are gone after a few steps.
    plain = quantize_aware(
        pruned, run, epochs=1, steps_per_epoch=4, preserve_sparsity=False, verbose=0
    )
    assert max(_zeros_kept(pruned, plain).values()) < 0.5


def _zeros_kept(pruned: keras.Model, qat: keras.Model) -> dict[str, float]:
    """Per pruned layer: the fraction of its zero weights that are still zero in the QAT model."""
    after = kernels(qat)
    return {
        name: float(np.mean(after[name][kernel == 0] == 0))
        for name, kernel in kernels(pruned).items()
        if name not in KEEP_DENSE
    }


def test_prune_preserving_qat_masks_transposed_convolutions() -> None:
    """tfmot's prune-preserving registry has no Conv2DTranspose rule: ours masks it as well."""
    model = build_unet(preset("tiny").replace(upsampling="transpose"), input_size=16)
    layer = model.get_layer("dec1_upconv")
    kernel, bias = layer.get_weights()
    kernel.flat[::2] = 0.0
    layer.set_weights([kernel, bias])

    qat = prepare_qat(model, preserve_sparsity=True)
    wrapped = qat.get_layer("quant_dec1_upconv").layer
    assert isinstance(wrapped, keras.layers.Conv2DTranspose)
    optimizer = keras.optimizers.SGD(1.0)
    x = tf.random.stateless_uniform((2, 16, 16, 1), seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(qat(x, training=True))
    optimizer.apply_gradients(
        zip(tape.gradient(loss, qat.trainable_variables), qat.trainable_variables, strict=True)
    )

    after = kernels(qat)["dec1_upconv"]
    assert np.all(after.flat[::2] == 0.0)
    assert not np.array_equal(after.flat[1::2], kernel.flat[1::2])  # the rest did train


@pytest.mark.parametrize("level, shown", [(logging.INFO, True), (logging.WARNING, False)])
def test_keras_epoch_lines_follow_the_verbosity(run, float_model, level, shown, caplog, capsys):
    """-q (the package's loggers at WARNING) hides Keras' per-epoch lines of the fine-tuning."""
    caplog.set_level(level, logger="optimize")
    quantize_aware(float_model, run, epochs=1, steps_per_epoch=1)
    assert ("val_dice" in capsys.readouterr().out) is shown
