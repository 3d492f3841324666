"""The tf.data pipelines: images read on demand, normalized in numpy, random crops,
augmentation, prefetch.

Images are normalized with `runtime.preprocess.normalize`, the function devices use, before
they enter TensorFlow; the pipeline never re-implements pre-processing. Samples of a folder are
read from disk when the pipeline needs them (in parallel), so memory stays bounded whatever the
data set's size; an optional on-disk cache keeps the prepared images.
"""

from __future__ import annotations

import numpy as np

from runtime.preprocess import Preprocessing, normalize, scale_to_unit, to_channels
from runtime.tiling import tile_starts
from train.augment import brightness_contrast, elastic, field_changes, flip_and_rotate
from train.config import TrainConfig
from train.data import Sample
from train.tfk import keras, tf

AUTOTUNE = tf.data.AUTOTUNE
CROPS_PER_READ = 8  # random crops from one decoded image at most, before the next is read
CROP_SHUFFLE = 64  # crops mixed before batching (crops, not images: small)
CACHED_SHUFFLE = 8  # prepared images mixed when they come back from the on-disk cache
# Foreground pixels kept per image for centring crops on: a uniform draw of them stands for all,
# and memory stays small for images far larger than the crop.
FOREGROUND_POINTS = 512


def _prepared(sample: Sample, prep: Preprocessing, in_size: int, out_size: int, seed: int):
    """Normalized image mirror-padded by the context a 'valid' model needs (small ones grow),
    its mask, and up to FOREGROUND_POINTS of the mask's foreground pixels (y, x)."""
    image, mask = _padded(normalize(sample.image, prep), sample.mask, in_size, out_size)
    return image, mask, foreground_points(mask, seed)


