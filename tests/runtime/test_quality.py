"""The quality signal (issue 29): statistics that move with the changes a device sees, the
reference a bundle records, the record each prediction carries and what runtime.predict does
with it."""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.bundle import read_manifest
from runtime.errors import UserError
from runtime.predict import Assessed, quality_summary, write_quality
from runtime.quality import (
    QUALITY_VERSION,
    STATISTICS,
    Band,
    Quality,
    Reference,
    assess,
    input_statistics,
    output_statistics,
    reference_from_images,
    reference_of,
)

# ------------------------------------------------------------------------------------------
# The changes of issue 29's table, in numpy and Pillow (8-bit grey in, 8-bit grey out)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(3 * sigma + 0.5)
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image.astype(np.float64), radius, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(taps), axis=1)
    rows = windows @ taps
    return _u8(np.lib.stride_tricks.sliding_window_view(rows, len(taps), axis=0) @ taps)


def _noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return _u8(image + np.random.default_rng(seed).normal(0, sigma, image.shape))


def _down_and_back(image: np.ndarray) -> np.ndarray:
    height, width = image.shape
    small = Image.fromarray(image).resize((width // 2, height // 2), Image.BILINEAR)
    return np.asarray(small.resize((width, height), Image.BILINEAR))


def _jpeg(image: np.ndarray, quality: int = 30) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    return _u8((image.astype(np.float64) - 127.5) * factor + 127.5)


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    return _u8(255 * (image / 255.0) ** gamma)


def _offset(image: np.ndarray, share: float = 0.1) -> np.ndarray:
    return _u8(image.astype(np.float64) + 255 * share)


@functools.cache
def _em(count: int, seed: int, size: int = 128) -> tuple[np.ndarray, ...]:
    from train.data.synthetic import generate_em

    return tuple(generate_em(count, size, seed)[0])


@functools.cache
def _training_reference() -> Reference:
    """The input statistics' bands over 64 synthetic EM images ("training")."""
    return reference_from_images(_em(64, seed=0))


# ------------------------------------------------------------------------------------------
# Statistics


def test_each_statistic_moves_with_its_change():
    image = _em(1, seed=3, size=256)[0]
    clean = input_statistics(image)
    blurred = input_statistics(_blur(image, 1.0))
    assert blurred["sharpness"] < 0.7 * clean["sharpness"]
    assert blurred["noise"] < 0.5 * clean["noise"]
    noisy = input_statistics(_noise(image, 15))
    assert noisy["noise"] > 1.3 * clean["noise"] and noisy["sharpness"] > clean["sharpness"]
    brighter = input_statistics(_offset(image))
    assert brighter["p50"] - clean["p50"] == pytest.approx(0.1, abs=0.01)
    assert brighter["sharpness"] == pytest.approx(clean["sharpness"], rel=0.05)
    # gamma < 1 brightens the mid-tones, gamma > 1 darkens them; the ends stay nearer
    assert input_statistics(_gamma(image, 0.5))["p50"] > clean["p50"] + 0.1
    darker = input_statistics(_gamma(image, 2.0))
    assert darker["p50"] < clean["p50"] - 0.1 and darker["p1"] < clean["p1"]
    lower = input_statistics(_down_and_back(image))
    assert lower["sharpness"] < 0.7 * clean["sharpness"] and lower["noise"] < 0.5 * clean["noise"]
    flatter = input_statistics(_contrast(image, 0.5))
    assert flatter["std"] == pytest.approx(0.5 * clean["std"], rel=0.05)
    assert flatter["sharpness"] == pytest.approx(clean["sharpness"], rel=0.1)  # / std
    assert input_statistics(_jpeg(image))["blockiness"] > 1.3 * clean["blockiness"]
    assert 0.95 < clean["blockiness"] < 1.15


def test_statistics_of_any_dtype_and_channels_and_of_tiny_images():
    image = _em(1, seed=4)[0]
    grey = input_statistics(image)
    as_16_bit = input_statistics(image.astype(np.uint16) * 257)
    as_float = input_statistics(image.astype(np.float32) / 255)
    as_rgba = input_statistics(np.dstack([image, image, image, np.full_like(image, 9)]), 3)
    for other in (as_16_bit, as_float, as_rgba):
        for name, value in grey.items():
            assert other[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert input_statistics(np.zeros((8, 40), np.uint8)) == {}  # under 16 px a side
    flat = input_statistics(np.full((64, 64), 100, np.uint8))
    assert flat["sharpness"] == 0.0 and flat["std"] == 0.0  # no division by zero


def test_standardized_statistics_see_the_histogram_s_shape_not_gain_or_offset():
    """For a model that normalizes each image: a gain and an offset change nothing it sees."""
    image = _em(1, seed=6, size=256)[0]
    clean = input_statistics(image, standardized=True)
    assert "std" not in clean and clean["p1"] < 0 < clean["p99"]
    changed = input_statistics(_contrast(_offset(image, 0.05), 0.7), standardized=True)
    for name, value in clean.items():
        assert changed[name] == pytest.approx(value, rel=0.05, abs=0.06), name
    assert input_statistics(_gamma(image, 2.0), standardized=True)["p99"] > clean["p99"] + 0.3
    reference = reference_from_images(_em(64, seed=0), standardized=True)
    assert reference.standardized and "std" not in reference.statistics
    assert Reference.from_dict(json.loads(json.dumps(reference.to_dict()))) == reference

    def flags(change) -> list[bool]:
        shifted = (input_statistics(change(x), standardized=True) for x in _em(8, seed=1))
        return [assess(s, reference).flag for s in shifted]

    clean_flags = flags(lambda x: x)  # one of these 8 lies out already
    assert flags(_offset) == flags(lambda x: _contrast(x, 0.7)) == clean_flags
    assert sum(flags(lambda x: _gamma(x, 2.0))) >= sum(clean_flags) + 4
    gamma = assess(input_statistics(_gamma(image, 2.0), standardized=True), reference)
    assert gamma.flag and "(stds from the mean)" in gamma.reason, gamma.reason
    assert gamma.group == "intensity" and "histogram shape" in gamma.reason


def test_output_statistics_of_sigmoid_and_softmax_heads():
    sigmoid = np.array([0.05, 0.3, 0.5, 0.9], np.float32).reshape(1, 4, 1).repeat(2, axis=0)
    mask = (sigmoid[..., 0] > 0.5).astype(np.uint8)
    # every other pixel of each axis: columns 0 and 2 (0.05, 0.5)
    assert output_statistics(sigmoid, mask) == {"uncertain": 0.5, "foreground": 0.0}
    softmax = np.array([[[0.9, 0.05, 0.05], [0.3, 0.5, 0.2]]], np.float32)  # (1, 2, 3)
    stats = output_statistics(np.repeat(softmax, 2, axis=1), np.array([[0, 0, 1, 1]]))
    assert stats == {"uncertain": 0.5, "foreground": 0.5}
    spread = np.array([[0.1, 9.0, 0.3, 9.0], [9.0, 9.0, 9.0, 9.0]], np.float32)  # TTA's views
    with_views = output_statistics(sigmoid, mask, spread)
    assert with_views["disagreement"] == pytest.approx(0.2)  # the mean of 0.1 and 0.3


def test_the_views_disagreement_gets_a_band_only_from_spreads():
    probabilities = np.full((3, 8, 8, 1), 0.9, np.float32)
    masks = np.ones((3, 8, 8), np.uint8)
    spreads = np.stack([np.full((8, 8), v, np.float32) for v in (0.01, 0.02, 0.04)])
    plain = reference_from_images([], 1, probabilities, masks)
    assert set(plain.statistics) == {"uncertain", "foreground"}
    judged = reference_from_images([], 1, probabilities, masks, spreads=spreads)
    band = judged.statistics["disagreement"]
    assert band.low < 0.02 < band.high and band.scale == "log"
    # Views disagreeing 50x more than the band's top lie log(50) / spread out (the spread of
    # 3 tiles is widened sqrt(32 / 3) times: ~4.2 here, so 0.93 spreads, past the 0.5 flag).
    far = assess({"disagreement": 50 * band.high}, judged)
    assert far.distances["disagreement"] == pytest.approx(np.log(50) / band.spread, rel=1e-3)
    assert far.flag and far.group == "uncertainty" and "views disagree" in far.reason


# ------------------------------------------------------------------------------------------
# The reference and the flag


def test_clean_images_of_another_seed_pass_and_shifted_ones_are_flagged_with_their_kind():
    reference = _training_reference()
    clean = [assess(input_statistics(x), reference) for x in _em(16, seed=1)]
    # ~2% of clean images lie beyond the threshold (random draws of 64 of these images)
    assert sum(q.flag for q in clean) <= 1, [q.reason for q in clean if q.flag]
    changes = {  # the change, and the kinds its flags may name
        "blur 2": (lambda x: _blur(x, 2.0), {"blur"}),
        # the synthetic images vary 2x in noise and contrast already
        "noise 40": (lambda x: _noise(x, 40), {"noise"}),
        "contrast 0.3": (lambda x: _contrast(x, 0.3), {"contrast"}),
        "JPEG 30": (_jpeg, {"compression", "blur"}),  # blocks, and smoothing
    }
    for name, (change, groups) in changes.items():
        shifted = [assess(input_statistics(change(x)), reference) for x in _em(8, seed=1)]
        assert all(q.flag for q in shifted), (name, [q.distances for q in shifted])
        assert {q.group for q in shifted} <= groups, (name, [q.reason for q in shifted])
    # a 2x lower resolution is smoothing: the noise falls, and so does the sharpness
    lower = [assess(input_statistics(_down_and_back(x)), reference) for x in _em(8, seed=1)]
    assert all(q.flag and q.group == "blur" for q in lower)


def test_the_reason_names_the_worst_statistic_in_plain_words():
    reference = Reference(
        {
            "sharpness": Band(median=0.8, low=0.6, high=1.0, spread=0.5, scale="log"),
            "p50": Band(median=0.5, low=0.45, high=0.55, spread=0.1),
        },
        images=30,
    )
    soft = assess({"sharpness": 0.246, "p50": 0.5}, reference)
    assert soft.flag and soft.worst == "sharpness" and soft.group == "blur"
    assert soft.reason.startswith("sharpness 0.41 of training's 5th percentile: blurred")
    assert soft.distances == {
        "sharpness": pytest.approx(np.log(0.6 / 0.246) / 0.5, abs=1e-3),
        "p50": 0.0,
    }
    bright = assess({"sharpness": 0.8, "p50": 0.65}, reference)
    assert bright.reason == (
        "median intensity 0.650, above training's 95th percentile 0.550: brighter"
    )
    near = assess({"sharpness": 0.8, "p50": 0.58}, reference)  # 0.3 ranges out: within 0.5
    assert not near.flag and near.reason == "" and near.worst == "p50"
    assert near.distances["p50"] == pytest.approx(0.3)
    # statistics one side does not know are left out, not errors
    assert not assess({"novel": 9.0}, reference).flag
    assert assess({"sharpness": 0.8, "novel": 9.0}, reference).distances == {"sharpness": 0.0}


def test_a_reference_and_a_record_survive_json():
    reference = reference_from_images(
        _em(4, seed=0),
        probabilities=np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32),
        masks=np.zeros((3, 32, 32), np.uint8),
        spreads=np.random.default_rng(1).random((3, 32, 32), dtype=np.float32) / 10,
    )
    assert set(reference.statistics) == set(STATISTICS)
    assert (reference.images, reference.tiles, reference.version) == (4, 3, QUALITY_VERSION)
    text = json.dumps(reference.to_dict())
    assert Reference.from_dict(json.loads(text)) == reference
    record = assess(input_statistics(_blur(_em(1, seed=5)[0], 2.0)), reference)
    assert Quality.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def _manifest(tmp_path: Path, **extra) -> Path:
    """The smallest manifest the reader takes (no model files: enough to read it)."""
    raw = {
        "format_version": 1,
        "input": {"size": 64, "multiple": 4, "channels": 1},
        "output": {"size": 64, "classes": 1},
        "preprocessing": {"channels": 1, "mean": 0.5, "std": 0.2},
        "postprocessing": {"activation": "sigmoid", "threshold": 0.5, "class_names": ["b", "f"]},
        "artifacts": [],
        **extra,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    return tmp_path


def test_the_manifest_reads_with_and_without_a_quality_section(tmp_path):
    assert read_manifest(_manifest(tmp_path)).quality is None  # bundles made before it
    reference = _training_reference()
    assert read_manifest(_manifest(tmp_path, quality=reference.to_dict())).quality == reference
    broken = reference.to_dict()
    del broken["statistics"]["p50"]["low"]
    with pytest.raises(UserError, match=r"quality\.statistics\.p50 has no 'low'"):
        read_manifest(_manifest(tmp_path, quality=broken))


def test_a_reference_of_another_version_gives_no_records(caplog):
    from runtime.segmenter import _usable

    reference = _training_reference()
    assert _usable(reference) is reference and _usable(None) is None
    later = Reference(reference.statistics, reference.images, version=QUALITY_VERSION + 1)
    assert _usable(later) is None
    assert "no quality records" in caplog.text


# ------------------------------------------------------------------------------------------
# quality.csv and the closing line


def _record(flag: bool, group: str = "", reason: str = "") -> Quality:
    return Quality({"p50": 0.5, "uncertain": 0.02}, {"p50": 0.1}, "p50", flag, reason, group)


def test_quality_csv_keeps_other_files_rows_and_the_summary_counts_kinds(tmp_path):
    first = [
        Assessed("a.png", 1, _record(False)),
        Assessed("b.png", 1, _record(True, "blur", "sharpness 0.41 of ...")),
    ]
    path = write_quality(tmp_path, first)
    again = [
        Assessed("b.png", 1, _record(False)),
        Assessed("c.tif", 1, _record(True, "intensity", "median ...")),
        Assessed("c.tif", 2, _record(True, "blur", "noise ...")),
    ]
    write_quality(tmp_path, again)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["page"], r["flag"]) for r in rows] == [
        ("a.png", "1", "0"),
        ("b.png", "1", "0"),  # this run's record replaced the first run's
        ("c.tif", "1", "1"),
        ("c.tif", "2", "1"),
    ]
    assert list(rows[0])[:4] == ["file", "page", "p50", "uncertain"]
    assert rows[2]["reason"] == "median ..." and rows[2]["group"] == "intensity"
    assert quality_summary(first + again) == (
        "3 of 5 images look unlike the training images: 2 blur, 1 intensity"
    )
    assert quality_summary(first[:1]) == "0 of 1 images look unlike the training images"


def test_a_quality_csv_it_did_not_write_is_refused(tmp_path):
    (tmp_path / "quality.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match=r"not a quality\.csv this command wrote"):
        write_quality(tmp_path, [Assessed("a.png", 1, _record(False))])


# ------------------------------------------------------------------------------------------
# Real bundles (slow: the tiny U-Net is trained once per session)


def _with_reference(bundle: Path, tmp_path: Path) -> Path:
    """A copy of `bundle` whose manifest records a reference of synthetic 96 px images (the
    tiny run's training size), as optimize.quantize writes one."""
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["quality"] = reference_from_images(_em(32, seed=0, size=96)).to_dict()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.slow
def test_predictions_carry_a_record_only_when_the_bundle_has_a_reference(tiny_bundle, tmp_path):
    from runtime import Segmenter

    image = _em(1, seed=1, size=96)[0]
    assert Segmenter.from_bundle(tiny_bundle, precision="int8").predict(image).quality is None
    segmenter = Segmenter.from_bundle(_with_reference(tiny_bundle, tmp_path), precision="int8")
    clean = segmenter.predict(image).quality
    assert clean is not None and not clean.flag
    assert {"uncertain", "foreground", "sharpness"} <= set(clean.statistics)
    # the input statistics only: the reference has no output bands
    assert set(clean.distances) == {n for n, s in STATISTICS.items() if s.source == "input"}
    blurred = segmenter.predict(_blur(image, 2.0)).quality
    assert blurred.flag and blurred.group == "blur"


@pytest.mark.slow
def test_tta_predictions_are_judged_by_their_views_disagreement(tiny_bundle, tmp_path):
    from runtime import Segmenter

    bundle = _with_reference(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    outputs = [{"uncertain": 0.05, "foreground": 0.3, "disagreement": d} for d in (0.01, 0.03)]
    manifest["quality"] = reference_of(
        [input_statistics(x) for x in _em(32, seed=0, size=96)], outputs
    ).to_dict()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    image = _em(1, seed=1, size=96)[0]
    flips = Segmenter.from_bundle(bundle, precision="fp32", tta="flips").predict(image)
    assert "disagreement" in flips.quality.distances
    assert 0 < flips.quality.statistics["disagreement"] < 0.5
    plain = Segmenter.from_bundle(bundle, precision="fp32").predict(image)
    assert "disagreement" not in plain.quality.statistics  # no views, nothing to judge
    # The spread channel is split off: the probabilities are TTA's own.
    without = Segmenter.from_bundle(tiny_bundle, precision="fp32", tta="flips").predict(image)
    assert flips.probabilities.shape == without.probabilities.shape
    np.testing.assert_array_equal(flips.probabilities, without.probabilities)


@pytest.mark.slow
def test_predict_cli_writes_quality_csv_sums_up_and_fails_on_flag(tiny_bundle, tmp_path, capsys):
    from runtime.predict import main, parse_args

    bundle = _with_reference(tiny_bundle, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    clean = _em(3, seed=1, size=96)
    for i, image in enumerate(clean):
        Image.fromarray(image).save(images / f"clean{i}.png")
    Image.fromarray(_blur(clean[0], 2.0)).save(images / "soft.png")
    argv = [str(bundle), str(images), "--precision", "int8", "--threads", "1"]

    assert main(parse_args([*argv, "--out", str(tmp_path / "a")])) == 0
    out = capsys.readouterr().out
    assert "soft.png" in out and "unlike the training images: noise 0." in out
    assert "1 of 4 images look unlike the training images: 1 blur" in out
    assert main(parse_args([*argv, "--out", str(tmp_path / "b"), "--fail-on-flag"])) == 3
    assert len(list((tmp_path / "b").glob("*_mask.png"))) == 4  # everything written first
    with open(tmp_path / "b" / "quality.csv", newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"clean0.png", "clean1.png", "clean2.png", "soft.png"}
    assert rows["soft.png"]["flag"] == "1" and rows["soft.png"]["reason"].startswith("noise")
    assert all(rows[f"clean{i}.png"]["flag"] == "0" for i in range(3))
    assert float(rows["soft.png"]["distance"]) > 0.5

    (images / "soft.png").unlink()
    assert main(parse_args([*argv, "--out", str(tmp_path / "c"), "--fail-on-flag"])) == 0
    capsys.readouterr()
    # a bundle without a reference cannot promise --fail-on-flag: refused before any work
    plain = [str(tiny_bundle), str(images), "--out", str(tmp_path / "d"), "--fail-on-flag"]
    assert main(parse_args(plain)) == 2
    assert "records no quality reference" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_optimize_quantize_records_the_reference(tiny_quantized_bundle):
    reference = read_manifest(tiny_quantized_bundle).quality
    assert reference is not None and set(reference.statistics) == set(STATISTICS)
    assert reference.images >= 4 and reference.tiles >= 1
