"""Golden tiles: a few held-out inputs and the float model's outputs, shipped in the bundle,
and the check of a model against them.

A bundle is built on one computer and run on another whose kernels may compute otherwise (an
x86 CPU without VNNI saturates where one with VNNI does not). The golden tiles let the device
run its models on the inputs the build machine's gate saw and compare (`check_model`; the CLI is
`runtime.verify`). A model fails when its Dice against the float mask here falls below the build
machine's figure by more than the bundle's Dice budget: the loss the gate allowed, measured again
where it runs.

The inputs are raw pixels (as the images had them, uint8 or uint16; float16 for float images),
so the device's own pre-processing is part of what it checks. The float model's probabilities
are stored on a 1/255 grid (uint8) and its masks as computed from the full-precision ones.
"""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from runtime.backends import Backend, check_backend, engines_for, installed_backends
from runtime.bundle import Artifact, BuildFigures, Manifest, verified_path
from runtime.errors import UserError
from runtime.metrics import float_parity, masks_from_probabilities
from runtime.preprocess import Preprocessing, normalize

GOLDEN_FILE = "golden.npz"
# Pixels of golden input at most: two 256 px tiles or one 512 px tile, 0.25-0.45 MB with the float
# outputs (noisy EM pixels and probabilities compress to ~85%, the masks to ~6%).
PIXEL_BUDGET = 2 * 256 * 256


@dataclasses.dataclass(frozen=True)
class Golden:
    images: np.ndarray  # (N, in, in, C) raw pixels
    probabilities: np.ndarray  # (N, out, out, K) uint8: the float model's probabilities x 255
    masks: np.ndarray  # (N, out, out) uint8: the float model's class indices

    @classmethod
    def of(cls, images: np.ndarray, probabilities: np.ndarray, masks: np.ndarray) -> Golden:
        images = np.asarray(images)
        if np.issubdtype(images.dtype, np.floating):
            images = images.astype(np.float16)
        return cls(
            images=images,
            probabilities=np.rint(np.clip(probabilities, 0, 1) * 255).astype(np.uint8),
            masks=np.asarray(masks, np.uint8),
        )

    def inputs(self, prep: Preprocessing) -> np.ndarray:
        """The model inputs, through the runtime's own pre-processing."""
        return np.stack([normalize(image, prep) for image in self.images])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, images=self.images, probabilities=self.probabilities, masks=self.masks
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Golden:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(arrays["images"], arrays["probabilities"], arrays["masks"])


def golden_count(tile_size: int, available: int) -> int:
    """How many tiles fit the pixel budget (at least one)."""
    return max(1, min(available, PIXEL_BUDGET // (tile_size * tile_size)))


def load_golden(bundle: str | Path, file: str, sha256: str) -> Golden:
    """The bundle's golden tiles after checking their SHA-256 against the manifest."""
    path = verified_path(bundle, file, sha256, what="golden tile file")
    try:
        return Golden.from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UserError(
            f"cannot read golden tiles {path} ({type(error).__name__}: {error}): the file is "
            "cut short or corrupt; re-copy the bundle"
        ) from None


class VerificationFailed(UserError):
    """A model computes worse masks on this device than the gate measured: exit code 1."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Check:
    """One model on this device's golden-tile run, beside the build machine's figures."""

    file: str
    backend: str
    agreement_with_float: float
    dice_vs_float: float
    ms_per_tile: float
    built: BuildFigures | None  # None: the build machine did not score this model
    budget: float

    @property
    def passed(self) -> bool:
        return self.built is None or self.dice_vs_float >= self.built.dice_vs_float - self.budget

    def failure(self) -> str:
        assert self.built is not None
        return (
            f"{self.file} on {self.backend} fails on this device: Dice against the float mask "
            f"{self.dice_vs_float:.4f} here, {self.built.dice_vs_float:.4f} on the build machine "
            f"(budget {self.budget:g}); agreement with float {self.agreement_with_float:.2%} here, "
            f"{self.built.agreement_with_float:.2%} there"
        )


def measure(
    model: Backend, golden: Golden, prep: Preprocessing, classes: int, threshold: float = 0.5
) -> dict[str, float]:
    """Agreement and Dice with the float masks, and ms per tile, of a model on the golden tiles.

    The build (`optimize.quantize`) records exactly this for every model, and the device
    repeats it: one code path.
    """
    inputs = golden.inputs(prep)
    model.run(inputs)  # warm-up at this batch: first-run allocations and kernel packing
    start = time.perf_counter()
    probabilities = model.run(inputs)
    ms_per_tile = (time.perf_counter() - start) * 1000 / len(inputs)
    masks = masks_from_probabilities(probabilities, threshold)
    scores = float_parity(masks, golden.masks, classes)
    return {**scores, "ms_per_tile": ms_per_tile}


def golden_of(bundle: str | Path, manifest: Manifest) -> Golden:
    """The bundle's golden tiles, hash-checked; an older bundle without them is a UserError."""
    if manifest.golden is None:
        raise UserError(
            f"{bundle} has no golden tiles (it was made before bundles carried them): rebuild it "
            "with python -m optimize.quantize (or optimize.export) to verify it on a device"
        )
    return load_golden(bundle, manifest.golden.file, manifest.golden.sha256)


def check_model(model: Backend, artifact: Artifact, manifest: Manifest, golden: Golden) -> Check:
    assert manifest.golden is not None
    scores = measure(model, golden, manifest.preprocessing, manifest.classes, manifest.threshold)
    return Check(
        file=artifact.file,
        backend=model.name,
        agreement_with_float=scores["agreement_with_float"],
        dice_vs_float=scores["dice_vs_float"],
        ms_per_tile=scores["ms_per_tile"],
        built=manifest.golden.models.get(artifact.file),
        budget=manifest.golden.max_dice_drop,
    )


def runnable(manifest: Manifest, precision: str | None, backend: str) -> list[tuple[Artifact, str]]:
    """(model, engine) pairs of the bundle (of one precision, when given): with
    `backend="auto"` every pair of a model and an installed engine that reads its format (an
    .onnx file on onnxruntime and on OpenVINO), else that engine's models."""
    engines = installed_backends() if backend == "auto" else [check_backend(backend)]
    return [
        (a, name)
        for a in manifest.artifacts
        if precision is None or a.precision == precision
        for name in engines_for(a.format, engines, a.precision)
    ]
