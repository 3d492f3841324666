"""Filter pruning: a thinner U-Net with fewer filters per convolution, so it runs faster.

Magnitude pruning (tfmot) only zeroes weights: the model keeps its shapes, and a CPU does the
same multiply-accumulates (MACs) as before. Removing whole filters shrinks every tensor that
they feed, so the MACs fall roughly with the square of the kept fraction.

The thin model is rebuilt by `build_unet(..., widths=...)`, so it stays a Functional model of
built-in layers with the same layer names (tfmot QAT and the exporters still apply), and the
surviving weights are copied over: each convolution keeps its chosen output filters and the
input channels that its producer kept, traced through channel-preserving layers and through
the decoder's concatenation of [skip, up-convolution].
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from runtime.config import Choice
from runtime.errors import UserError
from train.config import ModelConfig
from train.model import Widths, build_unet
from train.tfk import keras, tf

KeepRatio = float | dict[str, float]  # one ratio for all layers, or one per level ("enc1", ...)
Kept = dict[str, np.ndarray]  # layer name -> sorted indices of the original channels it keeps

# The convolutions that `build_unet(widths=...)` can make thinner; the head never is.
_PRUNABLE = re.compile(r"^(enc\d+|bottleneck|dec\d+)_(conv_[ab]|upconv)$")

# Layers whose output channel c is made from their input channel c alone.
_CHANNEL_PRESERVING = (
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.UpSampling2D,
    keras.layers.Cropping2D,
    keras.layers.ZeroPadding2D,
    keras.layers.BatchNormalization,
)


class Criterion(Choice):
    L1 = "l1"  # L1 norm of each filter's kernel (Li et al., 2017)
    BN = "bn"  # |gamma| of the batch norm after the filter (network slimming, Liu et al., 2017)


Graph = list[tuple[keras.layers.Layer, list[str]]]  # layers in topological order, their inputs


def _graph(model: keras.Model) -> Graph:
    """The model's layers, producers first, each with the names of the layers that feed it.

    Read from the Functional config, which names inbound layers relative to this model even
    when a layer was also called elsewhere.
    """
    inbound: dict[str, list[str]] = {}
    for entry in model.get_config()["layers"]:
        nodes = entry["inbound_nodes"]
        if len(nodes) > 1:
            raise UserError(
                f"layer {entry['name']} is called more than once: filter pruning needs a model "
                "built by train.model.build_unet"
            )
        inbound[entry["name"]] = [item[0] for item in nodes[0]] if nodes else []
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for parent in inbound[name]:
            visit(parent)
        order.append(name)

    for name in inbound:
        visit(name)
    return [(model.get_layer(name), inbound[name]) for name in order]


def _is_transposed(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Conv2DTranspose)


def _is_conv(layer: keras.layers.Layer) -> bool:
    # Conv2DTranspose subclasses Conv2D.
    return isinstance(layer, keras.layers.Conv2D)


def _filter_axes(layer: keras.layers.Conv2D) -> tuple[int, int]:
    """(output-filter axis, input-channel axis) of the kernel: (k, k, in, out) or (k, k, out, in)."""
    return (2, 3) if _is_transposed(layer) else (3, 2)


def _l1(layer: keras.layers.Conv2D) -> np.ndarray:
    kernel = layer.get_weights()[0]
    out_axis, _ = _filter_axes(layer)
    other = tuple(axis for axis in range(kernel.ndim) if axis != out_axis)
    return np.abs(kernel).sum(axis=other)


def _prunable(graph: Graph) -> list[keras.layers.Conv2D]:
    return [layer for layer, _ in graph if _is_conv(layer) and _PRUNABLE.match(layer.name)]


def filter_scores(model: keras.Model, criterion: str = "l1") -> dict[str, np.ndarray]:
    """One importance score per output filter of every prunable convolution; higher is kept.

    With "bn", a filter is as important as the batch norm scales it (|gamma|): a filter that
    batch norm has scaled down contributes little after it. The up-convolutions have no batch
    norm after them and are scored by their L1 norm under both criteria.

    Raises:
        UserError: an unknown criterion, or "bn" for a model without batch norm.
    """
    criterion = Criterion.parse(criterion, "criterion")
    graph = _graph(model)
    if criterion is Criterion.BN and not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer, _ in graph
    ):
        raise UserError(
            f"criterion 'bn' needs batch norm, and model {model.name} has none: use criterion 'l1'"
        )
    batch_norm_after = {
        parents[0]: layer
        for layer, parents in graph
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    scores = {}
    for layer in _prunable(graph):
        norm = batch_norm_after.get(layer.name)
        if criterion is Criterion.BN and norm is not None:
            scores[layer.name] = np.abs(keras.backend.get_value(norm.gamma))
        else:
            scores[layer.name] = _l1(layer)
    return scores


def _level(layer_name: str) -> str:
    return layer_name.split("_", 1)[0]


def _checked_ratio(ratio: object, where: str) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise UserError(
            f"keep ratio {ratio!r}{where} must be in (0, 1]: e.g. 0.5 keeps half the filters"
        )
    return float(ratio)


def _ratios(layers: list[str], keep_ratio: KeepRatio) -> dict[str, float]:
    """The keep ratio of each layer; a level missing from a per-level dict keeps everything."""
    if not isinstance(keep_ratio, dict):
        ratio = _checked_ratio(keep_ratio, "")
        return dict.fromkeys(layers, ratio)
    levels = sorted({_level(name) for name in layers})
    unknown = sorted(set(keep_ratio) - set(levels))
    if unknown:
        raise UserError(
            f"keep ratio for unknown level(s) {', '.join(map(str, unknown))}: "
            f"the levels are {', '.join(levels)}"
        )
    checked = {level: _checked_ratio(r, f" for {level}") for level, r in keep_ratio.items()}
    return {name: checked.get(_level(name), 1.0) for name in layers}


def _kept_count(ratio: float, filters: int) -> int:
    """`ratio` of `filters`, rounded half up, at least one: a layer never vanishes."""
    return max(1, min(filters, math.floor(ratio * filters + 0.5)))


def choose_filters(scores: dict[str, np.ndarray], keep_ratio: KeepRatio) -> Kept:
    """The sorted indices of the filters to keep per layer: the highest scores, ties by index.

    Args:
        scores: from `filter_scores`.
        keep_ratio: the fraction of filters every layer keeps, or a fraction per level
            ("enc1".."encD", "bottleneck", "dec1".."decD"; a missing level keeps all).

    Raises:
        UserError: a ratio outside (0, 1], or a level that the model does not have.
    """
    ratios = _ratios(list(scores), keep_ratio)
    kept = {}
    for name, score in scores.items():
        count = _kept_count(ratios[name], len(score))
        best = np.argsort(-np.asarray(score), kind="stable")[:count]
        kept[name] = np.sort(best)
    return kept


def _channels(layer: keras.layers.Layer) -> int:
    """The layer's original output channels (an InputLayer reports a list of one shape)."""
    shape = layer.output_shape
    return (shape[0] if isinstance(shape, list) else shape)[-1]


