"""Augmentations on (image, mask) crops in TensorFlow, driven by stateless seeds.

Stateless seeds (one per element, from `tf.data.Dataset.random`) make a run repeatable even with
parallel `map`. For a 'valid' U-Net the mask is the centre of the image crop, so every geometric
transform is applied about the common centre.
"""

from __future__ import annotations

import functools
import math

from train.tfk import tf

PAPER_ELASTIC_SIGMA = 10.0  # pixels of displacement on a coarse 3x3 grid (Ronneberger et al.)
BRIGHTNESS = 0.2  # in normalized units, i.e. a fifth of the training set's std
CONTRAST = (0.8, 1.2)


def _coin(seed: tf.Tensor) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed) < 0.5


def _maybe_reverse(x: tf.Tensor, flip: tf.Tensor, axis: int) -> tf.Tensor:
    return tf.cond(flip, lambda: tf.reverse(x, [axis]), lambda: x)


def flip_and_rotate(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random horizontal and vertical flips and a multiple of 90 degrees: the dihedral group."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    for axis, s in ((1, seeds[0]), (0, seeds[1])):
        flip = _coin(s)
        image, mask = _maybe_reverse(image, flip, axis), _maybe_reverse(mask, flip, axis)
    turns = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
    return tf.image.rot90(image, turns), _rot90_as_float(mask, turns)


def _rot90_as_float(mask: tf.Tensor, turns: tf.Tensor) -> tf.Tensor:
    """rot90 of class indices through float32, where they are exact: a transpose of any other
    type makes TensorFlow's oneDNN log an error line ("supports DT_UINT8 only on platforms
    with AVX-512"), on CPUs with AVX-512 too, even with -q."""
    return tf.cast(tf.image.rot90(tf.cast(mask, tf.float32), turns), mask.dtype)


def brightness_contrast(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    contrast = tf.random.stateless_uniform([], seeds[0], *CONTRAST)
    brightness = tf.random.stateless_uniform([], seeds[1], -BRIGHTNESS, BRIGHTNESS)
    return image * contrast + brightness


def _sample(image: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor, bilinear: bool) -> tf.Tensor:
    """Reads image (H, W, C) at float coordinates, clamped to the border."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    ys = tf.clip_by_value(ys, 0.0, tf.cast(height - 1, tf.float32))
    xs = tf.clip_by_value(xs, 0.0, tf.cast(width - 1, tf.float32))
    if not bilinear:
        index = tf.stack([tf.cast(tf.round(ys), tf.int32), tf.cast(tf.round(xs), tf.int32)], -1)
        return tf.gather_nd(image, index)
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, height - 1), tf.minimum(x0i + 1, width - 1)

    def at(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(image, tf.stack([y, x], -1))

    top = at(y0i, x0i) * (1 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1 - wx) + at(y1i, x1i) * wx
    return top * (1 - wy) + bottom * wy


def elastic(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The paper's elastic deformation: 3x3 Gaussian displacements, bicubic-smoothed per pixel.

    The image is resampled bilinearly and the mask by nearest neighbour, so it stays a mask.
    The displacement is capped at a sixteenth of the crop so that small crops stay recognisable.
    """
    size = tf.shape(image)[0]
    out = tf.shape(mask)[0]
    context = (size - out) // 2
    sigma = tf.minimum(PAPER_ELASTIC_SIGMA, tf.cast(size, tf.float32) / 16.0)
    coarse = tf.random.stateless_normal([1, 3, 3, 2], seed) * sigma
    field = tf.image.resize(coarse, tf.stack([size, size]), method="bicubic")[0]
    grid = tf.cast(tf.range(size), tf.float32)
    ys, xs = tf.meshgrid(grid, grid, indexing="ij")
    warped = _sample(image, ys + field[..., 0], xs + field[..., 1], bilinear=True)
    inner = field[context : context + out, context : context + out]
    mask_grid = tf.cast(tf.range(out), tf.float32)
    mys, mxs = tf.meshgrid(mask_grid, mask_grid, indexing="ij")
    warped_mask = _sample(mask, mys + inner[..., 0], mxs + inner[..., 1], bilinear=False)
    return warped, warped_mask


# The field's changes (issue 29), after nnU-Net's intensity augmentations: each applied to a crop
# with its own probability, in nnU-Net's order. Ranges reach the shifts a device meets (a
# camera's gain and gamma, focus, a lower-resolution sensor, sensor noise); values are in
# normalized units (the training set's std).
FIELD = {
    "noise": (0.15, (0.0, 0.35)),  # std of added Gaussian noise (5-15 of 255 grey levels on ISBI)
    "blur": (0.2, (0.5, 2.0)),  # Gaussian sigma, px
    "contrast": (0.15, (0.5, 1.5)),  # factor about the crop's mean
    "low_resolution": (0.25, (0.5, 1.0)),  # down-scaling factor, then back up bilinearly
    "gamma": (0.3, (0.5, 2.0)),  # exponent (log-uniform) on the crop scaled to [0, 1]
}
_BLUR_RADIUS = 6  # px: 3 sigma of the widest blur


def _uniform(seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed, *bounds)


def _noise(image: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    return image + tf.random.stateless_normal(tf.shape(image), seeds[0]) * _uniform(
        seeds[1], bounds
    )


def _blur(image: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    sigma = _uniform(seed, bounds)
    taps = tf.range(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel /= tf.reduce_sum(kernel)
    channels = tf.shape(image)[-1]
    padded = tf.pad(
        image[None], [[0, 0], [_BLUR_RADIUS] * 2, [_BLUR_RADIUS] * 2, [0, 0]], "SYMMETRIC"
    )
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    columns = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, columns, [1, 1, 1, 1], "VALID")[0]


def _contrast(image: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    mean = tf.reduce_mean(image)
    return (image - mean) * _uniform(seed, bounds) + mean


def _low_resolution(image: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    size = tf.shape(image)[:2]
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * _uniform(seed, bounds), tf.int32), 1)
    down = tf.image.resize(image, small, method="area")
    return tf.image.resize(down, size, method="bilinear")


def _gamma(image: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
    low, high = tf.reduce_min(image), tf.reduce_max(image)
    span = tf.maximum(high - low, 1e-6)
    log_gamma = _uniform(seed, (math.log(bounds[0]), math.log(bounds[1])))
    return tf.pow((image - low) / span, tf.exp(log_gamma)) * span + low


_FIELD_OPS = {
    "noise": _noise,
    "blur": _blur,
    "contrast": _contrast,
    "low_resolution": _low_resolution,
    "gamma": _gamma,
}


def field_changes(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each of FIELD's changes with its probability, on the image crop only (not the mask)."""
    seeds = tf.random.experimental.stateless_split(seed, 2 * len(FIELD))
    for i, (name, (chance, bounds)) in enumerate(FIELD.items()):
        apply = tf.random.stateless_uniform([], seeds[2 * i]) < chance
        changed = functools.partial(_FIELD_OPS[name], image, seeds[2 * i + 1], bounds)
        image = tf.cond(apply, changed, functools.partial(tf.identity, image))
    return image
