"""The U-Net (Ronneberger et al., 2015) as a Functional tf_keras model of built-in layers only.

Functional and built-in, because tensorflow-model-optimization prunes and quantizes nothing else
(no subclassed models, no Lambda layers). Layer names are fixed: `enc2_conv_a`, `dec1_concat`,
`head`, so later stages and reports can name them.
"""

from __future__ import annotations

from runtime.errors import UserError
from train.config import ModelConfig, Padding, Upsampling
from train.tfk import keras

KernelSize = 3


Widths = dict[str, int]  # convolution layer name -> filters, overriding the config's widths


def _filters(config: ModelConfig, level: int) -> int:
    return config.base_filters * 2**level


def _shrink(config: ModelConfig) -> int:
    """Pixels a 'valid' conv block loses per side pair (two unpadded 3x3 convolutions)."""
    return 0 if config.padding is Padding.SAME else 2 * (KernelSize - 1)


def _level_sizes(config: ModelConfig, input_size: int) -> tuple[list[int], list[int], int]:
    """Encoder skip sides, decoder sides after each up-convolution (deepest first), output side.

    Raises ValueError with the reason when the size does not fit the U-Net.
    """
    if input_size % config.patch:
        raise ValueError(f"the side is not a multiple of the patch ({config.patch})")
    size, skips = input_size // config.patch, []
    for level in range(config.depth):
        size -= _shrink(config)
        if size <= 0 or size % 2:
            raise ValueError(f"level {level + 1} would pool an odd or empty side ({size})")
        skips.append(size)
        size //= 2
    ups = []
    for _ in range(config.depth):
        size -= _shrink(config)  # the conv block before this up-convolution
        if size <= 0:
            raise ValueError("a decoder level would be empty")
        size *= 2
        ups.append(size)
    size -= _shrink(config)
    if size <= 0:
        raise ValueError("the output would be empty")
    return skips, ups, size * config.patch


def output_size(config: ModelConfig, input_size: int) -> int:
    """The output side for an input side, e.g. 572 -> 388 for the paper's valid U-Net."""
    return _level_sizes(config, input_size)[2]


def is_valid_input_size(config: ModelConfig, input_size: int) -> bool:
    try:
        _level_sizes(config, input_size)
    except ValueError:
        return False
    return True


def valid_input_sizes_near(config: ModelConfig, wish: int, count: int = 2) -> list[int]:
    """The valid input sides closest to `wish` (ties: the smaller first)."""
    found: list[int] = []
    for distance in range(0, 4 * config.size_multiple * 8):
        for size in sorted({wish - distance, wish + distance}):
            if size > 0 and size not in found and is_valid_input_size(config, size):
                found.append(size)
        if len(found) >= count:
            break
    return sorted(found[:count])


def checked_output_size(model: ModelConfig, input_size: int) -> int:
    """The output side for the training input side, or a UserError naming sizes that fit."""
    try:
        return output_size(model, input_size)
    except ValueError as error:
        near = " or ".join(map(str, valid_input_sizes_near(model, input_size)))
        raise UserError(
            f"input size {input_size} does not fit a depth-{model.depth} '{model.padding}' "
            f"U-Net ({error}): use {near}"
        ) from None


