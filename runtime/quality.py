"""Whether an image looks like the training images: a per-image quality signal (issue 29).

A deployed model fails silently when the images drift (a new microscope, stain, focus, gain):
its masks stay confident and wrong. The bundle records, per statistic, the range it takes over
the training images (`Reference`, the manifest's `quality` section); the runtime measures the
same statistics on each image and says how far outside that range it lies (`assess`).

Input statistics are taken on the raw image scaled to [0, 1] (`scale_to_unit`), grey being the
mean of the model's channels, over the whole image before any tiling. They are chosen so each
moves with one kind of change and not with the others (measured on ISBI 2012 and the synthetic
EM images, each change of the issue's table at its mild and strong setting):

- `p1`, `p50`, `p99` (intensity quantiles): exposure, gain, gamma, contrast. A 10% offset moves
  `p50` by 0.1; gamma 0.5 and 2 move all three.
- `skew`, (mean - median) / std: the shape of the histogram, which quantiles of an image whose
  median is near mid-grey miss: an inverted image (the median stays, the skew changes sign),
  gamma 2.
- `std` (contrast): contrast 0.7 and 0.5 about mid-grey; blur lowers it a little.
- `sharpness`, the mean absolute 4-neighbour Laplacian over the std: blur and a lower
  resolution lower it, noise raises it; dividing by the std keeps contrast and offset out.
- `noise`, a MAD-style noise sigma (the median absolute response of Immerkaer's 3x3 kernel,
  the difference of two Laplacians, which cancels edges and ramps) over the std: noise raises
  it; blur, downscaling and JPEG lower it.
- `blockiness`: the first differences' energy on their strongest phase of an 8-pixel grid
  against their mean over the 8 phases, in x and in y: JPEG's 8x8 blocks (quality 30: ~3
  training ranges out on ISBI, where sharpness and noise stay inside) and the period-2 pattern
  of a 2x upsampling. About 1.02-1.06 for other images.

A bundle that normalizes each image by its own mean and std (`Normalization.IMAGE`) does not
see a gain or an offset: its reference is `standardized`, the quantiles are taken in stds from
the image's mean and `std` is left out, so only changes of the histogram's shape (gamma)
move them.

Output statistics come from the model's probabilities: `uncertain`, the share of pixels whose
probability (sigmoid: the foreground channel; softmax: the most probable class's) lies in
0.2-0.8, and `foreground`, the mask's foreground share. Under a 2x downscale the uncertain
share barely moves (issue 29), so the input statistics carry the signal; the output ones catch
what the model itself finds strange. With test-time augmentation a third, `disagreement`: the
mean over pixels of the views' standard deviation (`runtime.tta`), against the float model's
held-out tiles under the 4 flips (d4's 8 views estimate the same spread).

numpy only: this runs on devices. Where a strided subsample keeps a statistic's meaning it is
taken on one: a 512 px image costs ~2.5 ms, 2-3% of LiteRT int8 inference of the demo U-Net
(2-core Xeon, interleaved in one process); in `runtime.predict` the input statistics run on
the reading thread, beside the interpreter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np

from runtime.preprocess import scale_to_unit, to_channels
from runtime.typed_json import JsonRecord

QUALITY_VERSION = 1  # the statistics' definitions: a reference of another version is not used
LOW_PERCENTILE, HIGH_PERCENTILE = 5, 95
# Flag when a statistic lies more than this many training ranges (its 5th-95th percentile
# spread) outside that range. Left-one-out over ISBI's 30 images, 3% of clean images lay
# beyond 0.5 (the 95th percentile of their worst statistic: 0.41 ranges), 20% beyond 0.25;
# the changes of issue 29's table that cost Dice lay 0.6-5 out (the median image). Percentiles
# of fewer images miss more of the range, so a band of fewer than `FULL_IMAGES` widens its
# spread by sqrt(FULL_IMAGES / images) (`band_of`): over random draws of 16-128 of 400
# synthetic images (96-256 px) and of 8-24 of ISBI's 30, 2-4.5% of the other clean images
# were flagged (6-7% from 8 synthetic images; 19-27% from 8 and 8-10% from 16 without it).
THRESHOLD = 0.5
FULL_IMAGES = 32
FEW_IMAGES = 16  # below this the build warns that the flags will be unreliable
UNCERTAIN = (0.2, 0.8)  # the "pixels with probability in 0.2-0.8"
MIN_SIDE = 16  # a smaller image has too few pixels for input statistics
_SAMPLE_PIXELS = 1 << 14  # quantiles and moments: a strided grid of about this many pixels
_SAMPLE_ROWS = 64  # sharpness, noise, blockiness: about this many rows at full resolution
_GRID = 8  # JPEG's block size
_TINY = 1e-6  # below this a log-scale statistic counts as this (a flat image: sharpness 0)


@dataclasses.dataclass(frozen=True)
class Statistic:
    """What a statistic is called and how its distance from the training range is measured."""

    name: str
    label: str  # plain words for the reason
    scale: str  # "log" (a ratio-like quantity: x0.5 and x2 are equally far) or "linear"
    floor: float  # the least spread, in that scale: training images all alike flag nothing small
    source: str  # "input" (the image) or "output" (the model's probabilities)
    # Below and above the training range: the folder summary's word, and what it suggests.
    below: tuple[str, str]
    above: tuple[str, str]


_SMOOTHED = ("blur", "smoothed (blur, a lower resolution or compression)")
_SHAPE = ("intensity", "another histogram shape (gamma, or inverted)")
STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic(
            "p1", "intensity 1st percentile", "linear", 0.02, "input",
            ("intensity", "darker"), ("intensity", "brighter, or less contrast"),
        ),
        Statistic(
            "p50", "median intensity", "linear", 0.02, "input",
            ("intensity", "darker"), ("intensity", "brighter"),
        ),
        Statistic(
            "p99", "intensity 99th percentile", "linear", 0.02, "input",
            ("intensity", "darker, or less contrast"), ("intensity", "brighter"),
        ),
        Statistic("skew", "intensity skew", "linear", 0.05, "input", _SHAPE, _SHAPE),
        Statistic(
            "std", "contrast (std)", "log", 0.05, "input",
            ("contrast", "less contrast"), ("contrast", "more contrast"),
        ),
        Statistic(
            "sharpness", "sharpness", "log", 0.05, "input",
            ("blur", "blurred, or a lower resolution"), ("noise", "noisier, or sharpened"),
        ),
        Statistic("noise", "noise", "log", 0.05, "input", _SMOOTHED, ("noise", "noisier")),
        # Sampling alone moves a clean image's blockiness by a few percent (more in a small
        # image): a wider floor than the others'.
        Statistic(
            "blockiness", "blockiness", "log", 0.15, "input",
            ("compression", "another compression"),
            ("compression", "JPEG blocks or a resampling grid"),
        ),
        Statistic(
            "uncertain", "uncertain-pixel share", "linear", 0.01, "output",
            ("uncertainty", "the model is surer than on held-out images"),
            ("uncertainty", "the model is unsure of more pixels"),
        ),
        Statistic(
            "foreground", "foreground share", "linear", 0.02, "output",
            ("foreground", "less foreground found"), ("foreground", "more foreground found"),
        ),
        Statistic(
            "disagreement", "disagreement between TTA views", "log", 0.1, "output",
            ("uncertainty", "the views agree more than on held-out images"),
            ("uncertainty", "the flipped views disagree more than on held-out images"),
        ),
    )
}  # fmt: skip


def _grey(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the mean of the model's channels of the image."""
    unit = scale_to_unit(to_channels(np.asarray(image), channels))
    return unit[..., 0] if unit.shape[-1] == 1 else unit.mean(axis=-1, dtype=np.float32)