def _propagate(graph: Graph, filters: Kept) -> Kept:
    """The original channels that each layer's output keeps, given the kept conv filters.

    A convolution outputs its kept filters (all of them when not pruned); a concatenation
    outputs its inputs' kept channels, each offset by the channels of the inputs before it.
    """
    layers = {layer.name: layer for layer, _ in graph}
    kept: Kept = {}
    for layer, parents in graph:
        if isinstance(layer, keras.layers.InputLayer):
            kept[layer.name] = np.arange(_channels(layer))
        elif _is_conv(layer):
            kept[layer.name] = filters.get(layer.name, np.arange(_channels(layer)))
        elif isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, 3):
            offsets = np.cumsum([0] + [_channels(layers[p]) for p in parents[:-1]])
            kept[layer.name] = np.concatenate(
                [kept[p] + offset for p, offset in zip(parents, offsets, strict=True)]
            )
        elif isinstance(layer, _CHANNEL_PRESERVING):
            kept[layer.name] = kept[parents[0]]
        else:
            raise UserError(
                f"layer {layer.name} ({type(layer).__name__}) is not supported by filter "
                "pruning: prune a model built by train.model.build_unet"
            )
    return kept


def _sliced_weights(
    layer: keras.layers.Layer, kept_in: np.ndarray, kept_out: np.ndarray
) -> list[np.ndarray]:
    """The layer's weights restricted to the kept input channels and output filters."""
    weights = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
        return [w[kept_out] for w in weights]  # gamma, beta, moving mean and variance
    if not _is_conv(layer):
        raise UserError(
            f"layer {layer.name} ({type(layer).__name__}) has weights that filter pruning "
            "cannot slice: prune a model built by train.model.build_unet"
        )
    out_axis, in_axis = _filter_axes(layer)
    kernel = np.take(np.take(weights[0], kept_out, axis=out_axis), kept_in, axis=in_axis)
    return [kernel, *(bias[kept_out] for bias in weights[1:])]


