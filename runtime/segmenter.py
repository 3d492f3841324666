"""`Segmenter`: a bundle's model behind numpy in, mask out, for any image size."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from runtime.backends import BACKENDS, Backend, check_backend, installed_backends
from runtime.bundle import Manifest, read_manifest, verified_model_path
from runtime.choice import choose
from runtime.errors import UserError
from runtime.golden import VerificationFailed, check_model, golden_of
from runtime.image_io import read_image
from runtime.metrics import masks_from_probabilities
from runtime.preprocess import normalize
from runtime.tiling import predict_tiled


@dataclasses.dataclass(frozen=True)
class Prediction:
    mask: np.ndarray  # (H, W) uint8 class indices, the input's height and width
    probabilities: np.ndarray  # (H, W, K) float32: K = 1 for a sigmoid model
    seconds: float  # pre-processing, inference and stitching, not image decoding


def _channel_count(image: np.ndarray) -> int:
    """Colour channels without alpha: L and LA are 1, RGB and RGBA are 3."""
    return 1 if image.ndim == 2 or image.shape[-1] in (1, 2) else 3


class Segmenter:
    """Runs one model of a bundle. Build it with `Segmenter.from_bundle`."""

    def __init__(self, manifest: Manifest, backend: Backend, precision: str, overlap: int) -> None:
        self.manifest = manifest
        self.backend = backend
        self.precision = precision
        self.overlap = overlap

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        precision: str = "auto",
        backend: str = "auto",
        num_threads: int | None = None,
        overlap: int | None = None,
        verify: bool = False,
    ) -> Segmenter:
        """Loads the bundle's `precision` model after verifying its SHA-256.

        Args:
            path: the bundle folder.
            precision: "auto" (the fastest model this device verifies within the bundle's Dice
                budget: `runtime.choice`, measured once and cached), "int8" (the model that
                passed the parity gate), "fp32", or any other precision the manifest lists.
            backend: "litert", "onnx", or "auto": for a named precision LiteRT when it is
                installed and the bundle has that precision as .tflite, else ONNX Runtime. The
                choice is printed to stderr.
            num_threads: interpreter threads; None lets the interpreter choose.
            overlap: output pixels shared by neighbouring tiles (default: an eighth of a tile).
            verify: run the model on the bundle's golden tiles first and raise
                `runtime.VerificationFailed` if it computes worse masks here than the
                build machine measured (beyond the bundle's Dice budget).
        """
        manifest = read_manifest(path)
        check_backend(backend)
        if precision == "auto":
            precision, backend = _auto(path, manifest, backend, num_threads)
        if precision not in manifest.precisions:
            raise UserError(
                f"unknown precision {precision!r}: the bundle has auto, "
                f"{', '.join(manifest.precisions)}"
            )
        name = _pick_backend(manifest, precision, backend)
        fmt, loader = BACKENDS[name]
        artifact = manifest.artifact(precision, fmt)
        model = loader(verified_model_path(path, artifact), num_threads)
        if backend == "auto":
            print(f"runtime: {artifact.file} on {name}", file=sys.stderr)
        if verify:
            check = check_model(model, artifact, manifest, golden_of(path, manifest))
            if not check.passed:
                raise VerificationFailed(check.failure())
        tile_overlap = manifest.output_size // 8 if overlap is None else overlap
        if not 0 <= tile_overlap < manifest.output_size:
            raise UserError(f"overlap must be in [0, {manifest.output_size}), got {tile_overlap}")
        return cls(manifest, model, precision, tile_overlap)

    def predict(self, image: np.ndarray | str | Path, threshold: float | None = None) -> Prediction:
        """Segments one image: a numpy array as Pillow gives it, or an image file's path."""
        array = read_image(Path(image)) if isinstance(image, str | Path) else np.asarray(image)
        self._say_channel_conversion(array)
        start = time.perf_counter()
        m = self.manifest
        probs = predict_tiled(
            normalize(array, m.preprocessing),
            self.backend.run,
            m.input_size,
            m.output_size,
            self.overlap,
            align=m.size_multiple,
        )
        mask = masks_from_probabilities(probs, m.threshold if threshold is None else threshold)
        return Prediction(mask, probs, time.perf_counter() - start)

    def predict_batch(self, images: list, threshold: float | None = None) -> list[Prediction]:
        return [self.predict(image, threshold) for image in images]

    def _say_channel_conversion(self, image: np.ndarray) -> None:
        if image.ndim not in (2, 3):
            return  # normalize raises the clear error
        have, want = _channel_count(image), self.manifest.channels
        if have != want:
            kinds = {1: "grey", 3: "RGB"}
            warnings.warn(
                f"converted a {kinds[have]} image to {kinds[want]} for this {want}-channel model",
                stacklevel=3,
            )


def _auto(
    path: str | Path, manifest: Manifest, backend: str, num_threads: int | None
) -> tuple[str, str]:
    """precision="auto": the device's choice, or the gated int8 model in an older bundle."""
    if manifest.golden is None:
        print(
            "runtime: auto: this bundle has no golden tiles to verify models with (made before "
            "they existed): taking the gated int8 model; rebuild the bundle for the choice",
            file=sys.stderr,
        )
        return "int8", backend
    choice = choose(path, manifest, backend, num_threads)
    return choice.precision, choice.backend


def _pick_backend(manifest: Manifest, precision: str, backend: str) -> str:
    if backend != "auto":
        return backend
    for name in installed_backends():
        if any(
            a.precision == precision and a.format == BACKENDS[name][0] for a in manifest.artifacts
        ):
            return name
    raise UserError(
        f"no installed interpreter runs the bundle's {precision} model: pip install ai-edge-litert or onnxruntime"
    )


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An RGB uint8 picture of the image with each foreground class tinted its own colour."""
    grey = np.asarray(image)
    if grey.ndim == 3:
        grey = grey[..., :3].mean(-1) if grey.shape[-1] >= 3 else grey[..., 0]
    grey = grey.astype(np.float32)
    span = float(grey.max() - grey.min()) or 1.0
    base = np.repeat(((grey - grey.min()) / span * 255)[..., None], 3, axis=-1)
    palette = np.array(
        [[0, 0, 0], [255, 40, 40], [40, 200, 40], [40, 90, 255], [240, 200, 0]], np.float32
    )
    colours = palette[np.minimum(mask, len(palette) - 1)]
    tinted = np.where((mask > 0)[..., None], (1 - alpha) * base + alpha * colours, base)
    return tinted.astype(np.uint8)
