"""The calibrated threshold: the best Dice within the candidates, 0.5 on a tie, any data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optimize.threshold import CANDIDATES, TIE, choose_threshold
from runtime.metrics import dice, masks_from_probabilities


def _images(seed: int, count: int, shift: float) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        h, w = rng.integers(3, 40, 2)
        truth = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        noisy = np.clip(truth * 0.6 + rng.normal(shift, 0.25, (h, w)), 0, 1)
        pairs.append((noisy[..., None].astype(np.float32), truth))
    return pairs


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 4), shift=st.floats(0.0, 0.4))
def test_the_choice_is_the_best_candidate_and_never_worse_than_half(seed, count, shift):
    images = _images(seed, count, shift)
    choice = choose_threshold(iter(images))

    def pooled_dice(threshold: float) -> float:
        masks = [masks_from_probabilities(p, threshold).ravel() for p, _ in images]
        truth = [t.ravel() for _, t in images]
        return dice(np.concatenate(masks), np.concatenate(truth))

    scores = {t: pooled_dice(t) for t in CANDIDATES}
    assert choice.threshold in CANDIDATES and choice.images == count
    assert np.isclose(choice.dice, scores[choice.threshold])
    assert np.isclose(choice.dice_at_default, scores[0.5])
    assert choice.dice >= choice.dice_at_default
    assert choice.dice >= max(scores.values()) - TIE
    closer = [t for t in CANDIDATES if abs(t - 0.5) < abs(choice.threshold - 0.5)]
    assert all(scores[t] < max(scores.values()) - TIE for t in closer)


def test_a_model_whose_boundary_is_at_0_7_gets_0_7():
    probabilities = np.linspace(0, 1, 1001, dtype=np.float32).reshape(1, -1, 1)
    truth = (probabilities[..., 0] >= 0.7).astype(np.uint8)
    choice = choose_threshold([(probabilities, truth)])
    assert (choice.threshold, choice.dice) == (0.7, 1.0) and choice.dice_at_default < 0.9


def test_certain_probabilities_keep_0_5():
    truth = np.array([[0, 1, 1, 0]], np.uint8)
    choice = choose_threshold([(truth[..., None].astype(np.float32), truth)])
    assert choice.threshold == 0.5 and choice.dice == choice.dice_at_default == 1.0
