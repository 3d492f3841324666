"""The data set's fingerprint, read before the first step, and the recipe derived from it.

nnU-Net inspects a data set before it trains (image sizes, intensities, class shares, object
sizes) and derives its plans from that; its users never tune them by hand. This does the same
for the choices a rare-object set gets wrong: the crop size, the share of crops centred on
foreground, and the loss. Flags still override every choice.

The rules (docs/RESULTS.md, "Small, rare objects", has the measurements behind them):
- Foreground is *rare* when it covers under RARE_SHARE of the training pixels. ISBI's
  membranes cover about 22% and the synthetic EM about a quarter: they keep the recipe that was
  measured on them (per-image Dice, uniform crops). Defects on a production line cover well
  under 1%: most uniform crops then hold no foreground at all, and a per-image soft Dice is
  unstable on crops without any.
- Rare foreground gets nnU-Net's answer: a third of the crops centred on a foreground pixel,
  and cross-entropy plus a soft Dice over the whole batch.
- The crop is at most the default and no larger than the median image's shorter side (a
  multiple of the U-Net's 2**depth), so small images are not mostly mirrored copies of
  themselves.
- Each image is normalized by its own mean and std unless `--normalize dataset` says that
  intensities mean something (CT). The fingerprint still reports how far the images' mean
  intensities spread against a typical image's std (ISBI 0.25, the synthetic EM 0.57, the
  synthetic defects 3.0). It first chose per-image normalization above a spread of 1.0 only;
  then on ISBI, with the field augmentations, it cost 0.0025 of clean Dice and removed the
  drops of a brighter image and of halved contrast (3 seeds, RESULTS "Shifted images (ISBI)"):
  a device's camera changes its gain whatever the training set did.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.preprocess import Normalization, scale_to_unit, to_channels
from train.config import Loss, ModelConfig, TrainConfig, resolve_loss
from train.data import Sample

log = logging.getLogger(__name__)

RARE_SHARE = 0.05  # foreground share of the training pixels below which objects are rare
RARE_FOREGROUND_CROPS = 1 / 3  # nnU-Net's oversample_foreground_percent
DEFAULT_CROP = 256
MIN_CROP = 64
FINGERPRINT_IMAGES = 64  # images decoded for the statistics at most, evenly spread


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What the training images are like (sizes of all; the rest from a spread sample)."""

    images: int
    min_side: int
    median_short_side: int
    max_side: int
    measured_images: int  # decoded for the statistics below
    foreground_share: float  # of the measured pixels
    median_image_foreground_share: float
    images_with_foreground: float  # share of the measured images
    objects: int  # connected foreground components (8-connected) in the measured images
    median_object_diameter: float  # equivalent diameter sqrt(4 area / pi), px; 0: none
    intensity_mean_spread: float  # std of the images' mean intensities / their mean std

    @property
    def rare(self) -> bool:
        return self.foreground_share < RARE_SHARE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The choices for the fields the user left to the data, and why."""

    input_size: int
    foreground_crops: float
    loss: Loss
    normalization: Normalization
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "loss": self.loss.value,
            "normalization": self.normalization.value,
        }


def spread(samples: list[Sample]) -> list[Sample]:
    """Up to FINGERPRINT_IMAGES of the samples, evenly spread over the data set: their
    statistics stand for all (a data set larger than memory is never loaded whole)."""
    step = max(1, -(-len(samples) // FINGERPRINT_IMAGES))
    return samples[::step]


def _object_diameters(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # train extras: connected components

    labels, count = ndimage.label(mask > 0, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(0)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return np.sqrt(4.0 * areas / np.pi)


def measure(
    samples: list[Sample], channels: int, images: list[np.ndarray] | None = None
) -> Fingerprint:
    """The fingerprint of the training samples; sizes from every one (no decoding needed),
    the rest from `spread(samples)`, whose raw images may be given already decoded."""
    if not samples:
        raise UserError("no training images to fingerprint: add images")
    shapes = np.array([s.shape for s in samples])
    measured = spread(samples)
    images = images if images is not None else [s.image for s in measured]
    shares, means, stds, diameters = [], [], [], []
    foreground = pixels = 0
    for sample, image in zip(measured, images, strict=True):
        mask = sample.mask
        count = int(np.count_nonzero(mask))
        foreground, pixels = foreground + count, pixels + mask.size
        shares.append(count / mask.size)
        diameters.append(_object_diameters(mask))
        unit = scale_to_unit(to_channels(np.asarray(image), channels))
        means.append(float(unit.mean()))
        stds.append(float(unit.std()))
    all_diameters = np.concatenate(diameters)
    return Fingerprint(
        images=len(samples),
        min_side=int(shapes.min()),
        median_short_side=int(np.median(shapes.min(axis=1))),
        max_side=int(shapes.max()),
        measured_images=len(shares),
        foreground_share=round(foreground / pixels, 6),
        median_image_foreground_share=round(float(np.median(shares)), 6),
        images_with_foreground=round(float(np.mean(np.array(shares) > 0)), 4),
        objects=int(all_diameters.size),
        median_object_diameter=round(float(np.median(all_diameters)), 2)
        if all_diameters.size
        else 0.0,
        intensity_mean_spread=round(float(np.std(means) / max(np.mean(stds), 1e-6)), 4),
    )


def _crop(fingerprint: Fingerprint, model: ModelConfig) -> int:
    multiple = model.size_multiple
    fits = fingerprint.median_short_side // multiple * multiple
    return max(min(DEFAULT_CROP, fits), MIN_CROP, multiple)


def plan(
    fingerprint: Fingerprint,
    model: ModelConfig,
    train: TrainConfig,
    normalization: Normalization | None = None,
) -> Plan:
    """The fields left to the data (input_size 0, foreground_crops None, loss auto,
    normalization None), decided."""
    rare = fingerprint.rare
    crop = train.input_size or _crop(fingerprint, model)
    crops = train.foreground_crops
    if crops is None:
        crops = RARE_FOREGROUND_CROPS if rare else 0.0
    loss = train.loss
    if loss is Loss.AUTO:
        loss = Loss.BATCH_DICE if rare else resolve_loss(Loss.AUTO, model.classes)
    kind = "rare" if rare else "common"
    reason = (
        f"{kind} foreground (rare under {RARE_SHARE:.0%} of the pixels), images' mean "
        f"intensities spread {fingerprint.intensity_mean_spread:.2f} of their std"
    )
    chosen = Normalization.IMAGE if normalization is None else Normalization(normalization)
    return Plan(crop, round(crops, 4), loss, chosen, reason)


def describe(fingerprint: Fingerprint, chosen: Plan) -> str:
    """The one line `python -m train` prints before the first step."""
    f = fingerprint
    objects = (
        f"{f.objects} objects (median {f.median_object_diameter:.0f} px across)"
        if f.objects
        else "no foreground objects"
    )
    if f.measured_images < f.images:
        objects += f" in the {f.measured_images} images measured"
    return (
        f"data: {f.images} images {f.min_side}-{f.max_side} px (median shorter side "
        f"{f.median_short_side}), foreground {f.foreground_share:.2%} of the pixels "
        f"(median image {f.median_image_foreground_share:.2%}), {objects}; {chosen.reason}: "
        f"loss {chosen.loss.value}, {chosen.foreground_crops:.0%} of crops on foreground, "
        f"crops {chosen.input_size} px, {chosen.normalization.value} normalization"
    )


def planned(train: TrainConfig, chosen: Plan) -> TrainConfig:
    return train.replace(
        input_size=chosen.input_size, foreground_crops=chosen.foreground_crops, loss=chosen.loss
    )
