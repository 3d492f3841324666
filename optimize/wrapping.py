"""What pruning, clustering and QAT share about tfmot's wrappers: which layers they take,
whether a model can be wrapped at all, how to wrap it, and its kernels through any wrapper.

Its own module, below `optimize.prune`, `optimize.cluster` and `optimize.qat`, so that none of
them imports another for these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from runtime.errors import UserError
from train.tfk import keras

# isort: split
# After train.tfk, which makes TensorFlow pick Keras 2 (tf_keras), the one tfmot needs.
import tensorflow_model_optimization as tfmot

# The layer types whose kernels are pruned here (and counted as prunable in `sparsity_report`).
PRUNABLE_TYPES: tuple[type, ...] = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
# The first convolutions (and a patch stem) have few weights that every pixel depends on;
# pruning the head can collapse the output to one class. They stay dense unless asked.
DEFAULT_KEEP_DENSE = ("stem", "enc1_conv_a", "head")


def default_keep_dense(model: keras.Model) -> tuple[str, ...]:
    """The layers of DEFAULT_KEEP_DENSE that `model` has (only a patch U-Net has a stem)."""
    names = {layer.name for layer in model.layers}
    return tuple(name for name in DEFAULT_KEEP_DENSE if name in names)


def clone(model: keras.Model) -> keras.Model:
    """A copy with its own weights: tfmot's wrappers share (and prune) the layers they wrap."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _unsupported_reason(layer: keras.layers.Layer) -> str | None:
    """Why tfmot's pruning and quantization cannot take this layer, or None when they can."""
    if isinstance(layer, keras.layers.InputLayer):
        return None
    if isinstance(layer, keras.Model):
        return (
            "is a nested model, which tfmot does not look inside: build one flat Functional model"
        )
    if isinstance(layer, keras.layers.Lambda):
        return (
            "is a Lambda layer, which tfmot cannot quantize and the toolkit cannot save safely: "
            "replace it with built-in layers"
        )
    try:
        # Ask tfmot itself, on a copy: wrapping marks the wrapped layer object as prunable.
        tfmot.sparsity.keras.prune_low_magnitude(type(layer).from_config(layer.get_config()))
    except (ValueError, TypeError, NotImplementedError):
        return (
            "is a layer type tfmot has no pruning rule for: use built-in Keras layers, "
            "or make it a tfmot.sparsity.keras.PrunableLayer"
        )
    return None


def check_prunable(model: keras.Model) -> None:
    """Raises UserError naming the first thing tfmot cannot prune or quantize, with the fix.

    tfmot rewrites Functional and Sequential models layer by layer and looks layers up by class,
    so a subclassed model, a nested model, a Lambda or a custom layer fails deep inside it with
    an unhelpful message; this check says which layer and what to do before any fine-tuning.
    """
    if not isinstance(model, keras.Model):
        raise UserError(f"{type(model).__name__} is not a Keras model: give a tf_keras model")
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise UserError(
            f"model {model.name!r} is a subclassed keras.Model ({type(model).__name__}), which "
            "tfmot cannot prune or quantize: rebuild it as a Functional model "
            "(train.model.build_unet)"
        )
    for layer in model.layers:
        reason = _unsupported_reason(layer)
        if reason:
            raise UserError(f"layer {layer.name!r} ({type(layer).__name__}) {reason}")


def _kernel(layer: keras.layers.Layer) -> np.ndarray:
    """The kernel variable's value, wherever a tfmot wrapper keeps it.

    The QAT wrapper takes the variables away from the layer it wraps and sets `layer.kernel` to
    the quantized tensor, so the variable is looked up by name among the outer layer's weights.
    """
    for weight in layer.weights:
        if weight.name.split("/")[-1].split(":")[0] == "kernel":
            return np.asarray(keras.backend.get_value(weight))
    raise ValueError(f"layer {layer.name!r} has no kernel")


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """The kernel of every prunable layer by the layer's own name, through tfmot's wrappers.

    Works on a float model, a pruning-wrapped one and a QAT one alike, so sparsity can be
    compared across the stages.
    """
    found = {}
    for layer in model.layers:
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
        if isinstance(inner, PRUNABLE_TYPES):
            found[inner.name] = _kernel(layer)
    return found


@dataclasses.dataclass(frozen=True)
class KernelSparsity:
    params: int
    zeros: int
    sparsity: float


@dataclasses.dataclass(frozen=True)
class Sparsity:
    """How sparse a model really is, counted on its weights (not on what a schedule promised).

    `layers`: each prunable kernel's; `sparsity`: the zero fraction over all those kernels;
    `params` and `nonzero_params`: over every weight of the model (biases, batch norm and
    quantizer ranges included).
    """

    layers: Mapping[str, KernelSparsity]
    sparsity: float
    params: int
    nonzero_params: int


def sparsity_report(model: keras.Model) -> Sparsity:
    """The model's `Sparsity`, through tfmot's wrappers, like `kernels`."""
    layers = {}
    for name, kernel in kernels(model).items():
        zeros = int(kernel.size - np.count_nonzero(kernel))
        layers[name] = KernelSparsity(int(kernel.size), zeros, zeros / kernel.size)
    kernel_params = sum(entry.params for entry in layers.values())
    kernel_zeros = sum(entry.zeros for entry in layers.values())
    weights = model.get_weights()
    return Sparsity(
        layers,
        kernel_zeros / kernel_params if kernel_params else 0.0,
        int(sum(w.size for w in weights)),
        int(sum(np.count_nonzero(w) for w in weights)),
    )


def wrap_prunable(
    model: keras.Model,
    keep_dense: tuple[str, ...],
    wrapper: Callable[[keras.layers.Layer], keras.layers.Layer],
) -> keras.Model:
    """A clone with `wrapper` (a tfmot pruning or clustering wrapper) around each prunable
    layer not kept dense."""

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, PRUNABLE_TYPES) and layer.name not in keep_dense:
            return wrapper(layer)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)
