"""The synthetic surface-defect set: reproducible, several sizes, rare small defects that a
grey-level threshold cannot segment, and a folder writer whose output trains as any folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from train.config import DataConfig
from train.data import DEFECTS, load_samples
from train.data.defects import generate_defects, main, parse_args

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128


@pytest.fixture(scope="module")
def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    return generate_defects(40, SIZE, seed=0)


def test_the_same_arguments_give_identical_images_and_masks(pairs):
    again = generate_defects(6, SIZE, seed=0)
    for (image, mask), (image_again, mask_again) in zip(pairs, again, strict=False):
        np.testing.assert_array_equal(image, image_again)
        np.testing.assert_array_equal(mask, mask_again)


def test_different_seeds_give_different_images():
    (a, _), (b, _) = generate_defects(1, 64, seed=0)[0], generate_defects(1, 64, seed=1)[0]
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_image_i_does_not_depend_on_count():
    few, many = generate_defects(2, 48, seed=5), generate_defects(5, 48, seed=5)
    for (image, mask), (image_many, mask_many) in zip(few, many[:2], strict=True):
        np.testing.assert_array_equal(image, image_many)
        np.testing.assert_array_equal(mask, mask_many)


def test_sizes_vary_within_half_to_twice_the_size(pairs):
    shapes = [image.shape for image, _ in pairs]
    heights, widths = zip(*shapes, strict=True)
    assert min(heights + widths) >= SIZE // 2 and max(heights + widths) <= 2 * SIZE
    assert len(set(shapes)) >= 30, shapes  # many sizes and aspect ratios, not a few
    assert min(heights) < SIZE * 0.7 and max(heights) > SIZE * 1.4, heights
    for image, mask in pairs:
        assert image.dtype == mask.dtype == np.uint8 and image.shape == mask.shape


def test_the_smallest_size_keeps_sides_of_at_least_16():
    for image, mask in generate_defects(10, 16, seed=2):
        assert min(image.shape) >= 16 and max(image.shape) <= 32
        assert set(np.unique(mask).tolist()) <= {0, 1}


def test_defects_are_rare_like_a_real_surface_defect_set(pairs):
    # A magnetic-tile set's median image has ~0.5% defect pixels.
    shares = np.array([mask.mean() for _, mask in pairs])
    overall = sum(int(mask.sum()) for _, mask in pairs) / sum(mask.size for _, mask in pairs)
    assert 0.003 <= np.median(shares) <= 0.008, np.median(shares)
    assert 0.002 <= overall <= 0.01, overall
    none = np.mean(shares == 0)
    assert 0.1 <= none <= 0.4, none  # about a fifth have no defect


def test_masks_are_binary_and_images_use_varied_brightness(pairs):
    for _, mask in pairs:
        assert set(np.unique(mask).tolist()) <= {0, 1}
    means = [float(image.mean()) for image, _ in pairs]
    assert max(means) - min(means) > 60, means  # a single fixed normalization is stressed


def test_defects_are_small(pairs):
    areas, spans = [], []
    for _, mask in pairs:
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        areas += np.bincount(labels.ravel())[1:].tolist()
        spans += [max(s.stop - s.start for s in box) for box in ndimage.find_objects(labels)]
    assert len(areas) >= 40, len(areas)
    # A pit a few px across, a line 1-2 px wide: tiny against a SIZE x SIZE image.
    assert max(areas) <= 0.025 * SIZE**2, max(areas)
    assert np.median(areas) <= 0.005 * SIZE**2, np.median(areas)
    assert max(spans) <= 0.75 * SIZE, max(spans)


def _best_threshold_dice(values: list[np.ndarray], masks: list[np.ndarray], bins: int) -> float:
    """The best Dice of `value <= t` or `value >= t` over every t, all pixels pooled."""
    every = np.zeros(bins)
    defect = np.zeros(bins)
    for value, mask in zip(values, masks, strict=True):
        every += np.bincount(value.ravel(), minlength=bins)
        defect += np.bincount(value.ravel(), weights=mask.ravel(), minlength=bins)
    best = 0.0
    for order in (slice(None), slice(None, None, -1)):  # dark defects, then bright ones
        found, chosen = np.cumsum(defect[order]), np.cumsum(every[order])
        best = max(best, float((2 * found / (chosen + defect.sum())).max()))
    return best


def test_no_grey_level_threshold_segments_the_defects(pairs):
    # Grains and stains as dark as pits, bright scratches beside dark ones, and brightness that
    # varies between images: a threshold at Dice 0.3 would already find a large part of the
    # defects by grey level alone, while the set is meant to need their shapes. Measured for
    # seeds 0-3: 0.06-0.19 on raw grey levels, 0.21-0.28 with each image standardized.
    images = [image for image, _ in pairs[:20]]
    masks = [mask for _, mask in pairs[:20]]
    assert _best_threshold_dice(images, masks, 256) < 0.3
    standardized = [
        np.clip((image - np.median(image)) / image.std() * 32 + 256, 0, 511).astype(np.intp)
        for image in images
    ]
    assert _best_threshold_dice(standardized, masks, 512) < 0.35


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 64), "count must be at least 1"),
        ((1.5, 64), "count must be an integer"),
        ((1, 15), "too small"),
        ((1, (64, 64)), "size must be an integer"),
        ((1, 64.0), "size must be an integer"),
        ((1, 64, -1), "seed must be non-negative"),
    ],
)
def test_bad_arguments_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        generate_defects(*args)


def test_load_samples_names_the_source_and_follows_the_config():
    config = DataConfig(source=DEFECTS, synthetic_count=3, synthetic_size=32)
    samples = load_samples(config, 1, seed=4)
    assert [s.name for s in samples] == ["defects-0", "defects-1", "defects-2"]
    image, mask = generate_defects(3, 32, seed=4)[2]
    np.testing.assert_array_equal(samples[2].image, image)
    np.testing.assert_array_equal(samples[2].mask, mask)


def test_the_written_folder_loads_as_a_data_folder(tmp_path, capsys):
    out = tmp_path / "defects"
    argv = ["--out", str(out), "--count", "12", "--size", "48", "--seed", "1"]
    assert main(parse_args(argv)) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("12 images in"), summary
    samples = load_samples(DataConfig(source=str(out)), classes=1)
    expected = generate_defects(12, 48, seed=1)
    assert [s.name for s in samples] == [f"defects-{i}" for i in range(12)]
    assert any(not mask.any() for _, mask in expected)  # a defect-free image loads too
    for sample, (image, mask) in zip(samples, expected, strict=True):
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.mask, mask)  # 255 read back as class 1


def test_overwrite_replaces_a_larger_earlier_set(tmp_path, capsys):
    out = tmp_path / "defects"
    assert main(parse_args(["--out", str(out), "--count", "4", "--size", "24"])) == 0
    argv = ["--out", str(out), "--count", "2", "--size", "24", "--seed", "1", "--overwrite"]
    assert main(parse_args(argv)) == 0
    assert sorted(p.name for p in (out / "label").iterdir()) == ["defects-0.png", "defects-1.png"]


def test_a_folder_with_files_is_refused_with_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    done = subprocess.run(
        [sys.executable, "-m", "train.data.defects", "--out", str(tmp_path), "--count", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "--overwrite" in done.stderr and done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_bad_count_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(parse_args(["--out", str(tmp_path / "x"), "--count", "0"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: count must be at least 1") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
