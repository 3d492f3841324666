"""`python -m benchmarks.score` on the tiny bundle and a small labelled folder of odd sizes: its
numbers against `runtime.metrics.dice` and `benchmarks.objects` computed here, and bad input as
one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.objects import object_counts, summarize
from benchmarks.score import main, parse_args
from runtime.backends import ENGINES
from runtime.bundle import read_manifest
from runtime.metrics import dice
from runtime.segmenter import Segmenter

SHAPES = ((105, 105), (97, 150), (64, 64))  # (height, width): odd sizes, one not square
# Per image: defects as (row, column, radius), apart from each other; the last image has none.
DEFECTS = (((20, 20, 1.5), (50, 60, 3.0), (80, 30, 6.0)), ((20, 30, 2.0), (60, 100, 4.0)), ())


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """Grey images with dark defects of several sizes on a noisy background, and their 0/255
    labels."""
    rng = np.random.default_rng(7)
    root = tmp_path / "test-set"
    for i, ((height, width), defects) in enumerate(zip(SHAPES, DEFECTS, strict=True)):
        image = rng.normal(150, 20, (height, width))
        label = np.zeros((height, width), np.uint8)
        yy, xx = np.mgrid[:height, :width]
        for y, x, r in defects:
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= r**2
            image[disc] = 40
            label[disc] = 255
        for sub, array in (("image", np.clip(image, 0, 255).astype(np.uint8)), ("label", label)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / f"part-{i}.png")
    return root


def _expected(bundle: Path, folder: Path, precision: str, engine: str) -> dict:
    """Pooled and per-image Dice and the object summary, computed apart from the command."""
    segmenter = Segmenter.from_bundle(bundle, precision, engine)
    masks, labels = [], []
    for path in sorted((folder / "image").iterdir()):
        image = np.asarray(Image.open(path))
        labels.append((np.asarray(Image.open(folder / "label" / path.name)) > 0).astype(np.uint8))
        masks.append(segmenter.predict(image).mask)
    pooled = dice(
        np.concatenate([m.ravel() for m in masks]), np.concatenate([t.ravel() for t in labels])
    )
    return {
        "dice": pooled,
        "per_image": [dice(m, t) for m, t in zip(masks, labels, strict=True)],
        "objects": summarize(object_counts(m, t) for m, t in zip(masks, labels, strict=True)),
    }


@pytest.mark.slow
def test_scores_every_model_on_a_folder_as_computed_independently(
    tiny_bundle, labelled_folder, tmp_path, capsys
):
    out = tmp_path / "scores.json"
    argv = ["--bundle", str(tiny_bundle), "--data", str(labelled_folder), "--out", str(out)]
    assert main(parse_args(argv)) == 0
    printed = capsys.readouterr().out.splitlines()
    report = json.loads(out.read_text())
    manifest = read_manifest(tiny_bundle)
    assert [m["file"] for m in report["models"]] == [a.file for a in manifest.artifacts]
    assert report["images"] == 3 and report["threshold"] == manifest.threshold
    for model in report["models"]:
        precision = next(a.precision for a in manifest.artifacts if a.file == model["file"])
        expected = _expected(tiny_bundle, labelled_folder, precision, model["engine"])
        assert model["dice"] == pytest.approx(expected["dice"])
        rows = model["per_image"]
        assert [(r["image"], r["height"], r["width"]) for r in rows] == [
            (f"part-{i}", h, w) for i, (h, w) in enumerate(SHAPES)
        ]
        assert [r["dice"] for r in rows] == pytest.approx(expected["per_image"])
        assert model["mean_image_dice"] == pytest.approx(np.mean(expected["per_image"]))
        assert model["objects"] == expected["objects"]  # the same sums, in the same order
        assert model["objects"]["labelled"] == 5 and model["objects"]["labelled_images"] == 2
        assert sum(r["found"] for r in rows) == model["objects"]["found"]
        [line] = [line for line in printed if line.startswith(model["name"] + " ")]
        assert f"Dice {expected['dice']:.4f}" in line
        assert f"objects {model['objects']['found']}/5" in line


def test_bad_input_is_one_line_and_exit_2(tiny_bundle, labelled_folder, tmp_path, capsys):
    def error(*argv: str) -> str:
        assert main(parse_args(["--bundle", str(tiny_bundle), *argv])) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: "), err
        return err

    assert "is not a folder" in error("--data", str(tmp_path / "missing"))
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "image").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(unlabelled / "image" / "0.png")
    assert "no mask folder" in error("--data", str(unlabelled))
    assert "unknown model 'int9'" in error("--data", str(labelled_folder), "--models", "int8,int9")
    assert "is a folder" in error("--data", str(labelled_folder), "--out", str(tmp_path))
    assert main(parse_args(["--bundle", str(tmp_path), "--data", str(labelled_folder)])) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_a_model_that_cannot_run_is_passed_over_unless_named(
    tiny_bundle, labelled_folder, tmp_path, capsys, monkeypatch
):
    gone = dataclasses.replace(ENGINES["onnx"], modules=("no_such_module_here",))
    monkeypatch.setitem(ENGINES, "onnx", gone)
    argv = ["--bundle", str(tiny_bundle), "--data", str(labelled_folder), "--models"]
    assert main(parse_args([*argv, "fp32,fp32-onnx"])) == 2
    assert (
        "cannot run fp32-onnx (model_fp32.onnx): onnx is not installed" in capsys.readouterr().err
    )
    out = tmp_path / "scores.json"
    assert main(parse_args([*argv[:-1], "--out", str(out)])) == 0
    report = json.loads(out.read_text())
    assert "fp32-onnx" in report["skipped"] and "onnx" not in {
        m["engine"] for m in report["models"]
    }
    assert "passing over fp32-onnx" in capsys.readouterr().err
