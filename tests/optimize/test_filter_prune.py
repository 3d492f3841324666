"""Filter pruning: exact weight surgery through skips and concatenations, widths, MAC counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optimize.filter_prune import (
    choose_filters,
    count_macs,
    filter_prune,
    filter_scores,
    keep_ratio_for_macs,
)
from runtime.errors import UserError
from train.config import ModelConfig, preset
from train.model import build_unet, valid_input_sizes_near
from train.tfk import keras

TINY = preset("tiny")  # base 4, depth 2, batch norm, 'same', nearest, no dropout
DEEPER = ModelConfig(base_filters=8, depth=3)  # with dropout layers before the deepest skip


@dataclasses.dataclass(frozen=True)
class Case:
    config: ModelConfig
    wish: int | None  # the input side; None builds an any-size 'same' model, run at 32
    keep_ratio: float | dict[str, float]
    criterion: str

    @property
    def size(self) -> int | None:
        if self.config.padding == "valid":
            return valid_input_sizes_near(self.config, self.wish)[0]
        return self.wish

    @property
    def run_size(self) -> int:
        return self.size or 32


CASES = {
    "tiny-same-nearest-bn": Case(TINY, 32, 0.5, "bn"),
    "tiny-valid-transpose-bn": Case(
        TINY.replace(padding="valid", upsampling="transpose"), 44, 0.5, "l1"
    ),
    "tiny-same-transpose-nobn": Case(
        TINY.replace(upsampling="transpose", batch_norm=False), 32, 0.5, "l1"
    ),
    "tiny-valid-nearest-nobn": Case(TINY.replace(padding="valid", batch_norm=False), 44, 0.3, "l1"),
    "deeper-anysize-nearest-bn": Case(
        DEEPER, None, {"enc1": 0.5, "enc3": 0.25, "bottleneck": 0.4, "dec2": 0.75}, "bn"
    ),
    "tiny-patch2-anysize-nearest-bn": Case(TINY.replace(patch=2), None, 0.5, "l1"),
    "deeper-valid-transpose-nobn": Case(
        DEEPER.replace(padding="valid", upsampling="transpose", batch_norm=False), 68, 0.6, "l1"
    ),
}


def _is_transposed(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Conv2DTranspose)


def _randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random kernels, biases and batch norm statistics, so that every weight matters.

    The gains are high enough that half the filters silenced still leave a signal that
    varies over the image, so the exactness test compares more than constant offsets.
    """
    rng = np.random.default_rng(seed)
    # Without batch norm, a gain a little above He's (2) makes up for the silenced filters.
    gain = 2.0 if any(isinstance(x, keras.layers.BatchNormalization) for x in model.layers) else 3.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c)
            stats = [gamma, rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.4, 1.0, c)]
            layer.set_weights([s.astype(np.float32) for s in stats])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, *bias = layer.get_weights()
            fan_in = kernel.size / kernel.shape[2 if _is_transposed(layer) else 3]
            new = [rng.normal(0, np.sqrt(gain / fan_in), kernel.shape)]
            new += [rng.normal(0, 0.05, b.shape) for b in bias]
            layer.set_weights([w.astype(np.float32) for w in new])
    return model


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request) -> tuple[Case, keras.Model]:
    case = CASES[request.param]
    return case, _randomize(build_unet(case.config, case.size))