def _conv_block(x, config: ModelConfig, filters: int, name: str, widths: Widths):
    """Two 3x3 convolutions, each followed by batch norm (optional) and ReLU."""
    for suffix in ("a", "b"):
        x = keras.layers.Conv2D(
            widths.get(f"{name}_conv_{suffix}", filters),
            KernelSize,
            padding=config.padding.value,
            use_bias=not config.batch_norm,  # batch norm's offset makes a bias redundant
            kernel_initializer="he_normal",
            name=f"{name}_conv_{suffix}",
        )(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(
                momentum=config.bn_momentum, name=f"{name}_bn_{suffix}"
            )(x)
        x = keras.layers.ReLU(name=f"{name}_relu_{suffix}")(x)
    return x


def _up_convolution(x, config: ModelConfig, filters: int, name: str, widths: Widths):
    """The paper's 2x2 up-convolution that halves the channels."""
    filters = widths.get(f"{name}_upconv", filters)
    if config.upsampling is Upsampling.TRANSPOSE:
        return keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    return keras.layers.Conv2D(filters, 2, padding="same", name=f"{name}_upconv")(x)


def _center_crop(skip, skip_size: int, target: int, name: str):
    """The paper crops each skip to the decoder's smaller map before concatenating."""
    if skip_size == target:
        return skip
    lost = skip_size - target
    half = lost // 2
    return keras.layers.Cropping2D(((half, lost - half), (half, lost - half)), name=name)(skip)


def _stem(inputs, config: ModelConfig):
    """The input as non-overlapping patches: a `patch` x `patch` stride-`patch` convolution
    (base-filters outputs: at least patch^2 x channels of them can keep every pixel), or the
    image itself."""
    if config.patch == 1:
        return inputs
    # 'same' changes nothing on the sides it is run on (multiples of the patch), but lets LiteRT
    # allocate the exported model at its placeholder 1x1 input before the first resize.
    return keras.layers.Conv2D(
        config.base_filters, config.patch, strides=config.patch, padding="same", name="stem"
    )(inputs)


def _head(x, config: ModelConfig):
    """Class probabilities per pixel: a 1x1 convolution, or with patches its transposed
    counterpart that gives each pixel of a patch its own weights (a 1x1 convolution followed
    by depth-to-space, in one built-in layer). float32: under mixed precision the
    probabilities and the loss stay in float32."""
    if config.patch == 1:
        layer = keras.layers.Conv2D(
            config.classes, 1, activation=config.head_activation, dtype="float32", name="head"
        )
    else:
        layer = keras.layers.Conv2DTranspose(
            config.classes,
            config.patch,
            strides=config.patch,
            activation=config.head_activation,
            dtype="float32",
            name="head",
        )
    return layer(x)


def build_unet(
    config: ModelConfig,
    input_size: int | None = None,
    name: str = "unet",
    widths: Widths | None = None,
) -> keras.Model:
    """Builds the U-Net.

    Args:
        config: the architecture.
        input_size: the input side. Required for 'valid' padding (the skip crops are fixed);
            None for 'same' gives a model for any side that is a multiple of
            `config.size_multiple`.
        name: the model's name.
        widths: filters per convolution name (`enc2_conv_a`, `dec1_upconv`, ...) where they
            differ from the config's doubling rule: a filter-pruned U-Net is thinner.

    Raises:
        ValueError: the input size does not fit the U-Net (see `valid_input_sizes_near`).
    """
    widths = widths or {}
    if input_size is None and config.padding is Padding.VALID:
        raise ValueError("a 'valid' U-Net needs a fixed input size")
    skip_sizes, up_sizes, _ = (
        _level_sizes(config, input_size) if input_size else ([0] * config.depth,) * 2 + (0,)
    )
    inputs = keras.Input((input_size, input_size, config.channels), name="image")
    x, skips = _stem(inputs, config), []
    for level in range(config.depth):
        x = _conv_block(x, config, _filters(config, level), f"enc{level + 1}", widths)
        if level == config.depth - 1 and config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"enc{level + 1}_dropout")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = _conv_block(x, config, _filters(config, config.depth), "bottleneck", widths)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
    for step, level in enumerate(reversed(range(config.depth))):
        name_ = f"dec{level + 1}"
        x = _up_convolution(x, config, _filters(config, level), name_, widths)
        skip = _center_crop(skips[level], skip_sizes[level], up_sizes[step], f"{name_}_crop")
        x = keras.layers.Concatenate(name=f"{name_}_concat")([skip, x])
        x = _conv_block(x, config, _filters(config, level), name_, widths)
    return keras.Model(inputs, _head(x, config), name=name)
