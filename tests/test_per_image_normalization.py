"""Per-image normalization through the chain: training records it, the runtime applies it to
the whole image before any tiling, the golden tiles verify, and the bioimage.io package says
`zero_mean_unit_variance`, passes the zoo's tester and reads back to the same masks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from optimize.bioimageio import Options, write_package
from optimize.quick import bundle_from_run
from runtime.bundle import read_manifest
from runtime.preprocess import Normalization, normalize
from runtime.segmenter import Segmenter
from runtime.verify import main as verify_main
from runtime.verify import parse_args as verify_args
from tests.zoo_package import zoo_test
from train.config import DataConfig, TrainConfig, preset
from train.data.synthetic import generate_em
from train.trainer import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("per-image")
    data = DataConfig(synthetic_count=8, synthetic_size=96, normalization=Normalization.IMAGE)
    train = TrainConfig(
        input_size=64, batch_size=4, epochs=4, steps_per_epoch=10, learning_rate=1e-2
    )
    run_training(preset("tiny"), data, train, root / "run", verbose=0)
    assert (
        json.loads((root / "run" / "config.json").read_text())["preprocessing"]["normalization"]
        == "image"
    )
    return bundle_from_run(root / "run", root / "bundle")


def _image() -> np.ndarray:
    return generate_em(1, (144, 208), seed=5)[0][0]


def test_the_runtime_normalizes_the_whole_image_and_ignores_a_gain(bundle):
    assert read_manifest(bundle).preprocessing.normalization is Normalization.IMAGE
    whole = Segmenter.from_bundle(bundle, precision="fp32", backend="onnx")
    # Room for 96x96 runs by the memory line it plans with: its base differs between CPUs.
    budget = whole.memory.mb(96 * 96)
    tiled = Segmenter.from_bundle(bundle, precision="fp32", backend="onnx", max_memory_mb=budget)
    image = _image()
    # Tiles are cut from the whole image normalized by its own statistics, never a tile's.
    expected = normalize(image, read_manifest(bundle).preprocessing)
    np.testing.assert_array_equal(tiled.prepare(image).input, expected)
    one, many = whole.predict(image), tiled.predict(image)
    assert one.tiles == 1 and many.tiles > 1
    assert np.mean(one.mask == many.mask) >= 0.999  # tile borders, as for the training mean
    darker = np.rint(image.astype(np.float32) * 0.6 + 20).astype(np.uint8)  # a camera's gain
    agreement = np.mean(whole.predict(darker).mask == one.mask)
    assert agreement > 0.98  # uint8 rounding of the darker image moves a few edge pixels


def test_the_golden_tiles_verify(bundle, capsys):
    assert verify_main(verify_args([str(bundle)])) == 0


def test_the_zoo_package_normalizes_each_sample_and_reads_back(bundle, tmp_path, offline):
    package = write_package(bundle, tmp_path / "unet.zip", Options(precision="fp32")).path
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    steps = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    assert "zero_mean_unit_variance" in steps and "fixed_zero_mean_unit_variance" not in steps
    zoo_test(package)
    image = _image()
    ours = Segmenter.from_bundle(bundle, precision="fp32", backend="onnx").predict(image)
    theirs = Segmenter.from_bundle(package).predict(image)
    np.testing.assert_allclose(theirs.probabilities, ours.probabilities, atol=1e-4)