def foreground_points(mask: np.ndarray, seed: int) -> np.ndarray:
    """A uniform draw of the foreground pixels (K, 2) int32, the same for the same seed."""
    flat = np.flatnonzero(mask)  # a third of argwhere's time on a 4096 px mask
    if len(flat) > FOREGROUND_POINTS:
        keep = np.random.default_rng(seed).choice(len(flat), FOREGROUND_POINTS, replace=False)
        flat = flat[np.sort(keep)]
    return np.stack(np.unravel_index(flat, mask.shape), axis=-1).astype(np.int32)


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
    pixels = sum(int(np.prod(s.shape)) for s in samples)
    return max(1, -(-pixels // (out_size**2 * batch)))


def _random_crop(image, mask, points, seed, in_size: int, out_size: int, foreground: float):
    """A uniform crop, or with probability `foreground` one centred on a foreground point
    (shifted to stay inside the image); images without foreground always crop uniformly."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    last_y, last_x = tf.shape(mask)[0] - out_size, tf.shape(mask)[1] - out_size
    y = tf.random.stateless_uniform([], seeds[0], 0, last_y + 1, tf.int32)
    x = tf.random.stateless_uniform([], seeds[1], 0, last_x + 1, tf.int32)
    if foreground > 0:  # seeds of their own: uniform crops stay those of earlier versions
        coin, choose = tf.unstack(
            tf.random.experimental.stateless_split(
                tf.random.experimental.stateless_fold_in(seed, 1), 2
            )
        )
        count = tf.shape(points)[0]
        centred = tf.logical_and(tf.random.stateless_uniform([], coin) < foreground, count > 0)
        pick = tf.random.stateless_uniform([], choose, 0, tf.maximum(count, 1), tf.int32)
        point = tf.gather(tf.concat([points, tf.zeros((1, 2), tf.int32)], 0), pick)
        y = tf.where(centred, tf.clip_by_value(point[0] - out_size // 2, 0, last_y), y)
        x = tf.where(centred, tf.clip_by_value(point[1] - out_size // 2, 0, last_x), x)
    return image[y : y + in_size, x : x + in_size], mask[y : y + out_size, x : x + out_size, None]


def _images(
    samples: list[Sample], prep: Preprocessing, in_size: int, out_size: int, seed: int, cache: str
) -> tf.data.Dataset:
    """Endless normalized, padded (image, mask, foreground points), read from their files
    when needed.

    Without a cache the file order is shuffled every pass and files are decoded in parallel;
    with one, the first pass writes the prepared images to disk and later passes read them
    back, mixed in a small buffer. Memory holds a few images either way, whatever the data
    set's size.
    """

    def load(index: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _prepared(samples[int(index)], prep, in_size, out_size, seed + int(index))

    def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, mask, points = tf.numpy_function(
            load, [index], (tf.float32, tf.uint8, tf.int32), stateful=False
        )
        return (
            tf.ensure_shape(image, (None, None, prep.channels)),
            tf.ensure_shape(mask, (None, None)),
            tf.ensure_shape(points, (None, 2)),
        )

    order = tf.data.Dataset.range(len(samples))
    if cache:
        images = order.map(read, num_parallel_calls=AUTOTUNE).cache(cache).repeat()
        return images.shuffle(CACHED_SHUFFLE, seed=seed)
    order = order.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True).repeat()
    return order.map(read, num_parallel_calls=AUTOTUNE, deterministic=True)


def train_dataset(
    samples: list[Sample],
    prep: Preprocessing,
    config: TrainConfig,
    out_size: int,
    global_batch: int,
    cache: str = "",
) -> tf.data.Dataset:
    """Endless batches of augmented random crops: images (B, in, in, C), masks (B, out, out, 1).

    Each image read gives as many crops as it holds output tiles (CROPS_PER_READ at most), so
    decoding a large slice is not repeated for every crop; the crops are mixed in a buffer.

    Args:
        cache: a file path prefix for tf.data's on-disk cache of the prepared images ("": none).
    """
    in_size = config.input_size
    images = _images(samples, prep, in_size, out_size, config.seed, cache)

    def crops(image: tf.Tensor, mask: tf.Tensor, points: tf.Tensor) -> tf.data.Dataset:
        count = tf.clip_by_value(tf.size(mask, tf.int64) // out_size**2, 1, CROPS_PER_READ)
        return tf.data.Dataset.from_tensors((image, mask, points)).repeat(count)

    seeds = tf.data.Dataset.random(seed=config.seed).batch(2)

    foreground = config.foreground_crops or 0.0

    def crop_and_augment(read, seed):
        image, mask, points = read
        crop_seed, flip_seed, tone_seed, warp_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        image, mask = _random_crop(image, mask, points, crop_seed, in_size, out_size, foreground)
        if config.augment:
            image, mask = flip_and_rotate(image, mask, flip_seed)
            image = brightness_contrast(image, tone_seed)
        if config.field_augment:
            image = field_changes(image, tf.random.experimental.stateless_fold_in(tone_seed, 1))
        if config.elastic:
            image, mask = elastic(image, mask, warp_seed)
        image = tf.ensure_shape(image, (in_size, in_size, prep.channels))
        return image, tf.ensure_shape(mask, (out_size, out_size, 1))

    dataset = tf.data.Dataset.zip((images.flat_map(crops), seeds)).map(
        crop_and_augment, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    dataset = dataset.shuffle(CROP_SHUFFLE, seed=config.seed)
    return _distributable(dataset.batch(global_batch, drop_remainder=True).prefetch(AUTOTUNE))


def raw_validation_tiles(
    samples: list[Sample], in_size: int, out_size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every validation image cut into tiles that cover it (the last tile flush with the edge),
    as raw pixels (N, in, in, channels): what a bundle's golden tiles keep.

    A folder may mix image modes (grey, grey+alpha, RGB, RGBA) and pixel types: each image gets
    the model's channels without alpha, as training gave them, and tiles of mixed pixel types
    are scaled to float32 in [0, 1] (which `normalize` takes as is: the same model input).
    """
    images, masks = [], []
    for sample in samples:
        raw = to_channels(sample.image, channels)  # read once: a file sample decodes each time
        image, mask = _padded(raw, sample.mask, in_size, out_size)
        for y in tile_starts(mask.shape[0], out_size, 0):
            for x in tile_starts(mask.shape[1], out_size, 0):
                images.append(image[y : y + in_size, x : x + in_size])
                masks.append(mask[y : y + out_size, x : x + out_size, None])
    if len({tile.dtype for tile in images}) > 1:
        images = [scale_to_unit(tile) for tile in images]
    return np.stack(images), np.stack(masks)


def validation_tiles(
    samples: list[Sample], prep: Preprocessing, in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The raw validation tiles, normalized (normalization is per pixel: the same numbers as
    normalizing the image first)."""
    raw, masks = raw_validation_tiles(samples, in_size, out_size, prep.channels)
    return np.stack([normalize(tile, prep) for tile in raw]), masks


def validation_dataset(
    samples: list[Sample], prep: Preprocessing, in_size: int, out_size: int, global_batch: int
) -> tf.data.Dataset:
    """The validation tiles, image by image as they are read: memory holds one image's."""

    def tiles():
        for sample in samples:
            yield from zip(*validation_tiles([sample], prep, in_size, out_size), strict=True)

    spec = (
        tf.TensorSpec((in_size, in_size, prep.channels), tf.float32),
        tf.TensorSpec((out_size, out_size, 1), tf.uint8),
    )
    dataset = tf.data.Dataset.from_generator(tiles, output_signature=spec).batch(global_batch)
    return _distributable(dataset.prefetch(AUTOTUNE))


def _distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element across workers: the source is a generator, not files."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def with_teacher(dataset: tf.data.Dataset, teacher: keras.Model) -> tf.data.Dataset:
    """(image, label) batches as (image, label and the teacher's probabilities on the image)."""

    # Plain tensor code: AutoGraph has nothing to convert, and converting a closure over a Keras
    # model only warns ("closure mismatch") on every fine-tuning.
    @tf.autograph.experimental.do_not_convert
    def add(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        soft = tf.cast(teacher(images, training=False), tf.float32)
        return images, tf.concat([tf.cast(labels, tf.float32), soft], axis=-1)

    return dataset.map(add)
