"""The tf.data pipeline: the runtime's numpy pre-processing, crop geometry, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.preprocess import Preprocessing, normalize
from train.augment import elastic, flip_and_rotate
from train.config import TrainConfig
from train.data import Sample
from train.pipeline import FOREGROUND_POINTS, foreground_points, train_dataset, validation_tiles
from train.tfk import tf

PREP = Preprocessing(channels=1, mean=0.4, std=0.2)


def _samples(count: int = 2, size: int = 40) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        Sample(
            str(i),
            rng.integers(0, 256, (size, size), np.uint8),
            rng.integers(0, 2, (size, size), np.uint8),
        )
        for i in range(count)
    ]


def test_validation_tiles_are_exactly_the_runtime_preprocessing():
    samples = _samples(1)
    images, masks = validation_tiles(samples, PREP, 32, 32)
    expected = normalize(samples[0].image, PREP)
    assert images.shape == (4, 32, 32, 1)  # starts 0 and 8 on each axis cover 40 pixels
    np.testing.assert_array_equal(images[0], expected[:32, :32])
    np.testing.assert_array_equal(images[3], expected[8:, 8:])
    np.testing.assert_array_equal(masks[3, ..., 0], samples[0].mask[8:, 8:])


def test_unaugmented_training_crops_are_crops_of_the_preprocessed_image():
    samples = _samples(1)
    config = TrainConfig(
        input_size=16, batch_size=2, augment=False, elastic=False, field_augment=False
    )
    images, masks = next(iter(train_dataset(samples, PREP, config, 16, 2)))
    full = normalize(samples[0].image, PREP)[..., 0]
    for image, mask in zip(images.numpy(), masks.numpy(), strict=True):
        hits = [
            (y, x)
            for y in range(25)
            for x in range(25)
            if np.array_equal(full[y : y + 16, x : x + 16], image[..., 0])
        ]
        assert hits, "crop not found in the normalized image"
        y, x = hits[0]
        np.testing.assert_array_equal(mask[..., 0], samples[0].mask[y : y + 16, x : x + 16])


def test_valid_padding_batches_pair_each_mask_with_the_centre_of_its_image():
    samples = _samples(2)
    config = TrainConfig(input_size=28, batch_size=4, augment=False, elastic=False)
    images, masks = next(iter(train_dataset(samples, PREP, config, 12, 4)))
    assert images.shape == (4, 28, 28, 1) and masks.shape == (4, 12, 12, 1)
    images_b, _ = next(iter(train_dataset(samples, PREP, config, 12, 4)))
    np.testing.assert_array_equal(images.numpy(), images_b.numpy())  # seeded: repeatable


@pytest.mark.parametrize("out", [24, 16])
def test_geometric_augmentation_moves_image_and_mask_together(out):
    """A mask drawn from the image itself must still match it after flips, turns and warps."""
    rng = np.random.default_rng(2)
    base = (rng.random((24, 24)) > 0.5).astype(np.float32)
    image = tf.constant(base[..., None])
    context = (24 - out) // 2
    mask = tf.constant(
        base[context : context + out, context : context + out, None].astype(np.uint8)
    )
    for seed in range(6):
        img, msk = flip_and_rotate(image, mask, tf.constant([seed, 1]))
        inner = img.numpy()[context : context + out, context : context + out, 0]
        assert msk.dtype == tf.uint8
        np.testing.assert_array_equal(inner, msk.numpy()[..., 0])
        img, msk = elastic(image, mask, tf.constant([seed, 2]))
        assert set(np.unique(msk.numpy())) <= {0, 1}
        inner = img.numpy()[context : context + out, context : context + out, 0]
        # bilinear image vs nearest mask: they agree wherever the warp lands near a pixel centre
        assert np.mean((inner > 0.5) == (msk.numpy()[..., 0] > 0)) > 0.8


def _rare_samples(count: int = 4, size: int = 200) -> list[Sample]:
    """Images with one 3x3 object each: 0.02% of the pixels, like a pit on a large tile."""
    rng = np.random.default_rng(2)
    samples = []
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 3, 2)
        mask[y : y + 3, x : x + 3] = 1
        samples.append(Sample(str(i), rng.integers(0, 256, (size, size), np.uint8), mask))
    return samples


def _crops_with_foreground(samples: list[Sample], share: float, batches: int = 4) -> float:
    config = TrainConfig(
        input_size=32, batch_size=16, augment=False, elastic=False, foreground_crops=share
    )
    dataset = train_dataset(samples, PREP, config, 32, 16).take(batches)
    found = [mask.numpy().reshape(16, -1).any(axis=1) for _, mask in dataset]
    return float(np.mean(np.concatenate(found)))


def test_foreground_crops_hold_foreground_in_the_share_asked_for():
    samples = _rare_samples()
    # Uniform 32 px crops of a 200 px image meet a 3x3 object about (34/200)**2 = 3% of the time.
    assert _crops_with_foreground(samples, 0.0) < 0.15
    assert _crops_with_foreground(samples, 1.0) == 1.0
    assert 0.2 < _crops_with_foreground(samples, 0.5, batches=8) < 0.8


def test_foreground_crops_fall_back_to_uniform_on_images_without_foreground():
    samples = [Sample("empty", s.image, np.zeros_like(s.mask)) for s in _rare_samples(2)]
    assert _crops_with_foreground(samples, 1.0) == 0.0  # no error, uniform crops


def test_foreground_points_are_a_bounded_repeatable_draw_of_the_mask():
    mask = np.zeros((300, 300), np.uint8)
    mask[100:200, 50:150] = 1  # 10,000 pixels
    points = foreground_points(mask, seed=3)
    assert points.shape == (FOREGROUND_POINTS, 2) and mask[points[:, 0], points[:, 1]].all()
    np.testing.assert_array_equal(points, foreground_points(mask, seed=3))
    assert foreground_points(np.zeros((5, 5), np.uint8), 0).shape == (0, 2)
