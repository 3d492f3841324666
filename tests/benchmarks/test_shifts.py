"""`benchmarks.shifts`: each shift does what its name says on a synthetic image and keeps the
image's dtype and range; the AUROC against a count of pairs; the command on the tiny bundle
against `runtime.metrics.dice` computed here, and bad input as one line and exit 2."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.shifts import (
    MILD,
    SHIFTS,
    STRONG,
    _flag_score,
    auroc,
    chosen_shifts,
    contrast,
    downscale,
    gamma,
    gaussian_blur,
    gaussian_noise,
    intensity_offset,
    jpeg,
    main,
    parse_args,
    suite_samples,
)
from runtime.errors import UserError

WHITE = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0, np.float64: 1.0}


def _scene(dtype=np.uint8, shape=(64, 80), seed: int = 0) -> np.ndarray:
    """A textured test picture spanning most of the range, in `dtype`'s units."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    unit = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + rng.normal(0, 0.05, shape[:2])
    unit = np.clip(unit, 0.05, 0.95)
    if len(shape) == 3:
        unit = np.stack([unit * (0.6 + 0.2 * c) for c in range(shape[2])], axis=-1)
    white = WHITE[dtype]
    return (np.round(unit * white) if white > 1 else unit).astype(dtype)


def _gradient_energy(image: np.ndarray) -> float:
    x = image.astype(np.float64)
    return float((np.diff(x, axis=0) ** 2).mean() + (np.diff(x, axis=1) ** 2).mean())


def test_the_registry_has_issue_29s_settings_mild_and_strong():
    severities = {name: severity for name, (_, severity) in SHIFTS.items()}
    assert severities == {
        "blur-1": MILD,
        "blur-2": STRONG,
        "noise-5": MILD,
        "noise-15": STRONG,
        "contrast-0.7": MILD,
        "contrast-0.5": STRONG,
        "gamma-0.5": MILD,
        "gamma-2": STRONG,
        "downscale-2x": MILD,
        "jpeg-30": MILD,
        "offset-10pct": MILD,
    }
    assert chosen_shifts(["jpeg-30", "blur-1", "jpeg-30"]) == ["jpeg-30", "blur-1"]
    with pytest.raises(UserError, match="unknown shift 'blur-3'"):
        chosen_shifts(["blur-1", "blur-3"])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 52), (40, 52, 1), (40, 52, 3)])
@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_keeps_shape_dtype_and_range(name, shape, dtype):
    image = _scene(dtype, shape)
    shifted = SHIFTS[name][0](image, seed=3)
    assert shifted.shape == image.shape and shifted.dtype == image.dtype
    assert shifted.min() >= 0 and shifted.max() <= WHITE[dtype]
    assert not np.array_equal(shifted, image)  # it did something
    assert np.array_equal(SHIFTS[name][0](image, seed=3), shifted)  # and again the same


def test_blur_lowers_the_gradient_energy_more_with_a_larger_sigma():
    image = _scene()
    one, two = gaussian_blur(image, 1.0), gaussian_blur(image, 2.0)
    assert _gradient_energy(two) < 0.7 * _gradient_energy(one) < 0.5 * _gradient_energy(image)
    assert abs(float(one.mean()) - float(image.mean())) < 0.5  # blurring keeps the mean


def test_blur_and_downscale_do_not_mix_channels_and_pass_alpha_through():
    rgba = _scene(np.uint8, (40, 52, 4))
    rgba[..., 1] = 0
    rgba[..., 3] = np.arange(52, dtype=np.uint8)[None, :] * 4
    for shift in (lambda x: gaussian_blur(x, 2.0), lambda x: downscale(x, 2.0)):
        out = shift(rgba)
        assert not out[..., 1].any()  # a black channel stays black
        assert np.array_equal(out[..., 3], rgba[..., 3])  # alpha untouched


@pytest.mark.parametrize(("dtype", "levels"), [(np.uint8, 1.0), (np.uint16, 257.0)])
@pytest.mark.parametrize("sigma", [5.0, 15.0])
def test_noise_has_the_asked_std_on_a_flat_image(dtype, levels, sigma):
    flat = np.full((300, 300), 128 * levels, dtype)
    noisy = gaussian_noise(flat, sigma, seed=1)
    assert noisy.astype(np.float64).std() / levels == pytest.approx(sigma, rel=0.02)
    assert abs(noisy.astype(np.float64).mean() / levels - 128) < 0.1
    assert np.array_equal(gaussian_noise(flat, sigma, seed=1), noisy)
    assert not np.array_equal(gaussian_noise(flat, sigma, seed=(1, 2)), noisy)


