"""The field's changes (train.augment.FIELD): each does what it names, on the image only."""

from __future__ import annotations

import numpy as np
import pytest

from train import augment
from train.tfk import tf

SEED = tf.constant([1, 2], tf.int64)


def _image(size: int = 48) -> tf.Tensor:
    """Stripes with sharp edges on a ramp: blur, resolution and gamma all show on it."""
    y, x = np.mgrid[:size, :size]
    stripes = (x % 2).astype(np.float32) + y / size  # 1 px stripes: finer than half resolution
    return tf.constant((stripes[..., None] - stripes.mean()).astype(np.float32))


def _edges(image: tf.Tensor) -> float:
    return float(tf.reduce_mean(tf.abs(image[:, 1:] - image[:, :-1])))


def test_blur_and_low_resolution_soften_edges_and_keep_the_mean():
    image = _image()
    for op, bounds in ((augment._blur, (1.5, 1.5)), (augment._low_resolution, (0.5, 0.5))):
        changed = op(image, SEED, bounds)
        assert changed.shape == image.shape
        assert _edges(changed) < 0.8 * _edges(image)
        assert float(tf.reduce_mean(changed)) == pytest.approx(
            float(tf.reduce_mean(image)), abs=0.05
        )


def test_blur_is_a_normalized_gaussian():
    impulse = np.zeros((25, 25, 1), np.float32)
    impulse[12, 12] = 1.0
    blurred = augment._blur(tf.constant(impulse), SEED, (1.0, 1.0)).numpy()[..., 0]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    row = blurred[12, 12:15] / blurred[12, 12]
    np.testing.assert_allclose(row, np.exp(-0.5 * np.arange(3) ** 2), rtol=1e-4)


def test_noise_adds_the_asked_std_and_contrast_scales_about_the_mean():
    flat = tf.zeros((200, 200, 1))
    noisy = augment._noise(flat, SEED, (0.3, 0.3))
    assert float(tf.math.reduce_std(noisy)) == pytest.approx(0.3, rel=0.03)
    image = _image()
    half = augment._contrast(image, SEED, (0.5, 0.5))
    mean = tf.reduce_mean(image)
    np.testing.assert_allclose(half.numpy(), ((image - mean) * 0.5 + mean).numpy(), atol=1e-6)


def test_gamma_keeps_the_range_and_bends_the_middle():
    image = tf.constant(np.linspace(-1.0, 3.0, 101, dtype=np.float32).reshape(101, 1, 1))
    bent = augment._gamma(image, SEED, (2.0, 2.0)).numpy().ravel()
    assert bent[0] == pytest.approx(-1.0) and bent[-1] == pytest.approx(3.0)
    assert bent[50] == pytest.approx(-1.0 + 4.0 * 0.5**2, abs=1e-5)  # the midpoint, squared


def test_field_changes_are_repeatable_and_each_happens_now_and_then():
    image = _image()
    same = [augment.field_changes(image, tf.constant([s, 0], tf.int64)).numpy() for s in (3, 3)]
    np.testing.assert_array_equal(*same)
    changed = [
        not np.array_equal(
            augment.field_changes(image, tf.constant([s, 7], tf.int64)).numpy(), image
        )
        for s in range(60)
    ]
    # Untouched only when no change fires: (0.85 * 0.8 * 0.85 * 0.75 * 0.7) = 30% of crops.
    assert 0.5 < np.mean(changed) < 0.9
