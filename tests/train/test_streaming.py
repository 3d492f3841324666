"""A folder larger than the memory it may use trains: files are read when the pipeline needs
them, not decoded and held as float32 up front."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# Trains a few steps and prints this process's peak RSS (VmHWM) in MB as its last line.
CHILD = """
import sys
from benchmarks.coldstart import peak_rss_mb
from train.cli import main, parse_args
code = main(parse_args(sys.argv[1:]))
print(peak_rss_mb())
sys.exit(code)
"""


def _folder(root: Path, count: int, side: int) -> int:
    """`count` image/mask pairs of side x side pixels (copies of one pair: the bytes on disk do
    not matter, the decoded size does); returns the data set's size as float32 in bytes."""
    rng = np.random.default_rng(0)
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(
        root / "image" / "0.png"
    )
    Image.fromarray(np.where(rng.random((side, side)) > 0.5, 255, 0).astype(np.uint8)).save(
        root / "label" / "0.png"
    )
    for i in range(1, count):
        shutil.copy(root / "image" / "0.png", root / "image" / f"{i}.png")
        shutil.copy(root / "label" / "0.png", root / "label" / f"{i}.png")
    return count * side * side * 4


def _peak_rss_mb(data: Path, out: Path) -> float:
    argv = ["--data", str(data), "--preset", "tiny", "--input-size", "64", "--batch-size", "4"]
    argv += ["--epochs", "1", "--steps-per-epoch", "3", "--val-fraction", "0.05", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_folder_larger_than_the_memory_cap_trains_within_it(tmp_path):
    """The same few steps on 4 and on 80 slices of 1024x1024: the 80 (336 MB as float32) may
    add at most a quarter of that to the peak RSS. Holding them as float32, as the pipeline
    used to (with its in-memory cache on top), adds more than the whole."""
    _folder(tmp_path / "small", 4, 1024)
    size = _folder(tmp_path / "large", 80, 1024)
    base = _peak_rss_mb(tmp_path / "small", tmp_path / "run-small")
    large = _peak_rss_mb(tmp_path / "large", tmp_path / "run-large")
    cap = base + size / 4 / 1e6
    assert large <= cap, (
        f"peak RSS {large:.0f} MB over the cap {cap:.0f} MB (4 slices: {base:.0f} MB)"
    )
    metrics = json.loads((tmp_path / "run-large" / "metrics.json").read_text())
    assert len(metrics["final"]["per_image"]) == 4  # 5% of 80 held out, scored whole


def test_the_on_disk_cache_is_written_once_and_read_back(tmp_path):
    from runtime.preprocess import Preprocessing
    from train.config import Foreground, TrainConfig
    from train.data.folder import load_folder
    from train.pipeline import train_dataset

    _folder(tmp_path / "data", 3, 64)
    samples = load_folder(tmp_path / "data", 1, Foreground.BRIGHT)
    config = TrainConfig(input_size=32, batch_size=2, augment=False, elastic=False)
    prep = Preprocessing()
    cache = tmp_path / "cache" / "train"
    cache.parent.mkdir()
    batches = iter(train_dataset(samples, prep, config, 32, 2, cache=str(cache)))
    for _ in range(20):  # more crops than one pass over the three files gives
        images, masks = next(batches)
        assert images.shape == (2, 32, 32, 1) and masks.shape == (2, 32, 32, 1)
    assert list(cache.parent.glob("train*.index"))  # tf.data wrote the cache