def _check_same_layers(model: keras.Model, thin: keras.Model) -> None:
    def layers(m: keras.Model) -> list[tuple[str, str]]:
        return sorted((layer.name, type(layer).__name__) for layer in m.layers)

    if layers(model) != layers(thin):
        differ = sorted(set(layers(model)) ^ set(layers(thin)))
        raise UserError(
            f"model {model.name} does not match the model config (layers {differ[:4]} differ): "
            "pass the config that the model was built with"
        )


def _build_thin(config: ModelConfig, input_size: int | None, name: str, widths: Widths):
    try:
        return build_unet(config, input_size, name=name, widths=widths)
    except ValueError as error:
        raise UserError(
            f"input size {input_size} does not fit the model config ({error}): "
            "pass the size the model was built for"
        ) from None


def filter_prune(
    model: keras.Model,
    config: ModelConfig,
    input_size: int | None,
    keep_ratio: KeepRatio,
    criterion: str = "l1",
) -> tuple[keras.Model, Widths]:
    """A thinner U-Net that keeps the most important filters of `model`, with their weights.

    The result computes exactly what `model` computes once the removed filters' outputs are
    zero; fine-tune it afterwards to win back what they contributed.

    Args:
        model: a U-Net from `train.model.build_unet` (or an already thinned one).
        config: the config that `model` was built with.
        input_size: the input side for the thin model (None: any side, 'same' padding only).
        keep_ratio: see `choose_filters`.
        criterion: "l1" or "bn", see `filter_scores`.

    Returns:
        The thin model and its filters per convolution (the `widths` of `build_unet`).

    Raises:
        UserError: a bad ratio or criterion, or a model that does not match the config.
    """
    graph = _graph(model)
    filters = choose_filters(filter_scores(model, criterion), keep_ratio)
    widths = {name: len(indices) for name, indices in filters.items()}
    thin = _build_thin(config, input_size, model.name, widths)
    _check_same_layers(model, thin)
    kept = _propagate(graph, filters)
    for layer, parents in graph:
        if not layer.weights:
            continue
        kept_in = kept[parents[0]]
        try:
            thin.get_layer(layer.name).set_weights(
                _sliced_weights(layer, kept_in, kept[layer.name])
            )
        except ValueError as error:
            raise UserError(
                f"layer {layer.name} of model {model.name} does not match the model config "
                f"({error}): pass the config that the model was built with"
            ) from None
    return thin, widths


def _output_shapes(graph: Graph, input_size: int) -> dict[str, tuple]:
    """Every layer's output shape for one input_size x input_size image."""
    shapes: dict[str, tuple] = {}
    for layer, parents in graph:
        if isinstance(layer, keras.layers.InputLayer):
            shapes[layer.name] = (1, input_size, input_size, _channels(layer))
            continue
        given = [shapes[p] for p in parents]
        shape = layer.compute_output_shape(given if len(given) > 1 else given[0])
        shapes[layer.name] = tuple(tf.TensorShape(shape).as_list())
    return shapes


