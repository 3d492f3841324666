"""The embedded synthetic EM dataset: reproducible, shaped as asked, and EM-like in its labels."""

from __future__ import annotations

import numpy as np
import pytest

from train.data.synthetic import _two_nearest, generate_em


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    return generate_em(6, 128, seed=3)


def test_the_same_arguments_give_identical_arrays(batch):
    images, masks = generate_em(6, 128, seed=3)
    np.testing.assert_array_equal(images, batch[0])
    np.testing.assert_array_equal(masks, batch[1])


def test_different_seeds_give_different_images_and_masks():
    images_a, masks_a = generate_em(1, 64, seed=0)
    images_b, masks_b = generate_em(1, 64, seed=1)
    assert not np.array_equal(images_a, images_b)
    assert not np.array_equal(masks_a, masks_b)


def test_images_within_one_call_differ(batch):
    images, masks = batch
    assert not np.array_equal(images[0], images[1])
    assert not np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize(
    "size, shape", [(16, (16, 16)), (40, (40, 40)), ((48, 80), (48, 80)), ((70, 33), (70, 33))]
)
def test_shapes_and_dtypes_for_square_and_rectangular_sizes(size, shape):
    images, masks = generate_em(2, size, seed=1)
    assert images.shape == masks.shape == (2, *shape)
    assert images.dtype == masks.dtype == np.uint8


def test_numpy_integers_are_accepted():
    images, _ = generate_em(np.int64(1), (np.int32(20), 24), seed=np.uint8(2))
    assert images.shape == (1, 20, 24)


def test_image_i_does_not_depend_on_count():
    few_images, few_masks = generate_em(2, (40, 56), seed=9)
    many_images, many_masks = generate_em(4, (40, 56), seed=9)
    np.testing.assert_array_equal(few_images, many_images[:2])
    np.testing.assert_array_equal(few_masks, many_masks[:2])


def test_masks_are_strictly_binary_with_both_classes(batch):
    for mask in batch[1]:
        assert set(np.unique(mask).tolist()) == {0, 1}


def test_membrane_fraction_is_in_an_em_like_band(batch):
    fractions = batch[1].mean(axis=(1, 2))
    assert np.all((fractions > 0.08) & (fractions < 0.40)), fractions


def test_membranes_are_clearly_darker_than_interiors(batch):
    for image, mask in zip(*batch, strict=True):
        membrane = image[mask == 1].mean()
        interior = image[mask == 0].mean()
        assert interior - membrane > 20, (interior, membrane)


def test_interiors_are_textured_not_flat(batch):
    # Organelles, grain and shading: a model cannot just threshold a flat interior.
    for image, mask in zip(*batch, strict=True):
        assert image[mask == 0].std() > 10


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 64), "count must be at least 1"),
        ((-3, 64), "count must be at least 1"),
        ((1.5, 64), "count must be an integer"),
        ((1, 15), "too small"),
        ((1, (64, 8)), "too small"),
        ((1, (64, 64, 3)), r"\(height, width\)"),
        ((1, 64.0), "size must be an integer"),
        ((1, 64, -1), "seed must be non-negative"),
    ],
)
def test_bad_arguments_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        generate_em(*args)


def test_tiled_two_nearest_search_matches_brute_force():
    # The tile pruning must be exact: the mask is defined by these distances.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :64].astype(np.float32)
    px = xx + 3 * np.sin(yy / 7).astype(np.float32)
    py = yy + 3 * np.cos(xx / 9).astype(np.float32)
    sx = rng.uniform(-10, 74, 40).astype(np.float32)
    sy = rng.uniform(-10, 58, 40).astype(np.float32)
    weight = rng.uniform(0, 4, 40).astype(np.float32)
    d1, d2, nearest = _two_nearest(px, py, sx, sy, weight)
    dist = np.hypot(px[..., None] - sx, py[..., None] - sy) - weight
    ordered = np.sort(dist, axis=-1)
    np.testing.assert_allclose(d1, ordered[..., 0], atol=1e-4)
    np.testing.assert_allclose(d2, ordered[..., 1], atol=1e-4)
    np.testing.assert_array_equal(nearest, dist.argmin(axis=-1))
