"""`Segmenter`: a bundle's model behind numpy in, mask out, for any image size."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from runtime.backends import (
    BACKENDS,
    ENGINES,
    Backend,
    check_backend,
    check_runs,
    installed_backends,
)
from runtime.bundle import Artifact, Manifest, read_manifest, verified_model_path
from runtime.cache import memory_line
from runtime.choice import choose
from runtime.errors import UserError
from runtime.golden import VerificationFailed, check_model, golden_of
from runtime.image_io import read_image
from runtime.memory import DEFAULT_MAX_MEMORY_MB
from runtime.metrics import check_threshold, masks_from_probabilities
from runtime.preprocess import normalize
from runtime.quality import (
    QUALITY_VERSION,
    Quality,
    Reference,
    assess,
    input_statistics,
    output_statistics,
)
from runtime.tiling import TilePlan, default_overlap, plan_image, predict_tiled
from runtime.tta import FLIPS, augmented, check_tta
from runtime.zoo import is_package
from runtime.zoo import load as zoo_load

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Prediction:
    mask: np.ndarray  # (H, W) uint8 class indices, the input's height and width
    probabilities: np.ndarray  # (H, W, K) float32: K = 1 for a sigmoid model
    seconds: float  # pre-processing, inference and stitching, not image decoding
    tiles: int = 1  # interpreter inputs the image took: 1 is one pass over the whole image
    # Whether the image looks like the training images (`runtime.quality`); None when the
    # bundle records no reference (made before it, or a package from elsewhere).
    quality: Quality | None = None


@dataclasses.dataclass(frozen=True)
class Prepared:
    input: np.ndarray  # (H, W, C) float32, normalized as the model was trained
    note: str | None  # what pre-processing changed that the caller should hear (channels)
    # The raw image's input statistics (`runtime.quality`), when the bundle has a reference.
    statistics: dict[str, float] | None = None


def _channel_count(image: np.ndarray) -> int:
    """Colour channels without alpha: L and LA are 1, RGB and RGBA are 3."""
    return 1 if image.ndim == 2 or image.shape[-1] in (1, 2) else 3


class Segmenter:
    """Runs one model of a bundle. Build it with `Segmenter.from_bundle`."""

    def __init__(
        self,
        manifest: Manifest,
        artifact: Artifact,
        backend: Backend,
        overlap: int,
        max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
        tta: str = "none",
    ) -> None:
        check_tta(tta)
        self.manifest = manifest
        self.tta = tta
        self.artifact = artifact
        self.backend = backend
        self.precision = artifact.precision
        self.overlap = overlap
        self.max_memory_mb = max_memory_mb
        self.memory = memory_line(manifest, artifact)
        self._notes_said: set[str] = set()
        self.reference = _usable(manifest.quality)
        if self.memory != artifact.memory:
            log.info(
                "runtime: %s plans with this device's memory line (%.0f bytes a pixel; %s on "
                "the build machine)",
                artifact.file,
                self.memory.bytes_per_pixel,
                f"{artifact.memory.bytes_per_pixel:.0f}" if artifact.memory else "none",
            )

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        precision: str = "auto",
        backend: str = "auto",
        num_threads: int | None = None,
        overlap: int | None = None,
        verify: bool = False,
        max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
        rechoose: bool = False,
        tta: str = "none",
    ) -> Segmenter:
        """Loads the bundle's `precision` model after verifying its SHA-256.

        Args:
            path: the bundle folder.
            precision: "auto" (the fastest model this device verifies within the bundle's Dice
                budget: `runtime.choice`, measured once and cached), "int8" (the model that
                passed the parity gate), "fp32", or any other precision the manifest lists.
            backend: "litert", "onnx", "openvino", or "auto": for a named precision LiteRT
                when it is installed and the bundle has that precision as .tflite, else ONNX
                Runtime (else OpenVINO); precision="auto" measures every (model, engine) pair.
                The choice is printed to stderr.
            num_threads: interpreter threads; None lets the interpreter choose.
            overlap: output pixels shared by neighbouring tiles (default: `default_overlap`).
            verify: run the model on the bundle's golden tiles first and raise
                `runtime.VerificationFailed` if it computes worse masks here than the
                build machine measured (beyond the bundle's Dice budget).
            max_memory_mb: what one interpreter run may take (the bundle's measured memory
                per pixel decides): the whole image when it fits, else the tiles that fit. A
                model with a fixed tile (a 'valid' U-Net) runs as many of its tiles at once as
                fit; one from a bundle made before run-time sizes, one at a time.
            rechoose: with precision="auto", time the pairs again instead of reading the
                cached choice.
            tta: test-time augmentation (`runtime.tta`): "none", "flips" (the mean of 4 flipped
                views) or "d4" (8 flips and rotations); it costs 4 or 8 runs an image.

        A bioimage.io model package (.zip or folder) with ONNX weights loads too
        (`runtime.zoo`); `verify` then checks the package's own test tensors.
        """
        if is_package(path):
            if max_memory_mb <= 0:
                raise UserError(f"max_memory_mb must be positive, got {max_memory_mb:g}")
            return cls(
                *zoo_load(path, precision, backend, num_threads, overlap, verify),
                max_memory_mb,
                tta,
            )
        manifest = read_manifest(path)
        check_backend(backend)
        if precision == "auto":
            precision, backend = _auto(path, manifest, backend, num_threads, rechoose)
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
            log.info("runtime: %s on %s", artifact.file, name)
        if verify:
            check = check_model(model, artifact, manifest, golden_of(path, manifest))
            if not check.passed:
                raise VerificationFailed(check.failure())
        tile_overlap = (
            default_overlap(manifest.size_multiple, manifest.output_size, model.resizable)
            if overlap is None
            else overlap
        )
        if tile_overlap < 0 or (not artifact.resizable and tile_overlap >= manifest.output_size):
            raise UserError(f"overlap must be in [0, {manifest.output_size}), got {tile_overlap}")
        if max_memory_mb <= 0:
            raise UserError(f"max_memory_mb must be positive, got {max_memory_mb:g}")
        return cls(manifest, artifact, model, tile_overlap, max_memory_mb, tta)

    def predict(self, image: np.ndarray | str | Path, threshold: float | None = None) -> Prediction:
        """Segments one image: a numpy array as Pillow gives it, or an image file's path."""
        array = read_image(Path(image)) if isinstance(image, str | Path) else np.asarray(image)
        start = time.perf_counter()
        prepared = self.prepare(array)
        if prepared.note:
            self.say_once(prepared.note)
        prediction = self.predict_prepared(prepared, threshold)
        return dataclasses.replace(prediction, seconds=time.perf_counter() - start)

    def say_once(self, note: str, where: str = "") -> None:
        """Logs a note about the input (a colour image for a grey model) the first time this
        Segmenter meets it, not once per image."""
        if note not in self._notes_said:
            self._notes_said.add(note)
            log.warning("%s%s (said once)", f"{where}: " if where else "", note)

    def predict_batch(self, images: list, threshold: float | None = None) -> list[Prediction]:
        return [self.predict(image, threshold) for image in images]

    def prepare(self, image: np.ndarray) -> Prepared:
        """Pre-processing alone (a folder's next image can be prepared while this one runs)."""
        prep, image = self.manifest.preprocessing, np.asarray(image)
        statistics = None
        if self.reference is not None and image.ndim in (2, 3):  # else normalize raises
            statistics = input_statistics(image, prep.channels, self.reference.standardized)
        return Prepared(normalize(image, prep), self._channel_note(image), statistics)

    def predict_prepared(self, prepared: Prepared, threshold: float | None = None) -> Prediction:
        """Inference and stitching of a prepared image; `seconds` counts only these."""
        check_threshold(threshold)
        start = time.perf_counter()
        m, x = self.manifest, prepared.input
        plan = self.plan(*x.shape[:2])
        spread = self._judges_disagreement()
        probs = predict_tiled(
            x,
            augmented(self.backend.run, self.tta, self._views_together(plan), spread),
            plan.tile if self.backend.resizable else m.input_size,
            plan.tile if self.backend.resizable else m.output_size,
            self.overlap,
            batch_size=plan.batch,
            align=m.size_multiple,
        )
        views = None
        if spread:  # the views' disagreement came as the last channel
            probs, views = np.ascontiguousarray(probs[..., :-1]), probs[..., -1]
        mask = masks_from_probabilities(probs, m.threshold if threshold is None else threshold)
        quality = None
        if self.reference is not None and prepared.statistics is not None:
            statistics = prepared.statistics | output_statistics(probs, mask, views)
            quality = assess(statistics, self.reference)
        return Prediction(mask, probs, time.perf_counter() - start, plan.count, quality)

    def plan(self, height: int, width: int) -> TilePlan:
        """How a (height, width) image runs: one pass, or which tiles, how many to a batch."""
        m = self.manifest
        return plan_image(
            height,
            width,
            (m.input_size, m.output_size, m.size_multiple),
            self.overlap,
            self.memory,
            (self.backend.resizable, self.backend.batchable),
            self.max_memory_mb,
        )

    def _judges_disagreement(self) -> bool:
        """Whether TTA runs and the bundle's reference says how much its views disagree."""
        return (
            self.tta != "none"
            and self.reference is not None
            and "disagreement" in self.reference.statistics
        )

    def _views_together(self, plan: TilePlan) -> bool:
        """Whether one orientation's 4 flipped views of a run fit the memory budget as one
        batch (else they run one after another)."""
        if self.tta == "none" or not self.backend.batchable or self.memory is None:
            return False
        pixels = plan.tile[0] * plan.tile[1] * plan.batch * len(FLIPS)
        return self.memory.mb(pixels) <= self.max_memory_mb

    def _channel_note(self, image: np.ndarray) -> str | None:
        if image.ndim not in (2, 3):
            return None  # normalize raises the clear error
        have, want = _channel_count(image), self.manifest.channels
        kinds = {1: "grey", 3: "RGB"}
        if have == want or want not in kinds:  # a package's 2- or 4-channel model: its own
            return None
        return f"converted a {kinds[have]} image to {kinds[want]} for this {want}-channel model"


def _usable(reference: Reference | None) -> Reference | None:
    """The bundle's quality reference, unless its statistics are defined otherwise than this
    runtime computes them (a bundle from another version): then no quality, said once."""
    if reference is not None and reference.version != QUALITY_VERSION:
        log.warning(
            "runtime: the bundle's quality reference is version %d, this runtime computes "
            "version %d: no quality records (rebuild the bundle, or use its runtime)",
            reference.version,
            QUALITY_VERSION,
        )
        return None
    return reference


def _auto(
    path: str | Path, manifest: Manifest, backend: str, num_threads: int | None, rechoose: bool
) -> tuple[str, str]:
    """precision="auto": the device's choice, or the gated int8 model in an older bundle."""
    if manifest.golden is None:
        log.warning(
            "runtime: auto: this bundle has no golden tiles to verify models with (made before "
            "they existed): taking the gated int8 model; rebuild the bundle for the choice"
        )
        return "int8", backend
    choice = choose(path, manifest, backend, num_threads, refresh=rechoose)
    return choice.precision, choice.backend


def _pick_backend(manifest: Manifest, precision: str, backend: str) -> str:
    if backend != "auto":
        check_runs(backend, precision)
        return backend
    for name in installed_backends():
        if any(
            a.precision == precision and ENGINES[name].runs(a.format, precision)
            for a in manifest.artifacts
        ):
            return name
    raise UserError(
        f"no installed interpreter runs the bundle's {precision} model: pip install ai-edge-litert, onnxruntime or openvino"
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
