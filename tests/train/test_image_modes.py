"""Real folders mix image modes: every mode the loader accepts, in any mix, goes through the
validation tiles (the bundle's golden and calibration tiles) and, end to end, through train,
quantize, verify and predict."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime.image_io import read_image
from runtime.preprocess import Preprocessing, normalize, to_channels
from train.config import Foreground
from train.data.folder import load_folder
from train.pipeline import raw_validation_tiles

ROOT = Path(__file__).resolve().parents[2]
# Pillow modes of single images, and a multi-page TIFF stack (tifffile).
MODES = ("L", "LA", "RGB", "RGBA", "I;16", "P", "1", "F", "stack")
EIGHT_BIT = ("L", "LA", "RGB", "RGBA", "P", "1")  # Pillow's convert("L") is their grey picture


def _picture(mode: str, grey: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """`grey` (uint8) as an image of `mode`, with real content in every channel."""
    noise = rng.integers(0, 256, grey.shape, dtype=np.uint8)
    if mode == "L":
        return Image.fromarray(grey)
    if mode == "LA":  # alpha varies: it carries no content, and must not leak into the input
        return Image.fromarray(np.dstack([grey, noise]), "LA")
    rgb = np.dstack([grey, np.roll(grey, 3, axis=1), 255 - grey])
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, noise]), "RGBA")
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "P":
        return Image.fromarray(rgb).quantize(16)
    if mode == "1":
        return Image.fromarray(grey > 127)
    return Image.fromarray(grey.astype(np.float32) / 255)  # "F": float in [0, 1]


def _write_sample(root: Path, stem: str, mode: str, height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    mask = np.where(grey > 127, 255, 0).astype(np.uint8)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "label").mkdir(parents=True, exist_ok=True)
    if mode == "stack":
        tifffile.imwrite(root / "image" / f"{stem}.tif", np.stack([grey, 255 - grey]))
        tifffile.imwrite(root / "label" / f"{stem}.tif", np.stack([mask, 255 - mask]))
        return
    suffix = ".tif" if mode in ("F", "I;16") else ".png"
    _picture(mode, grey, rng).save(root / "image" / f"{stem}{suffix}")
    Image.fromarray(mask).save(root / "label" / f"{stem}.png")


def _write_folder(root: Path, modes: list[str], sizes: list[tuple[int, int]]) -> Path:
    for index, (mode, (height, width)) in enumerate(zip(modes, sizes, strict=True)):
        _write_sample(root, f"{index:02d}", mode, height, width, seed=index)
    return root


@pytest.mark.parametrize("mode", EIGHT_BIT)
def test_each_8_bit_mode_reads_as_its_grey_picture(tmp_path, mode):
    """Whatever the mode, a 1-channel model sees the picture a viewer shows in grey: a palette
    image its colours (not its indices), a bilevel one black and white (0 and 255), no alpha."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    path = tmp_path / "a.png"
    _picture(mode, grey, rng).save(path)
    seen = to_channels(read_image(path), 1)[..., 0].astype(int)
    with Image.open(path) as image:
        shown = np.array(image.convert("RGB").convert("L")).astype(int)
    assert np.abs(seen - shown).max() <= 1  # luma rounding only


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    modes=st.lists(st.sampled_from(MODES), min_size=2, max_size=5),
    channels=st.sampled_from([1, 3]),
    data=st.data(),
)
def test_any_mix_of_modes_gives_tiles_of_the_model_channels(tmp_path, modes, channels, data):
    """The golden and calibration tiles of a mixed folder stack into one array of the model's
    channels, and each image's tiles normalize to what the image alone gives (to float32
    rounding: mixed pixel types are stored scaled to [0, 1])."""
    sizes = data.draw(
        st.lists(
            st.tuples(st.integers(16, 45), st.integers(16, 45)),
            min_size=len(modes),
            max_size=len(modes),
        )
    )
    root = _write_folder(Path(tempfile.mkdtemp(dir=tmp_path)), modes, sizes)  # one per example
    samples = load_folder(root, 1, Foreground.BRIGHT)
    raw, masks = raw_validation_tiles(samples, 16, 16, channels)
    assert raw.shape[1:] == (16, 16, channels) and masks.shape[1:] == (16, 16, 1)
    prep = Preprocessing(channels=channels, mean=0.4, std=0.2)
    start = 0
    for sample in samples:
        alone, _ = raw_validation_tiles([sample], 16, 16, channels)
        mixed = raw[start : start + len(alone)]
        start += len(alone)
        for a, m in zip(alone, mixed, strict=True):
            np.testing.assert_allclose(normalize(m, prep), normalize(a, prep), atol=1e-5)
    assert start == len(raw)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


LENIENT_GATE = ["--method", "ptq", "--max-dice-drop", "1", "--allow-useless"]


@pytest.mark.slow
@settings(
    max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(modes=st.lists(st.sampled_from(MODES), min_size=4, max_size=6, unique=True))
def test_a_mixed_folder_goes_through_the_readme_commands(tmp_path_factory, modes):
    """train, quantize (post-training), verify and predict on a folder mixing modes and sizes,
    with the README's commands and no hand-fixing (grey+alpha beside RGBA failed before)."""
    work = tmp_path_factory.mktemp("chain")
    sizes = [(40 + 8 * i, 56 - 4 * i) for i in range(len(modes))]
    data = _write_folder(work / "data", modes, sizes)
    run, bundle, masks = work / "run", work / "bundle", work / "masks"
    train = ["train", "--data", str(data), "--preset", "tiny", "--input-size", "32", "-q"]
    quantize = ["optimize.quantize", "--model", str(run / "model.keras")]
    commands = [
        # 5 steps: Keras times the callbacks over the first 5.
        [*train, "--epochs", "1", "--steps-per-epoch", "5", "--batch-size", "2", "--out", str(run)],
        # A tiny model after 5 steps, no better than marking every pixel: the gate's budget
        # and its refusal of useless models are not what this test is about.
        [*quantize, *LENIENT_GATE, "--out", str(bundle)],
        ["runtime.verify", str(bundle), "--precision", "int8"],
        ["runtime.predict", str(bundle), str(data / "image"), "--out", str(masks)],
    ]
    for command in commands:
        done = _cli(*command)
        assert done.returncode == 0, (command[0], done.stderr[-3000:])
        # -q keeps back TensorFlow's and Keras' noise: a oneDNN error line from an 8-bit
        # transpose, and Keras' slow-callback warning over the first 5 steps. Training's own
        # warning that a 5-step model is useless is a warning -q keeps.
        noise = [
            line for line in done.stderr.splitlines() if "no better than a trivial" not in line
        ]
        assert "-q" not in command or not noise, done.stderr[-3000:]
    # One mask per image, and one multi-page mask per stack.
    assert len(list(masks.glob("*_mask.*"))) == len(modes)
    assert (masks / "quality.csv").is_file()  # the bundle's quality reference, per image
