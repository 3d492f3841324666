"""Shared fixtures: the ISBI folder when present, and small image/mask folders made on the fly."""

from __future__ import annotations

import os
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


@pytest.fixture(autouse=True)
def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
