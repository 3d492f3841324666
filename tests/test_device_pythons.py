"""Devices run other Pythons: each device extra installs on 3.12 and 3.13 (Ubuntu 24.04,
Raspberry Pi OS trixie) and its runtime verifies and segments a real bundle there.

The workstation stays on 3.11 (the pinned TensorFlow set is tested there); the device side is
numpy, Pillow and one engine, whose pinned releases ship wheels for 3.11-3.13.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.12", "3.13")
EXTRAS = ("runtime-litert", "runtime-onnx")


def _python(version: str) -> str | None:
    """An interpreter of that minor version that runs: pyenv's, or one on PATH (a pyenv shim
    on PATH answers only for the versions pyenv has switched on)."""
    candidates = [
        *map(str, sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))),
        shutil.which(f"python{version}"),
    ]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.startswith(f"Python {version}."):
            return candidate
    return None


def _run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_device_extra_installs_and_runs_on_newer_pythons(
    version, extra, tiny_quantized_bundle, tmp_path
):
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} here (python{version} on PATH, or pyenv's)")
    venv = tmp_path / "venv"
    assert _run(python, "-m", "venv", str(venv), cwd=tmp_path).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", "constraints.txt"]
    done = _run(*pip, f".[{extra}]", cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90), dtype=np.uint8)).save(image)
    device = str(venv / "bin" / "python")
    # From outside the checkout: the installed package runs, not the working tree.
    verify = _run(device, "-m", "runtime.verify", str(tiny_quantized_bundle), cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert "verified on this device" in verify.stdout
    predict = _run(
        device, "-m", "runtime.predict", str(tiny_quantized_bundle), str(image),
        "--out", str(tmp_path / "masks"), cwd=tmp_path,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert (tmp_path / "masks" / "a_mask.png").is_file()
    # The device install holds no TensorFlow (nor the other engine).
    listed = _run(device, "-m", "pip", "list", "--format=freeze", cwd=tmp_path).stdout.lower()
    assert "tensorflow" not in listed
    other = "onnxruntime" if extra == "runtime-litert" else "ai-edge-litert"
    assert other not in listed
