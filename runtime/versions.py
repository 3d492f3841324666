"""The package versions every artifact records: one list, so that a training run, a bundle from
`optimize.quantize` or `optimize.export` and a benchmark report name the same packages."""

from __future__ import annotations

import sys

PACKAGES = (
    "numpy",
    "pillow",
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "openvino",
    "ai-edge-litert",
    "archspec",
    "tifffile",
)


def package_versions() -> dict[str, str]:
    """Python's version and each of PACKAGES' ("not installed" where it is not)."""
    import importlib.metadata  # here, not at import: the runtime's processes rarely need it

    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
