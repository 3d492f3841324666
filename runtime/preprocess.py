"""The one pre-processing function, in numpy: training, calibration and devices all call it."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from runtime.config import Choice, ConfigBase, require
from runtime.errors import UserError

# ITU-R BT.601 luma, what Pillow's convert("L") uses: a colour image reads as the grey one.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# The zoo's zero_mean_unit_variance divides by std + eps with this eps (bioimage.io spec 0.5).
IMAGE_EPS = 1e-6


class Normalization(Choice):
    DATASET = "dataset"  # the training set's mean and std: intensities carry meaning (EM, CT)
    # Each image's own mean and std per channel, over the whole image (never a tile): images
    # whose brightness and contrast vary (cameras, stains, microscopes); bioimage.io's
    # zero_mean_unit_variance.
    IMAGE = "image"


@dataclasses.dataclass(frozen=True)
class Preprocessing(ConfigBase):
    """How raw pixels become model input: scale by the dtype's range, then (x - mean) / std.

    Integer images are divided by their dtype's maximum (255 for 8 bit, 65535 for 16 bit) and
    float images are taken as already in [0, 1]; mean and std are measured on the training set,
    or with `normalization` image taken from each image itself.
    """

    channels: int = 1
    mean: float = 0.0
    std: float = 1.0
    normalization: Normalization = Normalization.DATASET

    def check(self) -> None:
        require(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        require(np.isfinite(self.mean), f"preprocessing mean must be finite, got {self.mean}")
        require(self.std > 0, f"preprocessing std must be > 0, got {self.std}")


def scale_to_unit(image: np.ndarray) -> np.ndarray:
    """Maps 8-bit, 16-bit or float pixels to float32 in [0, 1] (float input is kept as is)."""
    if image.size == 0:
        raise UserError(f"image is empty (shape {image.shape}): give an image with pixels")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise UserError("image holds NaN or infinite values: clean or clip the array first")
        return image.astype(np.float32)
    raise UserError(f"unsupported pixel type {image.dtype}: use uint8, uint16 or float in [0, 1]")


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Gives an (H, W, channels) view of an L, LA, RGB or RGBA array; alpha is dropped."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise UserError(
            f"image shape {image.shape} is not (H, W) or (H, W, 1|2|3|4): pass a 2-D grey "
            "or an L, LA, RGB or RGBA array"
        )
    if image.shape[-1] in (2, 4):  # LA or RGBA: the alpha channel carries no content
        image = image[..., :-1]
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1:  # colour to grey, rounded like Pillow for integer pixels
        grey = image.astype(np.float32) @ _LUMA
        if np.issubdtype(image.dtype, np.integer):
            grey = np.rint(grey)
        return grey[..., None].astype(image.dtype)
    return np.repeat(image, channels, axis=-1)  # grey to colour


class WholeImage(Protocol):
    """Pre-processing that takes statistics of the image (a bioimage.io package's per-image
    mean and std, percentiles): `normalize` hands it the whole image before any tiling, so a
    tiled result equals the untiled one."""

    channels: int

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def normalize(image: np.ndarray, prep: Preprocessing | WholeImage) -> np.ndarray:
    """Turns one raw image (H, W[, C]) into float32 model input (H, W, prep.channels)."""
    if not isinstance(prep, Preprocessing):
        return prep(np.asarray(image))
    unit = scale_to_unit(to_channels(np.asarray(image), prep.channels))
    if prep.normalization is Normalization.IMAGE:
        mean = unit.mean(axis=(0, 1), dtype=np.float64)
        std = unit.std(axis=(0, 1), dtype=np.float64)
        return ((unit - mean.astype(np.float32)) / (std + IMAGE_EPS).astype(np.float32)).astype(
            np.float32
        )
    return ((unit - np.float32(prep.mean)) / np.float32(prep.std)).astype(np.float32)


def measure_preprocessing(
    images: list[np.ndarray],
    channels: int,
    normalization: Normalization = Normalization.DATASET,
) -> Preprocessing:
    """Mean and std of the training pixels after scaling, so any bit depth lands near N(0, 1)
    (recorded with per-image normalization too, where each image brings its own)."""
    if not images:
        raise UserError("no training images to measure mean and std on: add images")
    total = count = total_sq = 0.0
    for image in images:
        unit = scale_to_unit(to_channels(image, channels)).astype(np.float64)
        total += unit.sum()
        total_sq += np.square(unit).sum()
        count += unit.size
    mean = total / count
    std = max(float(np.sqrt(max(total_sq / count - mean**2, 0.0))), 1e-3)
    return Preprocessing(channels, round(mean, 6), round(std, 6), Normalization(normalization))