def test_noise_on_a_float_image_is_in_grey_levels_of_255():
    flat = np.full((300, 300), 0.5, np.float32)
    assert gaussian_noise(flat, 5.0).std() == pytest.approx(5 / 255, rel=0.02)


def test_contrast_gamma_and_offset_map_known_values_exactly():
    u8 = np.array([[0, 100, 230, 255]], np.uint8)
    # 127.5 + f * (v - 127.5), rounded half up; gamma: 255 * (v / 255) ** g; v + 25.5, clipped
    assert contrast(u8, 0.7).tolist() == [[38, 108, 199, 217]]
    assert contrast(u8, 0.5).tolist() == [[64, 114, 179, 191]]
    assert gamma(u8, 0.5).tolist() == [[0, 160, 242, 255]]
    assert gamma(u8, 2.0).tolist() == [[0, 39, 207, 255]]
    assert intensity_offset(u8, 25.5).tolist() == [[26, 126, 255, 255]]
    u16 = np.array([[0, 16384, 65535]], np.uint16)  # mid-grey is 32767.5
    assert contrast(u16, 0.5).tolist() == [[16384, 24576, 49151]]
    assert gamma(u16, 2.0).tolist() == [[0, 4096, 65535]]
    assert intensity_offset(u16, 25.5).tolist() == [[6554, 22938, 65535]]  # + 6553.5
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    assert contrast(unit, 0.5).tolist() == [[0.25, 0.375, 0.5, 0.75]]
    assert gamma(unit, 0.5).tolist() == [[0.0, 0.5, pytest.approx(0.5**0.5), 1.0]]
    assert gamma(unit, 2.0).tolist() == [[0.0, 0.0625, 0.25, 1.0]]
    assert intensity_offset(unit, 25.5) == pytest.approx(np.array([[0.1, 0.35, 0.6, 1.0]]))


def test_downscale_and_back_keeps_shape_and_dtype_and_smooths():
    checker = (np.indices((31, 45)).sum(axis=0) % 2 * 200).astype(np.uint8)  # odd sizes
    out = downscale(checker, 2.0)
    assert out.shape == checker.shape and out.dtype == np.uint8
    assert _gradient_energy(out) < 0.1 * _gradient_energy(checker)
    assert abs(float(out.mean()) - 100) < 10  # the finest detail averages out to its mean
    flat = np.full((30, 40), 0.3, np.float32)
    assert np.allclose(downscale(flat, 2.0), 0.3)  # a flat image stays flat
    smooth = _scene(np.uint8, (64, 80))
    again = downscale(smooth).astype(float).ravel()
    assert np.corrcoef(again, smooth.ravel())[0, 1] > 0.9  # the same picture, less detail


def test_jpeg_keeps_shape_and_grey_and_stays_close():
    grey = _scene(np.uint8, (48, 64))
    for image in (grey, grey[..., None], _scene(np.uint8, (48, 64, 3))):
        out = jpeg(image, 30)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert 0 < np.abs(out.astype(float) - image).mean() < 10
    wide = _scene(np.uint16, (48, 64))
    out16 = jpeg(wide, 30)
    assert np.all(out16 % 257 == 0)  # 8-bit on the way: 256 levels of 16-bit
    assert np.abs(out16.astype(float) - wide).mean() / 257 < 10


