"""The U-Net builder: sizes for both paddings, the paper's parameter count, names, heads."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import UserError
from train.config import ModelConfig, preset
from train.model import build_unet, checked_output_size, output_size, valid_input_sizes_near
from train.tfk import keras

TINY = preset("tiny")


def test_paper_unet_has_the_papers_parameter_count_and_output_size():
    config = ModelConfig(classes=2, batch_norm=False, padding="valid")
    model = build_unet(config, 572)
    assert model.count_params() == 31_030_658
    assert model.output_shape == (None, 388, 388, 2)
    assert output_size(config, 572) == 388


@pytest.mark.parametrize("upsampling", ["nearest", "transpose"])
def test_same_padding_keeps_the_input_size_for_any_multiple(upsampling):
    model = build_unet(TINY.replace(upsampling=upsampling))
    for side in (32, 48):
        out = model(np.zeros((1, side, side, 1), np.float32), training=False)
        assert out.shape == (1, side, side, 1)


def test_valid_padding_crops_skips_and_shrinks_the_output():
    config = TINY.replace(padding="valid")
    size = valid_input_sizes_near(config, 60)[0]
    model = build_unet(config, size)
    expected = output_size(config, size)
    assert model.output_shape == (None, expected, expected, 1)
    assert expected < size
    assert any(isinstance(layer, keras.layers.Cropping2D) for layer in model.layers)


def test_valid_sizes_near_a_wish_are_valid_and_a_bad_size_names_them():
    config = ModelConfig(padding="valid")
    assert valid_input_sizes_near(config, 570) == [556, 572]
    with pytest.raises(UserError, match="use 556 or 572"):
        checked_output_size(config, 570)
    with pytest.raises(UserError, match="use 240 or 256"):
        checked_output_size(ModelConfig(), 250)


def test_heads_match_the_class_count():
    sigmoid = build_unet(TINY, 32)
    softmax = build_unet(TINY.replace(classes=3), 32)
    assert sigmoid.get_layer("head").activation.__name__ == "sigmoid"
    assert softmax.get_layer("head").activation.__name__ == "softmax"
    probs = softmax(np.random.default_rng(0).normal(size=(1, 32, 32, 1)).astype(np.float32))
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, atol=1e-5)


def test_model_is_functional_with_fixed_meaningful_names_and_builtin_layers():
    model = build_unet(preset("small"), 64)
    names = {layer.name for layer in model.layers}
    assert {"enc1_conv_a", "enc4_dropout", "bottleneck_dropout", "dec1_concat", "head"} <= names
    assert type(model).__name__ == "Functional"
    for layer in model.layers:
        assert type(layer).__module__.startswith("tf_keras"), layer.name
        assert not isinstance(layer, keras.layers.Lambda)


def test_a_patch_model_takes_multiples_of_its_grid_and_needs_same_padding():
    config = TINY.replace(patch=2)
    assert config.size_multiple == 8 and TINY.size_multiple == 4
    assert valid_input_sizes_near(config, 36) == [32, 40]
    assert output_size(config, 40) == 40
    for patch, side in ((2, 24), (4, 48)):
        model = build_unet(TINY.replace(patch=patch))
        assert model.get_layer("stem").strides == (patch, patch)
        assert isinstance(model.get_layer("head"), keras.layers.Conv2DTranspose)
        out = model(np.zeros((1, side, side, 1), np.float32), training=False)
        assert out.shape == (1, side, side, 1)
    with pytest.raises(UserError, match="patch must be 1, 2 or 4"):
        TINY.replace(patch=3)
    with pytest.raises(UserError, match="needs padding 'same'"):
        TINY.replace(patch=2, padding="valid")


def test_batch_norm_switch_and_momentum():
    with_bn = build_unet(TINY, 32)
    without = build_unet(TINY.replace(batch_norm=False), 32)
    assert with_bn.get_layer("enc1_bn_a").momentum == pytest.approx(0.9)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in without.layers)
    assert (
        without.get_layer("enc1_conv_a").use_bias and not with_bn.get_layer("enc1_conv_a").use_bias
    )
