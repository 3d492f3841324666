"""Per-object scores (`benchmarks.objects`) on hand-made masks whose answer is known, and the
component count against a flood fill written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.objects import (
    BINS,
    ObjectCounts,
    match_objects,
    object_counts,
    size_bin,
    summarize,
)
from benchmarks.schema import ObjectScores
from runtime.metrics import dice
from runtime.typed_json import from_json, to_json


def _masks(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)


def test_one_predicted_pixel_on_a_labelled_object_finds_it():
    pred, true = _masks()
    true[2:5, 2:5] = 1
    pred[3, 3] = 1
    [found] = match_objects(pred, true).labelled
    assert found.found and found.area == 9
    assert found.dice == pytest.approx(2 * 1 / (9 + 1))


def test_a_miss_scores_0_and_the_prediction_elsewhere_is_false():
    pred, true = _masks()
    true[2:5, 2:5] = 1
    pred[10:12, 10:12] = 1
    result = match_objects(pred, true)
    [missed] = result.labelled
    assert not missed.found and missed.dice == 0.0
    assert (result.false, result.predicted, result.blank) == (1, 1, False)


def test_a_blob_without_labels_is_one_false_component():
    pred, true = _masks()
    pred[5:8, 5:8] = 1
    counts = object_counts(pred, true)
    assert (counts.labelled, counts.false, counts.labelled_images) == (0, 1, 0)


def test_two_labelled_blobs_joined_by_one_prediction_are_both_found():
    pred, true = _masks()
    true[2:5, 2:5] = 1
    true[2:5, 8:11] = 1
    pred[2:5, 2:11] = 1  # 27 px over both and the gap between them
    result = match_objects(pred, true)
    assert [o.found for o in result.labelled] == [True, True]
    # Each against the whole predicted component: 2 * 9 / (9 + 27)
    assert [o.dice for o in result.labelled] == pytest.approx([0.5, 0.5])
    assert (result.false, result.predicted) == (0, 1)


def test_diagonal_neighbours_are_one_object():
    pred, true = _masks()
    true[0, 0] = true[1, 1] = true[2, 2] = 1  # a diagonal scratch
    pred[2, 2] = 1
    pred[3, 3] = pred[4, 4] = 1  # one predicted component, touching the scratch's end
    result = match_objects(pred, true)
    [scratch] = result.labelled
    assert scratch.area == 3 and scratch.found
    assert scratch.dice == pytest.approx(2 * 1 / (3 + 3))
    assert (result.false, result.predicted) == (0, 1)


def test_empty_label_and_empty_prediction_count_one_image_and_nothing_else():
    pred, true = _masks()
    counts = object_counts(pred, true)
    assert counts == ObjectCounts(images=1)
    summary = summarize([counts])
    assert summary["recall"] is None  # no objects: nothing to find, not a recall of 0 or 1
    assert summary["false_per_image"] == 0.0 and summary["bins"] == []


def test_labels_with_a_blank_prediction_are_counted_as_such():
    pred, true = _masks()
    true[4:6, 4:6] = 1
    assert object_counts(pred, true).blank_images == 1
    pred[0, 0] = 1  # any foreground, even a false one, is no longer blank
    assert object_counts(pred, true).blank_images == 0
    assert object_counts(*_masks()).blank_images == 0  # nothing labelled: nothing to miss


@pytest.mark.parametrize(
    ("area", "name"),
    [
        *((1, "<4"), (12, "<4"), (13, "4-8"), (50, "4-8"), (51, "8-16"), (201, "8-16")),
        *((202, "16-32"), (804, "16-32"), (805, ">=32"), (10_000, ">=32")),
    ],
)
def test_size_bins_by_equivalent_diameter(area, name):
    # sqrt(4 * 12 / pi) = 3.91 and sqrt(4 * 13 / pi) = 4.07, ...
    assert BINS[size_bin(area)] == name
    assert (math.sqrt(4 * area / math.pi) < 4) == (name == "<4")


def test_squares_of_each_size_land_in_their_bins_and_summarize_per_bin():
    pred, true = np.zeros((64, 128), np.uint8), np.zeros((64, 128), np.uint8)
    sides = (3, 5, 10, 20, 40)  # diameters 3.4, 5.6, 11.3, 22.6, 45.1 px
    column = 0
    for side in sides:
        true[:side, column : column + side] = 1
        column += side + 2
    pred[:10, 12:22] = 1  # the 10 px square exactly (columns 0-2, 5-9, 12-21, ...)
    pred[0, 0] = 1  # one pixel of the 3 px square
    summary = summarize([object_counts(pred, true)])
    assert [b["bin"] for b in summary["bins"]] == list(BINS)
    assert [b["count"] for b in summary["bins"]] == [1] * 5
    assert [b["recall"] for b in summary["bins"]] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [b["mean_dice"] for b in summary["bins"]] == pytest.approx([0.2, 0, 1, 0, 0])
    assert summary["recall"] == pytest.approx(2 / 5)


def test_counts_add_up_over_images_and_recall_is_pooled():
    a_pred, a_true = _masks()
    a_true[1:3, 1:3] = 1
    a_true[8:10, 8:10] = 1
    a_pred[1:3, 1:3] = 1  # one of two found
    b_pred, b_true = _masks()
    b_true[4:7, 4:7] = 1  # missed, and the image's prediction is blank
    c_pred, c_true = _masks()
    c_pred[0:2, 0:2] = 1
    c_pred[12:14, 12:14] = 1  # two false blobs, no labels
    counts = [
        object_counts(p, t) for p, t in ((a_pred, a_true), (b_pred, b_true), (c_pred, c_true))
    ]
    total = counts[0] + counts[1] + counts[2]
    assert (total.images, total.labelled, total.found, total.false) == (3, 3, 1, 2)
    assert (total.labelled_images, total.blank_images) == (2, 1)
    summary = summarize(counts)
    assert summary["recall"] == pytest.approx(1 / 3)  # pooled, not the mean of 0.5, 0 and -
    assert summary["false_per_image"] == pytest.approx(2 / 3)
    [small] = summary["bins"]  # 4 px (2.3 px across) and 9 px (3.4): both under 4 px
    assert (small["bin"], small["count"], small["found"]) == ("<4", 3, 1)
    assert small["mean_dice"] == pytest.approx(1 / 3)


def test_each_foreground_class_is_matched_on_its_own_and_pooled():
    pred, true = _masks()
    true[1:4, 1:4] = 1
    true[8:11, 8:11] = 2
    pred[1:4, 1:4] = 2  # class 2 on the class 1 object: neither found nor a class 2 hit
    pred[8:11, 8:11] = 2
    result = match_objects(pred, true, classes=3)
    assert [(o.cls, o.found) for o in result.labelled] == [(1, False), (2, True)]
    assert (result.false, result.predicted) == (1, 2)
    # Binary: every class > 0 is foreground.
    assert [o.found for o in match_objects(pred, true, classes=1).labelled] == [True, True]


def test_a_single_objects_dice_is_the_pixel_dice():
    rng = np.random.default_rng(3)
    pred, true = _masks(32)
    true[5:20, 6:18] = 1
    pred[8:24, 4:15] = 1
    pred &= rng.random(pred.shape) > 0.05  # a few holes, still one 8-connected component
    [one] = match_objects(pred, true).labelled
    assert one.dice == pytest.approx(dice(pred, true))


def test_the_summary_reads_into_the_report_schema_unchanged():
    pred, true = _masks()
    true[2:5, 2:5] = 1
    pred[3:6, 3:6] = 1
    summary = summarize([object_counts(pred, true), ObjectCounts(images=1)])
    assert to_json(from_json(ObjectScores, summary, "objects")) == summary


def test_masks_of_two_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        match_objects(np.zeros((4, 4)), np.zeros((4, 5)))


def _flood_fill_count(mask: np.ndarray) -> int:
    """8-connected components by a plain flood fill (no scipy): the independent count."""
    seen = np.zeros(mask.shape, bool)
    count = 0
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        count += 1
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return count


@pytest.mark.parametrize("seed", range(5))
def test_component_counts_match_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random((24, 31)) < 0.35).astype(np.uint8)  # many blobs, many diagonal joins
    empty = np.zeros_like(mask)
    expected = _flood_fill_count(mask)
    assert expected > 10
    labelled = match_objects(empty, mask).labelled
    assert len(labelled) == expected and sum(o.area for o in labelled) == mask.sum()
    assert match_objects(mask, empty).false == expected
    # The same mask as prediction: every object found with Dice 1, nothing false.
    same = match_objects(mask, mask)
    assert all(o.found and o.dice == 1.0 for o in same.labelled) and same.false == 0