def _pairs_count(scores, positive) -> float:
    """The AUROC by its definition: over every (positive, negative) pair, 1 when the positive
    scores higher, 1/2 on a tie."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_by_ranks_equals_a_count_of_pairs():
    # positives 0.35 and 0.8, negatives 0.1 and 0.4: the pairs won are (0.35, 0.1), (0.8, 0.1),
    # (0.8, 0.4), 3 of 4
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([0.0, 1.0, 1.0, 2.0], [False, False, True, True]) == 0.875  # a tie is half
    assert auroc([3.0, 1.0], [True, False]) == 1.0 and auroc([1.0, 3.0], [True, False]) == 0.0
    assert auroc([1.0, 2.0], [False, False]) is None and auroc([], []) is None
    rng = np.random.default_rng(4)
    for _ in range(20):
        scores = rng.integers(0, 6, 30).astype(float)  # many ties
        positive = rng.random(30) < 0.4
        assert auroc(scores, positive) == pytest.approx(_pairs_count(scores, positive))


def test_the_flag_score_is_the_largest_distance_or_none():
    from runtime.quality import Quality
    from runtime.segmenter import Prediction

    mask, probabilities = np.zeros((2, 2), np.uint8), np.zeros((2, 2, 1), np.float32)
    assert _flag_score(Prediction(mask, probabilities, 0.0)) is None
    distances = {"sharpness": 0.4, "p50": 2.5, "uncertain": 0.0}
    quality = Quality({}, distances, "p50", True, "median intensity 0.9, above ...")
    assert _flag_score(Prediction(mask, probabilities, 0.0, quality=quality)) == 2.5


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    def error(*argv: str) -> str:
        assert main(parse_args(list(argv))) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), err
        return err

    assert "unknown shift 'sharpen'" in error("--bundle", str(tmp_path), "--shifts", "sharpen")
    assert "not a folder" in error("--bundle", str(tmp_path / "none"))
    assert "no manifest.json" in error("--bundle", str(tmp_path))
    assert "is a folder" in error("--bundle", str(tmp_path), "--out", str(tmp_path))


@pytest.mark.slow
def test_the_command_scores_each_model_and_shift_as_computed_here(
    tiny_quantized_bundle, tmp_path, capsys
):
    from runtime.bundle import read_manifest
    from runtime.metrics import dice
    from runtime.segmenter import Segmenter
    from train.config import DataConfig
    from train.data import load_samples, split_samples

    out = tmp_path / "shifts.json"
    argv = ["--bundle", str(tiny_quantized_bundle), "--shifts", "blur-2,noise-15"]
    assert main(parse_args([*argv, "--images", "2", "--out", str(out)])) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    manifest = read_manifest(tiny_quantized_bundle)
    # the tiny run's data: 8 synthetic images, the last 2 held out
    every = load_samples(DataConfig(synthetic_count=8, synthetic_size=96), manifest.classes)
    held = split_samples(every, 0.2)[1]
    assert report["images"] == [s.name for s in held] == ["synthetic-6", "synthetic-7"]
    assert "held-out split, the last 2 of 8" in report["data"]
    assert report["shifts"] == {"blur-2": "strong", "noise-15": "strong"}
    assert [m["key"] for m in report["models"]] == ["int8", "fp32"]
    assert len(report["rows"]) == 2 * 3
    assert manifest.quality is not None and report["quality"]  # quantize records a reference
    for model in report["models"]:
        segmenter = Segmenter.from_bundle(tiny_quantized_bundle, model["key"], model["engine"])
        rows = {r["shift"]: r for r in report["rows"] if r["model"] == model["name"]}
        assert list(rows) == ["none", "blur-2", "noise-15"]
        clean = None
        scores, positive = [], []
        for shift, row in rows.items():
            predictions, labels = [], []
            for index, sample in enumerate(held):
                image = sample.image
                if shift != "none":
                    image = SHIFTS[shift][0](image, seed=(0, index))
                predictions.append(segmenter.predict(image))
                labels.append(sample.mask)
            masks = [p.mask for p in predictions]
            per_image = [dice(m, t) for m, t in zip(masks, labels, strict=True)]
            pooled = dice(np.stack(masks), np.stack(labels))
            assert row["per_image"] == pytest.approx(per_image)
            assert row["dice"] == pytest.approx(pooled)
            clean = clean or (pooled, per_image)
            assert row["drop"] == pytest.approx(clean[0] - pooled)
            degraded = [d < c - 0.05 for d, c in zip(per_image, clean[1], strict=True)]
            assert row["degraded"] == sum(degraded)
            assert f"| {model['name']} | {shift} |" in printed
            # the quality records as the runtime gives them: flags, and the largest distance
            assert row["flagged"] == sum(p.quality.flag for p in predictions)
            scores += [max(p.quality.distances.values()) for p in predictions]
            assert row["flag_scores"] == pytest.approx(scores[-len(held) :])
            positive += degraded
        assert model["clean_dice"] == pytest.approx(clean[0])
        assert model["worst_strong"] in ("blur-2", "noise-15") and model["mild"] == 0
        assert model["false_flag_rate"] == rows["none"]["flagged"] / len(held)
        expected = _pairs_count(scores, positive) if any(positive) else None  # clean: negatives
        assert model.get("auroc") == pytest.approx(expected)


@pytest.mark.slow
def test_with_tta_the_views_disagreement_joins_the_flag_score(tiny_quantized_bundle, tmp_path):
    from runtime.segmenter import Segmenter

    out = tmp_path / "shifts.json"
    argv = ["--bundle", str(tiny_quantized_bundle), "--shifts", "blur-2", "--models", "fp32"]
    assert main(parse_args([*argv, "--images", "1", "--tta", "flips", "--out", str(out)])) == 0
    report = json.loads(out.read_text())
    assert report["tta"] == "flips"
    segmenter = Segmenter.from_bundle(tiny_quantized_bundle, "fp32", tta="flips")
    sample = suite_samples(tiny_quantized_bundle, None, 1)[0][0]
    record = segmenter.predict(SHIFTS["blur-2"][0](sample.image, seed=(0, 0))).quality
    assert "disagreement" in record.distances  # optimize.quantize recorded the views' band
    blurred = next(r for r in report["rows"] if r["shift"] == "blur-2")
    assert blurred["flag_scores"] == pytest.approx([max(record.distances.values())])


@pytest.mark.slow
def test_a_missing_data_folder_or_model_is_one_line(tiny_quantized_bundle, tmp_path, capsys):
    bundle = str(tiny_quantized_bundle)
    for argv, expected in (
        (["--data", str(tmp_path / "gone")], "is not a folder"),
        (["--models", "int9"], "unknown model 'int9'"),
    ):
        assert main(parse_args(["--bundle", bundle, *argv])) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err


def test_the_data_is_the_held_out_split_of_the_bundles_own_folder(tmp_path, make_folder):
    """--data naming the training folder scores its held-out split, another folder whole."""
    import benchmarks.score as score
    import benchmarks.shifts as shifts

    folder = make_folder(count=10, size=16)
    other = tmp_path / "other"
    other.symlink_to(folder)  # the same folder by another path resolves the same
    fake = SimpleNamespace(classes=1)
    raw = {"configs": {"data": {"source": str(folder), "val_fraction": 0.2}}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shifts, "read_manifest", lambda _: fake)
        patch.setattr(shifts, "manifest_json", lambda _: raw)
        patch.setattr(score, "manifest_json", lambda _: raw)
        samples, what = shifts.suite_samples(Path("b"), None, None)
        assert [s.name for s in samples] == ["8", "9"] and "the last 2 of 10" in what
        samples, _ = shifts.suite_samples(Path("b"), other, 1)
        assert [s.name for s in samples] == ["8"]
        copy = tmp_path / "copy"
        copy.mkdir()
        for sub in ("image", "label"):
            (copy / sub).symlink_to(folder / sub)
        samples, what = shifts.suite_samples(Path("b"), copy, None)
        assert len(samples) == 10 and "every pair (10)" in what


def _prediction(mask: np.ndarray, flag: bool, distance: float):
    from runtime.quality import Quality
    from runtime.segmenter import Prediction

    quality = Quality({}, {"p50": distance, "noise": distance / 2}, "p50", flag, "")
    return Prediction(mask, mask[..., None].astype(np.float32), 0.0, quality=quality)


def test_flags_are_counted_per_shift_and_scored_across_the_suite():
    from benchmarks.score import Model
    from benchmarks.shifts import _summary, _Tally

    label = np.zeros((4, 4), np.uint8)
    label[:2] = 1  # 8 foreground pixels
    worse = label.copy()
    worse[0] = 0  # half of them: Dice 2/3
    tallies = {"none": _Tally(), "blur-1": _Tally()}
    # clean: 3 perfect images, one flagged falsely (distance 0.5)
    for flag, distance in ((False, 0.1), (True, 0.5), (False, 0.2)):
        tallies["none"].add(_prediction(label, flag, distance), label, 1)
    # blurred: images 0 and 1 degraded (2/3 < 1 - 0.05), image 1 flagged; image 2 as clean
    for mask, flag, distance in ((worse, False, 0.4), (worse, True, 0.9), (label, False, 0.3)):
        tallies["blur-1"].add(_prediction(mask, flag, distance), label, 1)
    clean = tallies["none"]
    rows = [
        clean.row("m", "none", "clean", clean),
        tallies["blur-1"].row("m", "blur-1", MILD, clean),
    ]
    assert (rows[1].degraded, rows[1].flagged, rows[1].flagged_degraded) == (2, 1, 1)
    assert rows[1].dice == pytest.approx(2 * 16 / (16 + 24)) and rows[0].flagged == 1  # pooled
    assert rows[1].flag_scores == (0.4, 0.9, 0.3)
    summary = _summary(Model("int8", "tflite int8", "int8", "litert", "f"), True, tallies, rows)
    assert summary.false_flag_rate == pytest.approx(1 / 3)
    assert (summary.degraded, summary.negatives) == (2, 4)
    # positives 0.4, 0.9 against negatives 0.1, 0.5, 0.2, 0.3: 0.4 beats 3, 0.9 beats 4
    assert summary.auroc == pytest.approx(7 / 8)
    assert (summary.mild, summary.mild_within, summary.worst_mild) == (1, 0, "blur-1")
