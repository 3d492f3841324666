"""A bioimage.io format 0.5 package around a small ONNX model, written for the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml


def write_package(folder: Path, onnx_bytes: bytes, inputs: dict, outputs: dict) -> Path:
    """A format 0.5 package as bioimageio.spec reads it (no test tensors: nothing to verify)."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "README.md").write_text("A 1x1 convolution for the runtime's tests.\n")
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": "conv1x1",
        "description": "a 1x1 convolution",
        "authors": [{"name": "unet-edge tests"}],
        "cite": [{"text": "none", "doi": "10.1000/1"}],
        "license": "MIT",
        "documentation": "README.md",
        "inputs": [{"id": "raw", **inputs}],
        "outputs": [{"id": "prob", **outputs}],
        "weights": {
            "onnx": {
                "source": "model.onnx",
                "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                "opset_version": 17,
            }
        },
    }
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def zoo_test(package: Path) -> None:
    """`bioimageio test PACKAGE` for its ONNX weights; fails with the zoo's own summary."""
    core = pytest.importorskip("bioimageio.core", reason="the zoo extra: pip install .[zoo]")
    summary = core.test_model(package, weight_format="onnx")
    assert summary.status == "passed", summary.format()
