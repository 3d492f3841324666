"""Shared fixtures: the ISBI folder when present, and small image/mask folders made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012-membrane"


@pytest.fixture
def isbi() -> Path:
    if not (ISBI / "image").is_dir():
        pytest.skip(f"ISBI 2012 data not found at {ISBI} (it lives in the workplace's shared/)")
    return ISBI


def write_pair(
    root: Path, stem: str, image: np.ndarray, mask: np.ndarray, suffix: str = ".png"
) -> None:
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "label").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "image" / f"{stem}{suffix}")
    Image.fromarray(mask).save(root / "label" / f"{stem}{suffix}")


@pytest.fixture
def make_folder(tmp_path: Path):
    """Writes `count` random images with two-valued masks (0 and 255) and returns the folder."""

    def make(count: int = 4, size: int = 32, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / "data"
        for i in range(count):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            mask = np.where(image > 128, 255, 0).astype(np.uint8)
            write_pair(root, str(i), image, mask)
        return root

    return make


def _train(root: Path, padding: str, input_size: int, epochs: int) -> Path:
    from runtime.preprocess import Normalization
    from train.config import DataConfig, TrainConfig, preset
    from train.trainer import run_training

    run = root / f"run-{padding}"
    model = preset("tiny").replace(padding=padding)
    # The training set's normalization and no field changes, not the defaults: a 120-step model
    # is fragile, and per-image normalization's float rounding (ours against bioimage.io's
    # per-sample step) moves its int8 outputs beyond the zoo's tolerance, so the int8 package
    # path would go untested. tests/test_per_image_normalization.py runs the defaults' chain.
    data = DataConfig(synthetic_count=8, synthetic_size=96, normalization=Normalization.DATASET)
    train = TrainConfig(
        input_size=input_size,
        batch_size=4,
        epochs=epochs,
        steps_per_epoch=10,
        learning_rate=1e-2,
        field_augment=False,
    )
    run_training(model, data, train, run, verbose=0)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny 'same' U-Net trained for 120 steps on synthetic data: a run folder (64 px tiles).

    Long enough that its masks mean something: int8 agreement with float is then a real test.
    """
    return _train(tmp_path_factory.mktemp("tiny"), "same", 64, epochs=12)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path) -> Path:
    """fp32 and int8 TFLite and fp32 ONNX of the tiny run, with manifest.json."""
    from optimize.quick import bundle_from_run

    return bundle_from_run(tiny_run, tiny_run.parent / "bundle-same")


@pytest.fixture(scope="session")
def tiny_quantized_bundle(tiny_run: Path) -> Path:
    """`python -m optimize.quantize` of the tiny run (short QAT): every export, gated."""
    from optimize.quantize import main, parse_args

    out = tiny_run.parent / "bundle-quantized"
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(out)]
    assert main(parse_args([*argv, "--qat-epochs", "2", "--steps-per-epoch", "10"])) == 0
    return out


@pytest.fixture(autouse=True)
def _cache_folder(tmp_path_factory, monkeypatch) -> None:
    """The runtime's choices (precision="auto") go to a test folder, not the user's cache."""
    monkeypatch.setenv("UNET_EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_valid_bundle(tmp_path_factory) -> Path:
    """The same for a 'valid' U-Net: 60x60 input tiles, 20x20 output tiles."""
    from optimize.quick import bundle_from_run

    run = _train(tmp_path_factory.mktemp("tiny-valid"), "valid", 60, epochs=2)
    return bundle_from_run(run, run.parent / "bundle-valid")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The zoo's settings are read at its import: a private cache, and no way out."""
    patch = pytest.MonkeyPatch()
    patch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path_factory.mktemp("bioimageio-cache")))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        patch.setenv(name, "http://127.0.0.1:9")
    patch.delenv("NO_PROXY", raising=False)
    patch.delenv("no_proxy", raising=False)
    yield
    patch.undo()
