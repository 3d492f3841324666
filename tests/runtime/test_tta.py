"""Test-time augmentation: the views are the flips and the 8 symmetries of the square, each
mapped back, on any image shape; run together or one by one, the result is the same."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import UserError
from runtime.tta import augmented, check_tta


def _position_model(batch: np.ndarray) -> np.ndarray:
    """Not equivariant at all: its output depends on where a pixel is and on its neighbours."""
    _, h, w, _ = batch.shape
    ramp = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1) / (h * w)
    right = np.roll(batch[..., :1], -1, axis=2)
    return 1 / (1 + np.exp(-(batch[..., :1] * 2 + right + ramp)))


def _d4_by_rotations(batch: np.ndarray) -> np.ndarray:
    """The mean over the 8 symmetries written independently: 4 rotations, of the image and of
    its mirror image."""
    outputs = []
    for mirrored in (False, True):
        x = batch[:, :, ::-1] if mirrored else batch
        for k in range(4):
            y = np.rot90(_position_model(np.rot90(x, k, axes=(1, 2)).copy()), -k, axes=(1, 2))
            outputs.append(y[:, :, ::-1] if mirrored else y)
    return np.mean(outputs, axis=0)


def _flipped_views_by_hand(batch: np.ndarray) -> list[np.ndarray]:
    return [
        _position_model(batch),
        _position_model(batch[:, ::-1].copy())[:, ::-1],
        _position_model(batch[:, :, ::-1].copy())[:, :, ::-1],
        _position_model(batch[:, ::-1, ::-1].copy())[:, ::-1, ::-1],
    ]


def _flips_by_hand(batch: np.ndarray) -> np.ndarray:
    return np.mean(_flipped_views_by_hand(batch), axis=0)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    batch=st.integers(1, 3),
    together=st.booleans(),
)
def test_views_are_the_symmetries_mapped_back(height, width, batch, together):
    rng = np.random.default_rng(height * 100 + width)
    x = rng.normal(size=(batch, height, width, 2)).astype(np.float32)
    d4 = augmented(_position_model, "d4", together)(x)
    flips = augmented(_position_model, "flips", together)(x)
    assert d4.shape == flips.shape == (batch, height, width, 1)
    np.testing.assert_allclose(d4, _d4_by_rotations(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flips, _flips_by_hand(x), rtol=1e-5, atol=1e-6)


def test_an_equivariant_model_is_unchanged_and_none_is_the_model_itself():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 1)).astype(np.float32)

    def pointwise(batch: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-batch))

    assert augmented(pointwise, "none", True) is pointwise
    for kind in ("flips", "d4"):
        np.testing.assert_allclose(augmented(pointwise, kind, True)(x), pointwise(x), rtol=1e-6)


def test_together_runs_each_orientation_as_one_batch():
    calls: list[tuple[int, ...]] = []

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch[..., :1]

    augmented(counting, "d4", together=True)(np.zeros((2, 4, 6, 1), np.float32))
    assert calls == [(8, 4, 6, 1), (8, 6, 4, 1)]
    calls.clear()
    augmented(counting, "flips", together=False)(np.zeros((2, 4, 6, 1), np.float32))
    assert calls == [(2, 4, 6, 1)] * 4


@pytest.mark.parametrize("together", [True, False])
def test_spread_appends_the_views_standard_deviation(together):
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 1)).astype(np.float32)
    out = augmented(_position_model, "flips", together, spread=True)(x)
    views = _flipped_views_by_hand(x)
    assert out.shape == (2, 5, 7, 2)
    np.testing.assert_allclose(out[..., :1], np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[..., 1:], np.std(views, axis=0), rtol=1e-4, atol=1e-5)
    assert out[..., 1].max() > 0.01  # the position model's views do disagree

    def softmax(batch: np.ndarray) -> np.ndarray:  # an equivariant 3-class model
        e = np.exp(np.concatenate([batch, -batch, batch**2], axis=-1))
        return e / e.sum(axis=-1, keepdims=True)

    same = augmented(softmax, "d4", together, spread=True)(x)
    assert same.shape == (2, 5, 7, 4)  # the 3 classes' mean, then one spread channel
    np.testing.assert_allclose(same[..., :3], softmax(x), rtol=1e-5)
    np.testing.assert_allclose(same[..., 3], 0, atol=1e-3)  # float32 cancellation of E[x^2]-E[x]^2


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(UserError, match="unknown tta 'd8': choose one of none, flips, d4"):
        check_tta("d8")
