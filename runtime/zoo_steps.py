"""A bioimage.io package's pre- and post-processing steps in numpy, as bioimageio.core runs them.

Pre-processing runs on the whole raw image before any tiling (`runtime.preprocess.normalize`
hands it the image), so per-image statistics (`zero_mean_unit_variance`, `scale_range` and
`clip` with percentiles) are the whole image's and a tiled result equals the untiled one.
bioimageio.core takes statistics of axes that include the batch (or of no `axes`) over the
samples it has seen; the runtime segments one image at a time, which is core's figure for one
image. Post-processing runs on each tile's output, so it takes the steps that need no
statistics. A step the runtime cannot run is a one-line UserError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.preprocess import to_channels

Step = Callable[[np.ndarray], np.ndarray]
_EPS = 1e-6  # bioimageio.spec's default eps of every normalizing step
PRE_STEPS = (
    "binarize",
    "clip",
    "ensure_dtype",
    "fixed_zero_mean_unit_variance",
    "scale_linear",
    "scale_range",
    "sigmoid",
    "softmax",
    "zero_mean_unit_variance",
)
_WHOLE_OUTPUT = ("scale_range", "zero_mean_unit_variance")


@dataclasses.dataclass(frozen=True)
class Dims:
    """Where a tensor's axis ids are in the array a step sees; `batch` is the id that is not."""

    of: dict[str, int]
    batch: str | None
    path: Path
    where: str  # "pre-processing" or "post-processing", for the error lines
    singletons: frozenset[str] = frozenset()  # axes of size 1 the array does not keep

    def reduced(self, axes: list[str] | None) -> tuple[int, ...]:
        """The array's dims a statistic spans: `axes` without the batch, all when None."""
        if axes is None:
            return tuple(sorted(self.of.values()))
        skipped = {self.batch, *self.singletons}
        unknown = [a for a in axes if a not in self.of and a not in skipped]
        if unknown:
            raise UserError(
                f"{self.path}: {self.where} names axis {unknown[0]!r}, which the tensor lacks: "
                "fix its rdf"
            )
        return tuple(sorted(self.of[a] for a in axes if a in self.of))

    def along(self, values: Any, axis: str | None, ndim: int) -> np.ndarray:
        """Per-entry values shaped to broadcast along `axis` (a scalar when there is none)."""
        array = np.asarray(values, dtype=np.float32)
        if axis is None or axis in self.singletons:
            return array
        if axis not in self.of:
            raise UserError(
                f"{self.path}: {self.where} runs along axis {axis!r}, which the tensor lacks "
                "(or is its batch): fix its rdf"
            )
        shape = [1] * ndim
        shape[self.of[axis]] = -1
        return array.reshape(shape)


def _statistic(x: np.ndarray, dims: tuple[int, ...], what: str, q: float = 0.0) -> np.ndarray:
    wide = x.astype(np.float64)
    if what == "mean":
        return wide.mean(axis=dims, keepdims=True)
    if what == "std":
        return wide.std(axis=dims, keepdims=True)
    # bioimageio.core: linear percentiles for scale_range, inverted_cdf for clip.
    method = "linear" if what == "range" else "inverted_cdf"
    return np.percentile(wide, q, axis=dims, keepdims=True, method=method)


def _cast(dtype: str) -> Step:
    if dtype.startswith("float"):
        return lambda x: x.astype(np.float32, copy=False)
    target = np.dtype(dtype)  # the values an integer cast leaves, kept as float32
    return lambda x: x.astype(target).astype(np.float32)


def _build(op: dict[str, Any], dims: Dims, ndim: int, own_id: str) -> Step:
    """One step as a function of the array (whole image or a batch of output tiles)."""
    name, kw = op.get("id"), dict(op.get("kwargs") or {})
    axis = kw.get("axis")
    if name == "ensure_dtype":
        return _cast(str(kw.get("dtype", "float32")))
    if name == "scale_linear":
        gain, offset = dims.along(kw.get("gain", 1.0), axis, ndim), kw.get("offset", 0.0)
        offset = dims.along(offset, axis, ndim)
        return lambda x: x * gain + offset
    if name == "fixed_zero_mean_unit_variance":
        mean = dims.along(kw["mean"], axis, ndim)
        std = dims.along(kw["std"], axis, ndim) + np.float32(kw.get("eps", _EPS))
        return lambda x: (x - mean) / std
    if name == "binarize":
        threshold = dims.along(kw["threshold"], axis, ndim)
        return lambda x: (x > threshold).astype(np.float32)
    if name == "sigmoid":
        return _sigmoid
    if name == "softmax":
        channel = dims.of.get(str(kw.get("axis", "channel")), ndim - 1)
        return lambda x: _softmax(x, channel)
    if name == "zero_mean_unit_variance":
        over, eps = dims.reduced(kw.get("axes")), float(kw.get("eps", _EPS))
        return lambda x: (x - _statistic(x, over, "mean")) / (_statistic(x, over, "std") + eps)
    if name == "scale_range":
        reference = kw.get("reference_tensor")
        if reference not in (None, own_id):
            raise UserError(
                f"{dims.path}: scale_range takes its percentiles from tensor {reference!r}: "
                "the runtime runs one input and computes them on it alone"
            )
        over, eps = dims.reduced(kw.get("axes")), float(kw.get("eps", _EPS))
        low, high = float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0))

        def scale_range(x: np.ndarray) -> np.ndarray:
            lower = _statistic(x, over, "range", low)
            return (x - lower) / (_statistic(x, over, "range", high) - lower + eps)

        return scale_range
    if name == "clip":
        return _clip(kw, dims)
    if name == "scale_mean_variance":
        raise UserError(
            f"{dims.path}: {dims.where} step 'scale_mean_variance' matches the output to the "
            f"statistics of tensor {kw.get('reference_tensor')!r}, which a device does not "
            "have: the runtime cannot run this package"
        )
    raise UserError(
        f"{dims.path}: {dims.where} step {name!r} is not one the runtime runs "
        f"({', '.join(PRE_STEPS)}): it cannot run this package"
    )