def _image(case: Case, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = case.run_size
    return rng.normal(size=(2, side, side, case.config.channels)).astype(np.float32)


def _head_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The features that the head sees: unlike the sigmoid output, they never saturate."""
    probe = keras.Model(model.input, model.get_layer("head").input)
    return probe(x, training=False).numpy()


def _masked(model: keras.Model, kept: dict[str, np.ndarray]) -> keras.Model:
    """A copy of `model` whose removed filters output exactly 0 (the thin model's reference)."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    names = {layer.name for layer in masked.layers}
    for name, keep in kept.items():
        conv = masked.get_layer(name)
        drop = np.setdiff1d(np.arange(conv.filters), keep)
        norm = name.replace("_conv_", "_bn_")
        if norm != name and norm in names:  # gamma = beta = 0: batch norm outputs 0, ReLU too
            gamma, beta, mean, variance = masked.get_layer(norm).get_weights()
            gamma[drop], beta[drop] = 0, 0
            masked.get_layer(norm).set_weights([gamma, beta, mean, variance])
        else:  # no batch norm after it: a zero kernel slice and bias give 0
            kernel, bias = conv.get_weights()
            index = [slice(None)] * 4
            index[2 if _is_transposed(conv) else 3] = drop
            kernel[tuple(index)], bias[drop] = 0, 0
            conv.set_weights([kernel, bias])
    return masked


def test_thin_model_is_functional_with_the_chosen_widths(case):
    case, model = case
    thin, widths = filter_prune(model, case.config, case.size, case.keep_ratio, case.criterion)
    assert type(thin).__name__ == "Functional"
    assert [layer.name for layer in thin.layers] == [layer.name for layer in model.layers]
    kept = choose_filters(filter_scores(model, case.criterion), case.keep_ratio)
    assert widths == {name: len(keep) for name, keep in kept.items()}
    for name, filters in widths.items():
        assert thin.get_layer(name).filters == filters, name
    assert thin.get_layer("head").filters == case.config.classes
    assert thin.count_params() < model.count_params()


def test_tiny_widths_at_half_and_at_three_tenths_are_rounded_halves_of_4_8_16():
    model = build_unet(TINY, 32)
    _, half = filter_prune(model, TINY, 32, 0.5)
    _, low = filter_prune(model, TINY, 32, 0.3)  # 1.2 -> 1, 2.4 -> 2, 4.8 -> 5
    for block, full in {"enc1": 4, "enc2": 8, "bottleneck": 16, "dec2": 8, "dec1": 4}.items():
        for conv in ("conv_a", "conv_b"):
            assert half[f"{block}_{conv}"] == full // 2
            assert low[f"{block}_{conv}"] == {4: 1, 8: 2, 16: 5}[full]
    assert half["dec2_upconv"] == 4 and half["dec1_upconv"] == 2
    assert sorted(half) == sorted(low) and len(half) == 5 * 2 + 2  # the head is never pruned


def test_keep_ratio_one_gives_back_the_same_model(case):
    case, model = case
    thin, widths = filter_prune(model, case.config, case.size, 1.0, case.criterion)
    assert all(thin.get_layer(name).filters == model.get_layer(name).filters for name in widths)
    x = _image(case)
    np.testing.assert_allclose(thin(x, training=False), model(x, training=False), atol=1e-5)


def test_thin_model_computes_exactly_the_original_with_removed_filters_silenced(case):
    """Proves the surgery: input channels follow what each producer kept, through the crops,
    dropouts, poolings, up-samplings and the [skip, up-convolution] concatenations."""
    case, model = case
    kept = choose_filters(filter_scores(model, case.criterion), case.keep_ratio)
    thin, _ = filter_prune(model, case.config, case.size, case.keep_ratio, case.criterion)
    masked = _masked(model, kept)
    x = _image(case)
    want = _head_input(masked, x)
    scale = float(np.abs(want).max())
    # 1e-4 of the features' scale covers float32 sums taken in a different order.
    np.testing.assert_allclose(
        _head_input(thin, x), want[..., kept["dec1_conv_b"]], rtol=1e-4, atol=1e-4 * scale
    )
    np.testing.assert_allclose(thin(x, training=False), masked(x, training=False), atol=1e-4)
    # Not trivial: the features vary over the image, and the removed filters did matter.
    assert want.std(axis=(1, 2)).max() > 0.01 * scale
    assert np.abs(_head_input(model, x) - want).max() > 0.05 * scale


def test_scores_are_l1_norms_per_output_filter_or_batch_norm_gammas():
    model = _randomize(build_unet(TINY.replace(upsampling="transpose"), 32))
    l1, bn = filter_scores(model, "l1"), filter_scores(model, "bn")
    kernel = model.get_layer("enc2_conv_b").get_weights()[0]  # (3, 3, in, out)
    np.testing.assert_allclose(l1["enc2_conv_b"], np.abs(kernel).sum(axis=(0, 1, 2)), rtol=1e-6)
    upconv = model.get_layer("dec1_upconv").get_weights()[0]  # transposed: (2, 2, out, in)
    assert l1["dec1_upconv"].shape == (4,)
    np.testing.assert_allclose(l1["dec1_upconv"], np.abs(upconv).sum(axis=(0, 1, 3)), rtol=1e-6)
    gamma = model.get_layer("enc2_bn_b").get_weights()[0]
    np.testing.assert_allclose(bn["enc2_conv_b"], np.abs(gamma))
    np.testing.assert_allclose(bn["dec1_upconv"], l1["dec1_upconv"])  # no batch norm after it
    assert "head" not in l1


def test_choose_keeps_the_highest_scores_sorted_globally_or_per_level():
    scores = {"enc1_conv_a": np.array([0.1, 0.5, 0.3, 0.9]), "dec1_upconv": np.array([3, 1, 2])}
    kept = choose_filters(scores, 0.5)
    assert kept["enc1_conv_a"].tolist() == [1, 3] and kept["dec1_upconv"].tolist() == [0, 2]
    kept = choose_filters(scores, {"enc1": 0.25})
    assert kept["enc1_conv_a"].tolist() == [3] and kept["dec1_upconv"].tolist() == [0, 1, 2]
    assert choose_filters(scores, 0.01)["enc1_conv_a"].tolist() == [3]  # at least one filter


def test_count_macs_matches_a_hand_count_of_the_tiny_unet():
    k = 3 * 3
    same_side = 32
    encoder = 32 * 32 * (1 * k * 4 + 4 * k * 4) + 16 * 16 * (4 * k * 8 + 8 * k * 8)
    bottleneck = 8 * 8 * (8 * k * 16 + 16 * k * 16)
    # nearest: up-sample, then a 2x2 convolution at the larger side
    upconvs_nearest = 16 * 16 * 16 * 4 * 8 + 32 * 32 * 8 * 4 * 4
    # transposed: each input pixel spreads over 2x2 outputs
    upconvs_transpose = 8 * 8 * 16 * 4 * 8 + 16 * 16 * 8 * 4 * 4
    decoder = 16 * 16 * ((8 + 8) * k * 8 + 8 * k * 8) + 32 * 32 * ((4 + 4) * k * 4 + 4 * k * 4)
    head = 32 * 32 * 4 * 1 * 1
    convs = encoder + bottleneck + decoder + head
    assert count_macs(build_unet(TINY, same_side), 32) == convs + upconvs_nearest
    transpose = build_unet(TINY.replace(upsampling="transpose"))  # any size
    assert count_macs(transpose, 32) == convs + upconvs_transpose
    assert count_macs(transpose, 64) == 4 * (convs + upconvs_transpose)


def test_count_macs_of_a_patch_unet_is_the_body_at_half_side_plus_stem_and_head():
    k = 3 * 3
    body = build_unet(TINY)  # the same levels, fed 1 channel at 32 px
    patched = build_unet(TINY.replace(patch=2))
    stem = 32 * 32 * 4 * (2 * 2 * 1)  # each 2x2 patch of the 64 px image, into 4 filters
    enc1_a = 32 * 32 * 4 * k * (4 - 1)  # reads the stem's 4 channels, not 1
    head = 32 * 32 * 4 * 1 * (2 * 2 - 1)  # each pixel of a patch its own 1x1 weights
    assert count_macs(patched, 64) == count_macs(body, 32) + stem + enc1_a + head


def test_count_macs_of_a_valid_unet_counts_its_shrinking_maps():
    config = TINY.replace(padding="valid", batch_norm=False)
    size = valid_input_sizes_near(config, 44)[0]  # 44 -> enc1 40, enc2 16, bottleneck 4
    assert size == 44
    k = 3 * 3
    encoder = (42 * 42 * 1 * k * 4 + 40 * 40 * 4 * k * 4) + (
        18 * 18 * 4 * k * 8 + 16 * 16 * 8 * k * 8
    )
    bottleneck = 6 * 6 * 8 * k * 16 + 4 * 4 * 16 * k * 16
    upconvs = 8 * 8 * 16 * 4 * 8 + 8 * 8 * 8 * 4 * 4  # nearest: 4 -> 8, then dec2 8 -> 4 -> 8
    decoder = (6 * 6 * 16 * k * 8 + 4 * 4 * 8 * k * 8) + (6 * 6 * 8 * k * 4 + 4 * 4 * 4 * k * 4)
    head = 4 * 4 * 4
    assert (
        count_macs(build_unet(config, size), size)
        == encoder + bottleneck + upconvs + decoder + head
    )


def test_keep_ratio_for_half_the_macs_gives_between_40_and_50_percent():
    model = build_unet(DEEPER, 32)
    ratio = keep_ratio_for_macs(model, DEEPER, 32, 0.5)
    thin, _ = filter_prune(model, DEEPER, 32, ratio)
    fraction = count_macs(thin, 32) / count_macs(model, 32)
    assert 0.4 < fraction <= 0.5
    assert 0.6 < ratio < 0.8  # MACs scale about with the square of the ratio
    assert keep_ratio_for_macs(model, DEEPER, 32, 1.0) == 1.0


@pytest.mark.parametrize(
    "keep_ratio", [0, 1.5, -0.1, float("nan"), "half", True, {"enc1": 0}, {"enc9": 0.5}]
)
def test_bad_keep_ratios_are_user_errors(keep_ratio):
    scores = {"enc1_conv_a": np.ones(4), "bottleneck_conv_a": np.ones(8)}
    with pytest.raises(UserError, match="keep ratio"):
        choose_filters(scores, keep_ratio)


def test_bad_criteria_fractions_sizes_and_configs_are_user_errors():
    no_bn = build_unet(TINY.replace(batch_norm=False), 32)
    with pytest.raises(UserError, match=r"criterion 'bn' needs batch norm.*use criterion 'l1'"):
        filter_scores(no_bn, "bn")
    with pytest.raises(UserError, match="criterion 'bn' needs batch norm"):
        filter_prune(no_bn, TINY.replace(batch_norm=False), 32, 0.5, "bn")
    with pytest.raises(UserError, match="unknown criterion 'l2'"):
        filter_scores(no_bn, "l2")
    for fraction in (0, 1.5):
        with pytest.raises(UserError, match="target MAC fraction"):
            keep_ratio_for_macs(no_bn, TINY, 32, fraction)
    with pytest.raises(UserError, match="takes 32x32 inputs, not 64"):
        count_macs(no_bn, 64)
    with pytest.raises(UserError, match="does not match the model config"):
        filter_prune(no_bn, TINY.replace(batch_norm=False, upsampling="transpose"), 32, 0.5)
