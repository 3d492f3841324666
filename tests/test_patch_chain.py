"""A patch-2 U-Net (every level at half resolution) through the whole chain: trained, quantized
by `python -m optimize.quantize` (QAT and post-training, both engines' int8), run by the
runtime on an odd-sized image, verified, filter-pruned and packaged for bioimage.io."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimize.bioimageio import Options, write_package
from optimize.filter_prune import filter_prune
from optimize.finetune import Run
from optimize.pruning import magnitude_prune
from optimize.quantize import main as quantize_main
from optimize.quantize import parse_args as quantize_args
from optimize.wrapping import sparsity_report
from runtime.bundle import read_manifest
from runtime.preprocess import normalize
from runtime.segmenter import Segmenter
from runtime.verify import main as verify_main
from runtime.verify import parse_args as verify_args
from tests.zoo_package import zoo_test
from train.config import DataConfig, TrainConfig, preset
from train.data.synthetic import generate_em
from train.tfk import keras
from train.trainer import run_training

pytestmark = pytest.mark.slow

PATCHED = preset("tiny").replace(patch=2)  # base 4, depth 2: any side that is a multiple of 8


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("patch")
    data = DataConfig(synthetic_count=8, synthetic_size=96, normalization="dataset")
    train = TrainConfig(
        input_size=64,
        batch_size=4,
        epochs=12,
        steps_per_epoch=10,
        learning_rate=1e-2,
        field_augment=False,
    )
    run_training(PATCHED, data, train, root / "run", verbose=0)
    return root / "run"


@pytest.fixture(scope="module")
def bundle(run: Path) -> Path:
    out = run.parent / "bundle"
    argv = ["--model", str(run / "model.keras"), "--out", str(out)]
    assert (
        quantize_main(quantize_args([*argv, "--qat-epochs", "2", "--steps-per-epoch", "10"])) == 0
    )
    return out


def _image() -> np.ndarray:
    return generate_em(1, (90, 133), seed=5)[0][0]  # neither side a multiple of 8


def test_the_bundle_runs_odd_sizes_on_every_engine_like_the_float_model(run, bundle):
    manifest = read_manifest(bundle)
    assert manifest.size_multiple == 8
    image = _image()
    model = keras.models.load_model(run / "model.keras", compile=False)
    x = normalize(image, manifest.preprocessing)
    pad = ((0, -x.shape[0] % 8), (0, -x.shape[1] % 8), (0, 0))
    want = model(np.pad(x, pad, mode="symmetric")[None], training=False).numpy()[0, :90, :133]
    float_mask = want[..., 0] > manifest.threshold
    assert 0.05 < float_mask.mean() < 0.95  # it learned something to compare
    for backend in ("litert", "onnx", "openvino"):
        fp32 = Segmenter.from_bundle(bundle, precision="fp32", backend=backend).predict(image)
        assert fp32.mask.shape == image.shape[:2]
        # float32 engines against Keras: summation order only
        np.testing.assert_allclose(fp32.probabilities[..., 0], want[..., 0], atol=1e-4)
        int8 = Segmenter.from_bundle(bundle, precision="int8", backend=backend).predict(image)
        # int8 rounding moves edge pixels only; a patch grid off by a pixel, or a head whose
        # four outputs land on the wrong pixels, disagrees on a large share of them.
        assert np.mean(int8.mask == float_mask) > 0.95, backend


def test_the_golden_tiles_verify(bundle):
    assert verify_main(verify_args([str(bundle)])) == 0


def test_filter_pruning_keeps_the_stem_and_head_and_computes_the_same_shape(run):
    model = keras.models.load_model(run / "model.keras", compile=False)
    thin, widths = filter_prune(model, PATCHED, None, 0.5)
    assert "stem" not in widths and "head" not in widths
    assert thin.get_layer("enc1_conv_a").filters == 2
    x = np.zeros((1, 24, 24, 1), np.float32)
    assert thin(x, training=False).shape == (1, 24, 24, 1)


def test_magnitude_pruning_keeps_the_stem_and_head_dense(run):
    model = keras.models.load_model(run / "model.keras", compile=False)
    pruned = magnitude_prune(model, Run.load(run), epochs=1, steps_per_epoch=2, verbose=0)
    layers = sparsity_report(pruned).layers
    for name in ("stem", "enc1_conv_a", "head"):
        assert layers[name].zeros == 0, name
    assert layers["enc2_conv_a"].sparsity > 0.4


def test_the_zoo_package_passes_the_zoo_tester(bundle, tmp_path, offline):
    package = write_package(bundle, tmp_path / "unet.zip", Options()).path
    zoo_test(package)
