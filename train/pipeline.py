"""The tf.data pipelines: normalize once in numpy, cache, random crops, augmentation, prefetch.

Images are normalized with `runtime.preprocess.normalize`, the function devices use, before
they enter TensorFlow; the pipeline never re-implements pre-processing.
"""

from __future__ import annotations

import numpy as np

from runtime.preprocess import Preprocessing, normalize
from runtime.tiling import tile_starts
from train.augment import brightness_contrast, elastic, flip_and_rotate
from train.config import TrainConfig
from train.data import Sample
from train.tfk import tf

AUTOTUNE = tf.data.AUTOTUNE


def _prepared(sample: Sample, prep: Preprocessing, in_size: int, out_size: int):
    """Normalized image mirror-padded by the context a 'valid' model needs; small ones grow."""
    return _padded(normalize(sample.image, prep), sample.mask, in_size, out_size)


def _padded(image: np.ndarray, mask: np.ndarray, in_size: int, out_size: int):
    """Image (H, W, C) and mask mirror-padded by the context a 'valid' model needs.

    The mask is padded (mirrored) only to reach one output tile; the image carries the context
    around it, so crop (y, x) of the mask pairs with crop (y, x) of the image.
    """
    grow_y, grow_x = max(out_size - mask.shape[0], 0), max(out_size - mask.shape[1], 0)
    mask = np.pad(mask, ((0, grow_y), (0, grow_x)), mode="symmetric")
    context = (in_size - out_size) // 2
    image = np.pad(
        image, ((context, context + grow_y), (context, context + grow_x), (0, 0)), mode="symmetric"
    )
    return image, mask


def steps_to_cover(samples: list[Sample], out_size: int, batch: int) -> int:
    """Batches of random crops that add up to the training pixels once: one epoch's steps."""
    pixels = sum(s.mask.size for s in samples)
    return max(1, -(-pixels // (out_size**2 * batch)))


def _random_crop(image, mask, seed, in_size: int, out_size: int):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    y = tf.random.stateless_uniform([], seeds[0], 0, tf.shape(mask)[0] - out_size + 1, tf.int32)
    x = tf.random.stateless_uniform([], seeds[1], 0, tf.shape(mask)[1] - out_size + 1, tf.int32)
    return image[y : y + in_size, x : x + in_size], mask[y : y + out_size, x : x + out_size, None]


def train_dataset(
    samples: list[Sample],
    prep: Preprocessing,
    config: TrainConfig,
    out_size: int,
    global_batch: int,
) -> tf.data.Dataset:
    """Endless batches of augmented random crops: images (B, in, in, C), masks (B, out, out, 1)."""
    in_size = config.input_size
    pairs = [_prepared(s, prep, in_size, out_size) for s in samples]
    spec = (
        tf.TensorSpec((None, None, prep.channels), tf.float32),
        tf.TensorSpec((None, None), tf.uint8),
    )
    base = tf.data.Dataset.from_generator(lambda: iter(pairs), output_signature=spec).cache()
    base = base.repeat().shuffle(len(pairs), seed=config.seed)
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2)

    def crop_and_augment(pair, seed):
        image, mask = pair
        crop_seed, flip_seed, tone_seed, warp_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        image, mask = _random_crop(image, mask, crop_seed, in_size, out_size)
        if config.augment:
            image, mask = flip_and_rotate(image, mask, flip_seed)
            image = brightness_contrast(image, tone_seed)
        if config.elastic:
            image, mask = elastic(image, mask, warp_seed)
        image = tf.ensure_shape(image, (in_size, in_size, prep.channels))
        return image, tf.ensure_shape(mask, (out_size, out_size, 1))

    dataset = tf.data.Dataset.zip((base, seeds)).map(
        crop_and_augment, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    return _distributable(dataset.batch(global_batch, drop_remainder=True).prefetch(AUTOTUNE))


def raw_validation_tiles(
    samples: list[Sample], in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every validation image cut into tiles that cover it (the last tile flush with the edge),
    as raw pixels (N, in, in, C): what a bundle's golden tiles keep."""
    images, masks = [], []
    for sample in samples:
        raw = sample.image if sample.image.ndim == 3 else sample.image[..., None]
        image, mask = _padded(raw, sample.mask, in_size, out_size)
        for y in tile_starts(mask.shape[0], out_size, 0):
            for x in tile_starts(mask.shape[1], out_size, 0):
                images.append(image[y : y + in_size, x : x + in_size])
                masks.append(mask[y : y + out_size, x : x + out_size, None])
    return np.stack(images), np.stack(masks)


def validation_tiles(
    samples: list[Sample], prep: Preprocessing, in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The raw validation tiles, normalized (normalization is per pixel: the same numbers as
    normalizing the image first)."""
    raw, masks = raw_validation_tiles(samples, in_size, out_size)
    return np.stack([normalize(tile, prep) for tile in raw]), masks


def validation_dataset(
    samples: list[Sample], prep: Preprocessing, in_size: int, out_size: int, global_batch: int
) -> tf.data.Dataset:
    images, masks = validation_tiles(samples, prep, in_size, out_size)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(global_batch).cache()
    return _distributable(dataset.prefetch(AUTOTUNE))


def _distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element across workers: the source is a generator, not files."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
