"""The data's fingerprint and the recipe it chooses; the trivial segmenters' floor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtime.preprocess import Normalization
from train import fingerprint, usefulness
from train.config import Loss, ModelConfig, TrainConfig
from train.data import Sample

SMALL = ModelConfig(base_filters=16)


def _sample(name: str, shape: tuple[int, int], boxes: list[tuple[int, int, int]]) -> Sample:
    """A grey image with square objects (y, x, side) marked in the mask."""
    mask = np.zeros(shape, np.uint8)
    for y, x, side in boxes:
        mask[y : y + side, x : x + side] = 1
    image = (60 + 120 * mask).astype(np.uint8)
    return Sample(name, image, mask)


def test_rare_small_objects_get_the_rare_object_recipe():
    samples = [_sample(str(i), (200, 300 + 20 * i), [(10, 10, 4), (100, 200, 6)]) for i in range(5)]
    samples.append(_sample("empty", (120, 160), []))
    print_ = fingerprint.measure(samples, channels=1)
    assert (print_.images, print_.min_side, print_.max_side) == (6, 120, 380)
    assert print_.median_short_side == 200 and print_.objects == 10
    assert print_.foreground_share == pytest.approx(
        5 * 52 / sum(s.mask.size for s in samples), abs=1e-6
    )
    assert print_.images_with_foreground == pytest.approx(5 / 6, abs=1e-4)
    # Equivalent diameters of 4x4 and 6x6 squares: sqrt(4 * 16 / pi) and sqrt(4 * 36 / pi).
    assert print_.median_object_diameter == pytest.approx(
        np.median([np.sqrt(64 / np.pi), np.sqrt(144 / np.pi)]), abs=0.01
    )
    plan = fingerprint.plan(print_, SMALL, TrainConfig(input_size=0))
    assert plan.loss is Loss.BATCH_DICE and plan.foreground_crops == pytest.approx(1 / 3, abs=1e-4)
    assert plan.input_size == 192  # the median shorter side 200, down to a multiple of 16
    line = fingerprint.describe(print_, plan)
    assert (
        "foreground 0.07% of the pixels" in line
        and "rare foreground" in line
        and "batch_dice" in line
        and "crops 192 px" in line
    )


def test_common_foreground_keeps_the_recipe_measured_on_isbi():
    samples = [_sample(str(i), (512, 512), [(0, 0, 200)]) for i in range(3)]  # 15% foreground
    print_ = fingerprint.measure(samples, channels=1)
    plan = fingerprint.plan(print_, SMALL, TrainConfig(input_size=0))
    assert (plan.loss, plan.foreground_crops, plan.input_size) == (Loss.BCE_DICE, 0.0, 256)
    assert fingerprint.plan(print_, ModelConfig(classes=3), TrainConfig()).loss is Loss.CE_DICE


def test_flags_override_every_choice():
    print_ = fingerprint.measure([_sample("a", (100, 100), [(0, 0, 2)])] * 2, channels=1)
    given = TrainConfig(input_size=128, foreground_crops=0.0, loss=Loss.TVERSKY)
    plan = fingerprint.plan(print_, SMALL, given)
    assert (plan.input_size, plan.foreground_crops, plan.loss) == (128, 0.0, Loss.TVERSKY)
    assert fingerprint.planned(given, plan) == given


def _threshold_dice_by_brute_force(pairs) -> float:
    """Every distinct grey level as a threshold, both sides: an independent count."""
    grey = np.concatenate([i[..., 0].ravel() for i, _ in pairs])
    truth = np.concatenate([m.ravel() > 0 for _, m in pairs])
    best = 0.0
    for level, bright in itertools.product(np.unique(grey), (True, False)):
        predicted = grey >= level if bright else grey <= level
        tp = np.count_nonzero(predicted & truth)
        best = max(best, 2 * tp / (np.count_nonzero(predicted) + np.count_nonzero(truth)))
    return best


def test_the_threshold_baseline_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(3):
        mask = (rng.random((24, 24)) < 0.2).astype(np.uint8)
        # Levels on the histogram's bin centres, so the binned search can hit every cut exactly.
        levels = rng.integers(-100, 100, (24, 24)) * (16 / 512) + 8 / 512 + 1.0 * mask
        pairs.append((levels[..., None].astype(np.float32), mask))
    base = usefulness.baseline(pairs, classes=1)
    assert base.threshold_dice == pytest.approx(_threshold_dice_by_brute_force(pairs), abs=1e-4)
    share = sum(m.sum() for _, m in pairs) / (3 * 24 * 24)
    assert base.all_foreground_dice == pytest.approx(2 * share / (1 + share), abs=1e-4)


def test_a_model_no_better_than_a_trivial_one_gets_one_line():
    base = usefulness.Baseline(
        foreground_share=0.005, all_foreground_dice=0.01, threshold_dice=0.04
    )
    assert usefulness.verdict(0.3, 1000, base) is None
    line = usefulness.verdict(0.03, 1000, base)
    assert "no better than a trivial one: Dice 0.0300" in line and "0.0400" in line
    # The int8 gate judges only against the floor of 0.1 and marking every pixel.
    assert usefulness.verdict(0.2, 1000, base, against_threshold=False) is None
    assert usefulness.verdict(0.09, 1000, base, against_threshold=False) is not None
    assert "finds no foreground" in usefulness.verdict(0.0, 0, base)
    empty = usefulness.Baseline(0.0, 0.0, 0.0)
    assert "hold no foreground" in usefulness.verdict(1.0, 0, empty)


def test_images_are_normalized_each_by_its_own_unless_told_and_the_spread_is_reported():
    rng = np.random.default_rng(1)
    steady = [Sample(str(i), rng.normal(120, 30, (64, 64)).clip(0, 255).astype(np.uint8),
                     np.zeros((64, 64), np.uint8)) for i in range(6)]  # fmt: skip
    varied = [Sample(s.name, np.clip(s.image * 0.4 + 25 * i, 0, 255).astype(np.uint8), s.mask)
              for i, s in enumerate(steady)]  # fmt: skip
    spreads = []
    for samples in (steady, varied):
        print_ = fingerprint.measure(samples, channels=1)
        chosen = fingerprint.plan(print_, SMALL, TrainConfig())
        assert chosen.normalization is Normalization.IMAGE
        assert f"spread {print_.intensity_mean_spread:.2f} of their std" in chosen.reason
        spreads.append(print_.intensity_mean_spread)
    # Means 0-125 grey levels apart against stds of ~12: the spread sees it; 6 draws of one
    # distribution differ by a fraction of their std.
    assert spreads[0] < 0.1 < 1 < spreads[1]
    given = fingerprint.plan(print_, SMALL, TrainConfig(), Normalization.DATASET)
    assert given.normalization is Normalization.DATASET  # a flag overrides the choice