def input_statistics(
    image: np.ndarray, channels: int = 1, standardized: bool = False
) -> dict[str, float]:
    """The image's statistics (see the module's docstring), or {} for an image under 16 px a
    side. `image` is raw (H, W[, C]) pixels, as `Segmenter.predict` takes them; `standardized`:
    quantiles in stds from the mean and no `std`, for a model that normalizes each image."""
    grey = _grey(image, channels)
    height, width = grey.shape
    if min(height, width) < MIN_SIDE:
        return {}
    # Quantiles and moments on a strided grid: a subsample of the same histogram.
    step = max(1, round(math.sqrt(height * width / _SAMPLE_PIXELS)))
    sample = grey[::step, ::step].ravel()
    p1, p50, p99 = _quantiles(sample, (0.01, 0.5, 0.99))
    mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
    scale = max(std, _TINY)
    # The 3x3 operators at full resolution, centred on every `rows`-th row: fewer samples of
    # the same local measure.
    rows = max(1, (height - 2) // _SAMPLE_ROWS)
    up, mid, down = grey[0 : height - 2 : rows], grey[1 : height - 1 : rows], grey[2::rows]
    centre = mid[:, 1:-1]
    laplacian = up[:, 1:-1] + down[:, 1:-1] + mid[:, :-2] + mid[:, 2:] - 4 * centre
    vertical = up - 2 * mid + down  # Immerkaer's kernel is [1, -2, 1] outer [1, -2, 1]
    highpass = vertical[:, :-2] - 2 * vertical[:, 1:-1] + vertical[:, 2:]
    # Gaussian noise of sigma s gives the kernel's response sigma 6 s; its median |.| is 0.6745 x.
    noise = float(np.median(np.abs(highpass))) / (6 * 0.6745)
    quantiles = {"p1": p1, "p50": p50, "p99": p99}
    if standardized:  # what a per-image normalization leaves of them
        quantiles = {name: (value - mean) / scale for name, value in quantiles.items()}
    return {
        **quantiles,
        "skew": (mean - p50) / scale,
        **({} if standardized else {"std": std}),
        "sharpness": float(np.mean(np.abs(laplacian))) / scale,
        "noise": noise / scale,
        "blockiness": _blockiness(grey, mid, rows),
    }


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank quantiles by one partition (np.percentile took 3x as long)."""
    ranks = [round(q * (values.size - 1)) for q in qs]
    parted = np.partition(values, ranks)
    return [float(parted[r]) for r in ranks]


def _blockiness(grey: np.ndarray, rows_sample: np.ndarray, rows: int) -> float:
    """The mean over x and y of: the first differences' energy on their strongest phase of
    an 8-pixel grid, over its mean across the phases. ~1 without a grid."""
    dx = np.diff(rows_sample, axis=1)
    dy = np.diff(grey[:, ::rows], axis=0)
    ratios = []
    for energy in (np.square(dx).sum(axis=0), np.square(dy).sum(axis=1)):
        if energy.size < 2 * _GRID:
            return 1.0
        phases = np.bincount(np.arange(energy.size) % _GRID, weights=energy, minlength=_GRID)
        phases /= np.bincount(np.arange(energy.size) % _GRID, minlength=_GRID)
        ratios.append(phases.max() / max(phases.mean(), _TINY**2))
    return float(np.mean(ratios))


def output_statistics(
    probabilities: np.ndarray, mask: np.ndarray, spread: np.ndarray | None = None
) -> dict[str, float]:
    """Uncertain-pixel and foreground share of a prediction: (H, W, K) probabilities (K = 1:
    sigmoid) and its (H, W) mask, and with TTA the mean of the views' (H, W) `spread`
    (`runtime.tta`); on every other pixel of each axis, the same shares."""
    probs, mask = probabilities[::2, ::2], mask[::2, ::2]
    confidence = probs[..., 0] if probs.shape[-1] == 1 else probs.max(axis=-1)
    low, high = UNCERTAIN
    statistics = {
        "uncertain": float(np.mean((confidence >= low) & (confidence <= high))),
        "foreground": float(np.mean(mask > 0)),
    }
    if spread is not None:
        statistics["disagreement"] = float(np.mean(spread[::2, ::2], dtype=np.float64))
    return statistics


@dataclasses.dataclass(frozen=True)
class Band:
    """One statistic over the reference images.

    Centre and spread are percentiles, not mean and standard deviation: a data set's images are
    few (24 in ISBI's training split) and often fall into groups (ISBI's slices into a smooth
    and a noisy set), where a mean and a standard deviation describe no image; the 5th and
    95th percentile are what the reason can name ("0.41 of training's 5th percentile").
    """

    median: float
    low: float  # the 5th percentile over the reference images
    high: float  # the 95th percentile
    # high - low in `scale` (log: the log ratio), at least the statistic's floor, widened for
    # fewer than FULL_IMAGES images (`band_of`)
    spread: float
    scale: str = "linear"

    def distance(self, value: float) -> float:
        """How far `value` lies outside [low, high], in spreads; 0 inside."""
        v, low, high = (_scaled(x, self.scale) for x in (value, self.low, self.high))
        return max(0.0, low - v, v - high) / self.spread


def _scaled(value: float, scale: str) -> float:
    return math.log(max(value, _TINY)) if scale == "log" else value


@dataclasses.dataclass(frozen=True)
class Reference(JsonRecord):
    """The manifest's `quality` section: per statistic its band over the training images (input
    statistics) and the held-out tiles (output statistics), and the flag threshold."""

    JSON_NAME: ClassVar[str] = "quality"

    statistics: dict[str, Band]
    images: int  # how many images the input statistics' bands come from
    tiles: int = 0  # how many model outputs the output statistics' bands come from
    threshold: float = THRESHOLD  # flag beyond this many spreads outside a band
    version: int = QUALITY_VERSION
    # Input statistics taken as for a model that normalizes each image (`input_statistics`).
    standardized: bool = False


@dataclasses.dataclass(frozen=True)
class Quality(JsonRecord):
    """One image against the reference: its statistics, how far each lies outside the
    training range (in training ranges, 0 inside), and whether that is far enough to flag."""

    JSON_NAME: ClassVar[str] = "quality"

    statistics: dict[str, float]
    distances: dict[str, float]
    worst: str  # the statistic that lies farthest out ("" when none was measured)
    flag: bool
    reason: str  # the worst statistic in plain words when flagged, else ""
    group: str = ""  # when flagged, the kind of change: intensity, contrast, blur, noise, ...


def band_of(values: Sequence[float], statistic: Statistic) -> Band:
    """The band of one statistic over the reference images' values; the spread of fewer than
    `FULL_IMAGES` values is widened by sqrt(FULL_IMAGES / count) (24 images: x1.15, 8: x2)."""
    array = np.asarray(values, dtype=np.float64)
    low, median, high = np.percentile(array, [LOW_PERCENTILE, 50, HIGH_PERCENTILE])
    scale = statistic.scale
    widen = math.sqrt(FULL_IMAGES / min(array.size, FULL_IMAGES))
    spread = max(_scaled(high, scale) - _scaled(low, scale), statistic.floor) * widen
    return Band(*(round(float(v), 6) for v in (median, low, high, spread)), scale)


def reference_of(
    inputs: Sequence[Mapping[str, float]],
    outputs: Sequence[Mapping[str, float]] = (),
    threshold: float = THRESHOLD,
    standardized: bool = False,
) -> Reference:
    """A reference from the input statistics of the training images and the output statistics
    of model outputs (either may be empty: its statistics are then not judged); `standardized`
    says how the input statistics were taken."""
    bands = {}
    for source, rows in (("input", inputs), ("output", outputs)):
        for statistic in STATISTICS.values():
            values = [row[statistic.name] for row in rows if statistic.name in row]
            if statistic.source == source and values:
                bands[statistic.name] = band_of(values, statistic)
    return Reference(bands, len(inputs), len(outputs), threshold, standardized=standardized)


def reference_from_images(
    images: Iterable[np.ndarray],
    channels: int = 1,
    probabilities: np.ndarray | Sequence[np.ndarray] = (),
    masks: np.ndarray | Sequence[np.ndarray] = (),
    threshold: float = THRESHOLD,
    standardized: bool = False,
    spreads: np.ndarray | Sequence[np.ndarray] | None = None,
) -> Reference:
    """A reference from raw training images and, for the output statistics, model outputs:
    (N, H, W, K) probabilities and their (N, H, W) masks (not necessarily of those images),
    and the (N, H, W) spreads of their flipped views for `disagreement`. `standardized` for a
    model that normalizes each image by its own mean and std."""
    inputs = [s for image in images if (s := input_statistics(image, channels, standardized))]
    views = [None] * len(masks) if spreads is None else spreads
    outputs = [
        output_statistics(p, m, v) for p, m, v in zip(probabilities, masks, views, strict=True)
    ]
    return reference_of(inputs, outputs, threshold, standardized)


def assess(statistics: Mapping[str, float], reference: Reference) -> Quality:
    """The image's statistics against the reference: each one's distance outside its band,
    and a flag with its reason when the worst lies beyond the reference's threshold."""
    distances = {
        name: round(reference.statistics[name].distance(value), 4)
        for name, value in statistics.items()
        if name in reference.statistics
    }
    worst = max(distances, key=distances.__getitem__, default="")
    if not worst or distances[worst] <= reference.threshold:
        return Quality(dict(statistics), distances, worst, False, "")
    group, reason = _reason(
        worst, statistics[worst], reference.statistics[worst], reference.standardized
    )
    return Quality(dict(statistics), distances, worst, True, reason, group)


def _reason(name: str, value: float, band: Band, standardized: bool) -> tuple[str, str]:
    """The kind of change and the plain words: ('blur', 'sharpness 0.41 of training's 5th
    percentile: blurred, or a lower resolution'), ('intensity', 'median intensity 0.650,
    above training's 95th percentile 0.556: brighter')."""
    below = value < band.low
    statistic = STATISTICS.get(name)
    label = statistic.label if statistic else name
    group, hint = (statistic.below if below else statistic.above) if statistic else (name, "")
    if standardized and name in ("p1", "p50", "p99"):  # no brighter or darker: only a shape
        label, (group, hint) = f"{label} (stds from the mean)", _SHAPE
    bound = band.low if below else band.high
    which = f"training's {LOW_PERCENTILE if below else HIGH_PERCENTILE}th percentile"
    if band.scale == "log" and bound > 0:
        ratio = value / bound
        words = f"{label} {ratio:.2f} of {which}" if below else f"{label} {ratio:.2f}x {which}"
    else:
        words = f"{label} {value:.3f}, {'below' if below else 'above'} {which} {bound:.3f}"
    return group, f"{words}: {hint}" if hint else words