def _clip(kw: dict[str, Any], dims: Dims) -> Step:
    over = dims.reduced(kw.get("axes"))

    def bound(x: np.ndarray, key: str) -> Any:
        if kw.get(key) is not None:
            return kw[key]
        percentile = kw.get(f"{key}_percentile")
        return None if percentile is None else _statistic(x, over, "clip", float(percentile))

    return lambda x: np.clip(x, bound(x, "min"), bound(x, "max")).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # the form that cannot overflow
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _needs_whole(op: dict[str, Any]) -> bool:
    kw = op.get("kwargs") or {}
    percentiles = kw.get("min_percentile") is not None or kw.get("max_percentile") is not None
    return op.get("id") in _WHOLE_OUTPUT or (op.get("id") == "clip" and percentiles)


def check_model_dtype(ops: list[dict[str, Any]], path: Path) -> None:
    """The model must get floats: the runtime's engines are fed float32."""
    casts = [op for op in ops if op.get("id") == "ensure_dtype"]
    last = str(((casts[-1].get("kwargs") or {}) if casts else {}).get("dtype", "float32"))
    if not last.startswith("float"):
        raise UserError(
            f"{path}: pre-processing hands the model {last} values; the runtime feeds models "
            "float32: it cannot run this package"
        )


@dataclasses.dataclass(frozen=True)
class ImageSteps:
    """A package's pre-processing of one whole raw image (H, W[, C]) into model input
    (H, W, channels), on raw values as the zoo takes them (8-bit pixels stay 0-255)."""

    channels: int
    steps: tuple[Step, ...]
    path: Path

    @classmethod
    def of(cls, tensor: dict[str, Any], dims: Dims, channels: int) -> ImageSteps:
        ops = list(tensor.get("preprocessing") or [])
        check_model_dtype(ops, dims.path)
        own_id = str(tensor.get("id", "input"))
        return cls(channels, tuple(_build(op, dims, 3, own_id) for op in ops), dims.path)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = self._channels(np.asarray(image)).astype(np.float32)
        if not np.isfinite(x).all():
            raise UserError("image holds NaN or infinite values: clean or clip the array first")
        for step in self.steps:
            x = step(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _channels(self, image: np.ndarray) -> np.ndarray:
        """The image's own channels when it has the model's count; grey and colour convert as
        for a bundle's 1- or 3-channel model; any other mismatch is a one-line error."""
        if image.size == 0:
            raise UserError(f"image is empty (shape {image.shape}): give an image with pixels")
        if image.ndim == 3 and image.shape[-1] == self.channels:
            return image
        if image.ndim == 2 and self.channels == 1:
            return image[..., None]
        if self.channels in (1, 3) and image.ndim in (2, 3):
            return to_channels(image, self.channels)
        raise UserError(
            f"image of shape {image.shape} for a {self.channels}-channel model ({self.path.name}): "
            f"give an (H, W, {self.channels}) array"
        )


@dataclasses.dataclass(frozen=True)
class OutputSteps:
    """A package's post-processing on a batch of output tiles (N, H, W, K). A trailing scalar
    `binarize` becomes the mask threshold, so the probabilities stay what the model says."""

    steps: tuple[Step, ...]
    threshold: float | None

    @classmethod
    def of(cls, tensor: dict[str, Any], dims: Dims) -> OutputSteps:
        ops = list(tensor.get("postprocessing") or [])
        for op in ops:
            if _needs_whole(op):
                raise UserError(
                    f"{dims.path}: post-processing step {op.get('id')!r} takes statistics of "
                    "the whole output, which the runtime assembles from tiles: it cannot run "
                    "this package"
                )
        threshold = None
        tail = [i for i, op in enumerate(ops) if op.get("id") != "ensure_dtype"]
        if tail and ops[tail[-1]].get("id") == "binarize":
            kw = ops[tail[-1]].get("kwargs") or {}
            if "axis" not in kw:
                threshold = float(kw["threshold"])
                ops = ops[: tail[-1]]
        own_id = str(tensor.get("id", "output"))
        return cls(tuple(_build(op, dims, 4, own_id) for op in ops), threshold)

    def __call__(self, nhwc: np.ndarray) -> np.ndarray:
        x = nhwc.astype(np.float32, copy=False)
        for step in self.steps:
            x = step(x)
        return x.astype(np.float32, copy=False)