def _macs(graph: Graph, shapes: dict[str, tuple], kept: Kept) -> int:
    """MACs of the convolutions with the channel counts in `kept` (bias and BN not counted)."""
    total = 0
    for layer, parents in graph:
        if not _is_conv(layer):
            continue
        kh, kw = layer.kernel_size
        c_in, c_out = len(kept[parents[0]]), len(kept[layer.name])
        # A transposed convolution spreads each input pixel over k*k outputs.
        pixel_shape = shapes[parents[0]] if _is_transposed(layer) else shapes[layer.name]
        total += pixel_shape[1] * pixel_shape[2] * c_in * kh * kw * c_out // layer.groups
    return total


def _checked_size(model: keras.Model, input_size: int) -> int:
    fixed = model.input_shape[1]
    if fixed is not None and fixed != input_size:
        raise UserError(
            f"model {model.name} takes {fixed}x{fixed} inputs, not {input_size}: count at {fixed}"
        )
    return input_size


def count_macs(model: keras.Model, input_size: int) -> int:
    """Multiply-accumulates of the convolutions for one input_size x input_size image.

    Convolutions are nearly all of a U-Net's work on a CPU, and batch norm folds into them on
    export, so this is the number that filter pruning should shrink.
    """
    graph = _graph(model)
    kept = _propagate(graph, {})
    return _macs(graph, _output_shapes(graph, _checked_size(model, input_size)), kept)


def keep_ratio_for_macs(
    model: keras.Model,
    config: ModelConfig,
    input_size: int,
    target_fraction: float,
    criterion: str = "l1",
) -> float:
    """The largest global keep ratio whose thin model has at most `target_fraction` of the MACs.

    MACs grow about with the square of the ratio but in steps (filters are whole), so the
    ratio is found by bisection on the counted MACs, without building any model. The
    criterion does not change the counts; it is checked here so that a bad one fails early.

    Args:
        model: the U-Net to prune.
        config: its config; unused, as the thin widths follow from the model itself, but kept
            so that the call mirrors `filter_prune`'s.
        input_size: the input side at which MACs are counted.
        target_fraction: the most MACs the thin model may have, as a fraction of `model`'s.
        criterion: "l1" or "bn", see `filter_scores`.

    Raises:
        UserError: a fraction outside (0, 1], or one that even one filter per layer exceeds.
    """
    if isinstance(target_fraction, bool) or not 0 < target_fraction <= 1:
        raise UserError(
            f"target MAC fraction {target_fraction!r} must be in (0, 1]: e.g. 0.5 halves the MACs"
        )
    graph = _graph(model)
    scores = filter_scores(model, criterion)
    shapes = _output_shapes(graph, _checked_size(model, input_size))

    def macs(ratio: float) -> int:
        return _macs(graph, shapes, _propagate(graph, choose_filters(scores, ratio)))

    if target_fraction == 1:
        return 1.0
    budget = target_fraction * macs(1.0)
    low, high = 0.0, 1.0  # macs(low) <= budget once low > 0; macs(high) > budget
    for _ in range(40):
        middle = (low + high) / 2
        if macs(middle) <= budget:
            low = middle
        else:
            high = middle
    if low == 0.0:
        raise UserError(
            f"target MAC fraction {target_fraction} is below what one filter per layer needs: "
            "use a larger fraction"
        )
    return _shortest_same(low, lambda ratio: choose_filters(scores, ratio))


def _shortest_same(ratio: float, chosen: Callable[[float], Kept]) -> float:
    """`ratio` rounded down to the fewest decimals that choose the same filters.

    Bisection ends just below a step (0.7109374...), where a ratio written back rounded to a
    config (0.711) would keep more filters; 0.71 keeps the same ones and reads well.
    """
    want = chosen(ratio)
    for digits in range(1, 10):
        short = math.floor(ratio * 10**digits) / 10**digits
        got = chosen(short) if short > 0 else {}
        if got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want):
            return short
    return ratio
