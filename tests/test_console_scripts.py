"""Every console script of pyproject.toml is installed and answers --help."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_answers_help(name):
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable}: pip install -e .")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
    assert done.stderr == ""  # no TensorFlow start-up lines (oneDNN, CUDA stubs)
