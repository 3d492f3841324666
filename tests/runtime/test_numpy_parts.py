"""The numpy floor: pre-processing, metrics and overlap-tile stitching."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.metrics import dice, iou, masks_from_probabilities, pixel_accuracy, segmentation_scores
from runtime.preprocess import (
    Normalization,
    Preprocessing,
    measure_preprocessing,
    normalize,
    to_channels,
)
from runtime.tiling import predict_tiled, tile_starts


def test_normalize_scales_by_bit_depth_then_standardizes():
    prep = Preprocessing(channels=1, mean=0.5, std=0.25)
    eight = np.array([[0, 255]], np.uint8)
    sixteen = np.array([[0, 65535]], np.uint16)
    expected = np.array([[[-2.0], [2.0]]], np.float32)
    np.testing.assert_allclose(normalize(eight, prep), expected)
    np.testing.assert_allclose(normalize(sixteen, prep), expected)
    assert normalize(eight, prep).dtype == np.float32


def test_per_image_normalization_undoes_a_camera_gain_and_offset_per_channel():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.6, (40, 30, 3)).astype(np.float32)
    prep = Preprocessing(channels=3, mean=0.9, std=0.01, normalization=Normalization.IMAGE)
    out = normalize(image, prep)  # the recorded mean and std play no part
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, atol=1e-4)
    brighter = image * np.array([0.7, 1.1, 0.9], np.float32) + 0.15  # per channel
    np.testing.assert_allclose(normalize(brighter, prep), out, atol=1e-4)
    assert normalize(np.full((8, 8), 77, np.uint8), prep.replace(channels=1)).max() == 0.0
    assert (
        Preprocessing.from_dict({"channels": 1, "mean": 0.5, "std": 0.2}).normalization
        is Normalization.DATASET
    )


def test_channels_convert_both_ways_and_drop_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 100
    assert to_channels(rgba, 1).shape == (2, 2, 1)
    assert to_channels(rgba, 1)[0, 0, 0] == round(0.299 * 100)
    grey = np.full((2, 2), 7, np.uint8)
    assert to_channels(grey, 3).shape == (2, 2, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.array([[np.nan]], np.float32), "NaN"),
        (np.zeros((2, 2), np.int64), "unsupported pixel type"),
        (np.zeros((2, 2, 5), np.uint8), "not \\(H, W\\)"),
    ],
)
def test_bad_images_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message):
        normalize(bad, Preprocessing())


def test_measured_preprocessing_centres_the_training_pixels():
    rng = np.random.default_rng(0)
    images = [rng.integers(50, 150, (16, 16), np.uint8) for _ in range(3)]
    prep = measure_preprocessing(images, 1)
    pixels = np.concatenate([normalize(i, prep).ravel() for i in images])
    assert abs(pixels.mean()) < 1e-3 and abs(pixels.std() - 1) < 1e-3


def test_metrics_on_hand_counted_masks():
    pred = np.array([[1, 1, 0, 0]])
    true = np.array([[1, 0, 1, 0]])
    assert dice(pred, true) == pytest.approx(0.5)
    assert iou(pred, true) == pytest.approx(1 / 3)
    assert pixel_accuracy(pred, true) == pytest.approx(0.5)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0
    multi = segmentation_scores(np.array([1, 2, 2, 0]), np.array([1, 2, 1, 0]), classes=3)
    assert multi["dice"] == pytest.approx(2 * 2 / (3 + 3))
    probs = np.array([[[0.2], [0.7]]])
    np.testing.assert_array_equal(masks_from_probabilities(probs), [[0, 1]])


def test_tile_starts_cover_and_end_flush():
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    assert tile_starts(10, 16, 0) == [0]
    assert tile_starts(512, 256, 32) == [0, 128, 256]  # spread: the most overlap for 3 tiles
    assert tile_starts(160, 64, 24, align=16) == [0, 32, 64, 96]  # on the pooling grid
    assert tile_starts(100, 64, 8, align=16) == [0, 32, 36]  # off the grid: one more, flush
    with pytest.raises(ValueError):
        tile_starts(40, 8, 8)


@pytest.mark.parametrize(
    "size, in_size, out_size, overlap", [(50, 16, 16, 4), (37, 20, 12, 2), (9, 16, 16, 0)]
)
def test_tiled_prediction_of_a_local_operator_equals_the_whole_image(
    size, in_size, out_size, overlap
):
    """A 'model' that returns the centre of its tile (plus context) must be stitched back exactly."""
    rng = np.random.default_rng(0)
    image = rng.random((size, size + 3, 1)).astype(np.float32)
    context = (in_size - out_size) // 2

    def centre(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:3] == (in_size, in_size)
        return batch[:, context : context + out_size, context : context + out_size] * 2

    np.testing.assert_allclose(predict_tiled(image, centre, in_size, out_size, overlap), image * 2)
