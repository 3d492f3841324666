"""Quantization-aware training (tfmot's default 8-bit scheme) and its full-integer TFLite export.

QAT fine-tunes the model with int8 rounding simulated in the forward pass, so the weights learn
to live with it; the converter then turns the simulated ranges into a real int8 model. The
scheme treats Conv2D + BatchNormalization + ReLU as one op (no rounding between them) and the
converter folds the batch norm into the int8 convolution; the sigmoid head gets TFLite's fixed
1/256 output scale. A pruned model keeps its zeros through QAT only with tfmot's
prune-preserving scheme, which is picked when the model is sparse; a clustered model keeps its
clusters (and zeros) only with the cluster-preserving one (PCQAT), picked when it is clustered.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import numpy as np

from optimize.cluster import is_clustered
from optimize.converters import int8_converter_notes_hidden, serving_function
from optimize.finetune import Run, fine_tune
from optimize.wrapping import check_prunable, clone, sparsity_report
from runtime.errors import UserError
from runtime.private_api import tfmot_centroids_replaced, tfmot_cluster_preserve
from train.tfk import keras, tf

# isort: split
# After train.tfk, which makes TensorFlow pick Keras 2 (tf_keras), the one tfmot needs.
import tensorflow_model_optimization as tfmot

# tfmot's (P)CQAT quantizers, which its public API only offers inside a scheme (see below).
_cpq = tfmot_cluster_preserve()

tfmot_q = tfmot.quantization.keras

# A model whose prunable kernels are at least this sparse was pruned on purpose: keep the zeros.
SPARSE_ENOUGH = 0.3


class _SparsityPreservingQuantizer(tfmot_q.quantizers.Quantizer):
    """Wraps a weight quantizer so the zeros of the kernel stay zero (the gradient too).

    tfmot's prune-preserving scheme does this for Conv2D and Dense only: it has no rule for
    Conv2DTranspose (the 'transpose' U-Net's up-convolution) and refuses the model. This applies
    the same mask (weights / weights, 0 where a weight is 0) around the default 8-bit quantizer.
    """

    def __init__(self, inner: tfmot_q.quantizers.Quantizer) -> None:
        self.inner = inner

    def build(self, tensor_shape, name: str, layer) -> dict[str, Any]:
        weights = getattr(layer.layer, name)
        mask = tf.math.divide_no_nan(weights, weights)
        return {**self.inner.build(tensor_shape, name, layer), "sparsity_mask": mask}

    def __call__(self, inputs, training, weights, **kwargs):
        return self.inner(inputs * weights["sparsity_mask"], training, weights, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {"inner": keras.utils.serialize_keras_object(self.inner)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _SparsityPreservingQuantizer:
        with tfmot_q.quantize_scope():
            return cls(keras.utils.deserialize_keras_object(config["inner"]))


class _PrunePreserveRegistry(tfmot_q.QuantizeRegistry):
    """tfmot's prune-preserving registry, plus the default 8-bit rule (masked) for the rest."""

    def __init__(self, prune_preserve: tfmot_q.QuantizeRegistry) -> None:
        self._prune_preserve = prune_preserve
        self._default = tfmot_q.default_8bit.Default8BitQuantizeRegistry()

    def supports(self, layer: keras.layers.Layer) -> bool:
        return self._prune_preserve.supports(layer) or self._default.supports(layer)

    def get_quantize_config(self, layer: keras.layers.Layer) -> tfmot_q.QuantizeConfig:
        if self._prune_preserve.supports(layer):
            return self._prune_preserve.get_quantize_config(layer)
        # tfmot's registry returns one shared config object per layer class: copy it before
        # changing it, or every layer of the class gets the last layer's quantizer.
        config = copy.deepcopy(self._default.get_quantize_config(layer))
        if layer.trainable_weights and hasattr(config, "weight_quantizer"):
            config.weight_quantizer = _SparsityPreservingQuantizer(config.weight_quantizer)
        return config


class _PrunePreserveScheme(tfmot_q.collab_opts.Default8BitPrunePreserveQuantizeScheme):
    """`Default8BitPrunePreserveQuantizeScheme` that also takes Conv2DTranspose layers."""

    def get_quantize_registry(self) -> tfmot_q.QuantizeRegistry:
        return _PrunePreserveRegistry(super().get_quantize_registry())


def _per_tensor_centroids(layer, weight, data_format):
    """tfmot's `get_centroids`, never per channel: the values of the whole kernel."""
    centroids, index = _cpq.get_unique(weight)
    return centroids, tf.size(centroids), index, False


class _PerTensorClusters:
    """Builds the clusters of the whole kernel, as `optimize.cluster` made them.

    tfmot's quantizer guesses per-channel clusters for any Conv2D whose output channels hold
    about as many distinct values each, and then trains one set of centroids per channel: the
    kernel's values drift apart (measured on the tiny U-Net: 33-143 distinct values after two
    steps in kernels clustered to 8). The kernels here were clustered per tensor, so they stay so.
    """

    def build(self, tensor_shape, name: str, layer) -> dict[str, Any]:
        with tfmot_centroids_replaced(_per_tensor_centroids):
            return super().build(tensor_shape, name, layer)


class _ClusterPreserveConvQuantizer(
    _PerTensorClusters, _cpq.ClusterPreserveDefault8BitConvWeightsQuantizer
):
    """Per-channel int8 ranges (as for any Conv2D), per-tensor clusters."""


class _ClusterPreserveQuantizer(
    _PerTensorClusters, _cpq.ClusterPreserveDefault8BitWeightsQuantizer
):
    """Per-tensor int8 range and clusters (Conv2DTranspose, Dense)."""


class _ClusterPreserveRegistry(tfmot_q.QuantizeRegistry):
    """tfmot's (P)CQAT registry with one weight quantizer per layer, and Conv2DTranspose.

    tfmot's `Default8bitClusterPreserveQuantizeRegistry` hands the same quantizer object to
    every Conv2D, and that object turns its sparsity preservation off for good when it builds a
    layer without zeros (the dense first convolution): then no layer's zeros are kept. It has
    no rule for Conv2DTranspose (the 'transpose' U-Net's up-convolution) and refuses the model.
    Here each layer gets its own quantizer, and Conv2DTranspose the per-tensor one that matches
    its default 8-bit config. Layers left unclustered (at most 1024 distinct values) train each
    value as its own centroid, which is plain training; larger ones are trained as weights.
    """

    def __init__(self, preserve_sparsity: bool) -> None:
        self._preserve_sparsity = preserve_sparsity
        self._default = tfmot_q.default_8bit.Default8BitQuantizeRegistry()

    def supports(self, layer: keras.layers.Layer) -> bool:
        return self._default.supports(layer)

    def get_quantize_config(self, layer: keras.layers.Layer) -> tfmot_q.QuantizeConfig:
        config = copy.deepcopy(self._default.get_quantize_config(layer))  # shared: see above
        if not layer.trainable_weights or not hasattr(config, "weight_quantizer"):
            return config
        if type(layer) is keras.layers.Conv2D:
            config.weight_quantizer = _ClusterPreserveConvQuantizer(self._preserve_sparsity)
        elif isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Dense)):
            config.weight_quantizer = _ClusterPreserveQuantizer(self._preserve_sparsity)
        return config


class _ClusterPreserveScheme(tfmot_q.default_8bit.Default8BitQuantizeScheme):
    """`Default8BitClusterPreserveQuantizeScheme` with `_ClusterPreserveRegistry`."""

    def __init__(self, preserve_sparsity: bool = True) -> None:
        self.preserve_sparsity = preserve_sparsity

    def get_quantize_registry(self) -> tfmot_q.QuantizeRegistry:
        return _ClusterPreserveRegistry(self.preserve_sparsity)


def _annotate(model: keras.Model, keep_float: Collection[str]) -> keras.Model:
    """Every layer annotated for quantization except those in `keep_float`."""
    if not keep_float:
        return tfmot_q.quantize_annotate_model(model)

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        # The layer itself, not a copy: the clone keeps its weights.
        return layer if layer.name in keep_float else tfmot_q.quantize_annotate_layer(layer)

    return keras.models.clone_model(model, clone_function=annotate)


def prepare_qat(
    model: keras.Model,
    preserve_sparsity: bool | None = None,
    preserve_clusters: bool | None = None,
    keep_float: Collection[str] = (),
) -> keras.Model:
    """The model wrapped for QAT, not trained yet (`quantize_aware` also fine-tunes it).

    Args:
        preserve_sparsity: keep the kernels' zeros through QAT; None: when the prunable kernels
            are at least 30 % zeros (a pruned model). Plain QAT would let them grow back.
        preserve_clusters: keep each clustered kernel's shared values shared (tfmot's CQAT: the
            centroids train, not the weights); None: when the model is clustered
            (`optimize.cluster.is_clustered`). With `preserve_sparsity` too this is PCQAT.
        keep_float: layers left unannotated: they fine-tune without simulated rounding. Give a
            convolution with its batch norm and ReLU (`CalibratedModel.with_fused`): tfmot
            quantizes the three as one op. TF's converter still makes such a layer an int8 op
            when its neighbours carry ranges, so a model with float layers is converted from
            the tuned weights by `CalibratedModel.int8` (see `optimize.quantize`).

    Raises:
        UserError: a layer tfmot cannot quantize, named with the fix.
    """
    check_prunable(model)
    if preserve_sparsity is None:
        preserve_sparsity = sparsity_report(model).sparsity >= SPARSE_ENOUGH
    if preserve_clusters is None:
        preserve_clusters = is_clustered(model)
    if preserve_clusters:
        scheme: tfmot_q.QuantizeScheme = _ClusterPreserveScheme(preserve_sparsity)
    elif preserve_sparsity:
        scheme = _PrunePreserveScheme()
    else:
        scheme = tfmot_q.default_8bit.Default8BitQuantizeScheme()
    annotated = _annotate(clone(model), keep_float)
    try:
        return tfmot_q.quantize_apply(annotated, scheme)
    except RuntimeError as error:  # tfmot: "Layer x:<class> is not supported. ..."
        raise UserError(
            f"tfmot cannot quantize the model ({error}): use built-in layers, or annotate that "
            "layer with a tfmot QuantizeConfig"
        ) from None


# Quantizer variables that range what the wrapped float layer outputs (after its activation).
_OUTPUT_RANGES = ("output", "post_activation")


def _output_range_variables(qat_model: keras.Model) -> dict[str, list[tuple[Any, Any]]]:
    """Float layer name -> the (min, max) variables of the QAT wrapper that quantize its output."""
    found: dict[str, list[tuple[Any, Any]]] = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if not isinstance(layer, tfmot_q.QuantizeWrapperV2) or inner is None:
            continue
        variables = {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
        for prefix in _OUTPUT_RANGES:
            if f"{prefix}_min" in variables:
                pair = (variables[f"{prefix}_min"], variables[f"{prefix}_max"])
                found.setdefault(inner.name, []).append(pair)
    return found


def init_activation_ranges(
    qat_model: keras.Model, float_model: keras.Model, tiles: list[np.ndarray], batch: int = 8
) -> None:
    """Starts the QAT activation ranges at what the float model's layers output on `tiles`.

    tfmot starts every activation range at (-6, 6) and moves it as an average with decay 0.999
    per step: after 300 fine-tuning steps a ReLU's range still starts near -4.4, some 40 % of
    its 256 codes spent on values it never sees, and anything above 6 is clipped until the
    average catches up. Measured ranges are right from the first step. (The sigmoid head's
    input range stays at (-6, 6): wider logits only saturate probabilities beyond 0.9975.)
    """
    targets = _output_range_variables(qat_model)
    names = [name for name in targets if name in {layer.name for layer in float_model.layers}]
    if not names or not tiles:
        return
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
    low, high = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    stacked = np.stack(tiles).astype(np.float32)
    for start in range(0, len(stacked), batch):
        outputs = probe(stacked[start : start + batch], training=False)
        for name, output in zip(names, tf.nest.flatten(outputs), strict=True):
            low[name] = min(low[name], float(tf.reduce_min(output)))
            high[name] = max(high[name], float(tf.reduce_max(output)))
    for name in names:
        for min_var, max_var in targets[name]:
            min_var.assign(tf.fill(min_var.shape, low[name]))
            max_var.assign(tf.fill(max_var.shape, high[name]))


def qat_training_steps(qat_model: keras.Model) -> int:
    """How many optimizer steps the QAT model has taken (0 when it was never trained).

    The weight quantizers learn their ranges from the weights in training steps only; before
    the first one they hold tfmot's initial (-6, 6), which rounds small kernels to zero.
    """
    optimizer = getattr(qat_model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "iterations"):
        return 0
    return int(keras.backend.get_value(optimizer.iterations))


def quantize_aware(
    model: keras.Model,
    run: Run,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    preserve_sparsity: bool | None = None,
    steps_per_epoch: int | None = None,
    verbose: int | None = None,
    init_ranges: bool = True,
    preserve_clusters: bool | None = None,
    keep_float: Collection[str] = (),
) -> keras.Model:
    """Fine-tunes the model with int8 quantization simulated, on the run's training data.

    Args:
        model: the float (or pruned) model; left unchanged.
        run: the training run whose data, loss and pre-processing the fine-tuning reuses.
        preserve_sparsity, preserve_clusters, keep_float: see `prepare_qat`.
        epochs, learning_rate, steps_per_epoch, verbose: the fine-tuning (see `fine_tune`).
        init_ranges: start the activation ranges at the float model's, measured on the run's
            calibration tiles (see `init_activation_ranges`), rather than tfmot's (-6, 6).

    Returns:
        The trained QAT model, ready for `qat_tflite_int8`.
    """
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}: QAT needs fine-tuning steps")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise UserError(f"steps_per_epoch must be >= 1 or None, got {steps_per_epoch}")
    qat_model = prepare_qat(model, preserve_sparsity, preserve_clusters, keep_float)
    if init_ranges:
        init_activation_ranges(qat_model, model, run.calibration_tiles())
    steps = run.steps_per_epoch(steps_per_epoch)
    fine_tune(qat_model, run, epochs, learning_rate, steps, verbose=verbose)
    return qat_model


def qat_tflite_int8(qat_model: keras.Model, size: int, float_io: bool = False) -> bytes:
    """Full-integer TFLite (int8 weights, activations, input and output) of a trained QAT model.

    With `float_io` the input and output stay float32 (quantize and dequantize ops inside), for
    callers that cannot quantize themselves.

    The ranges come from the QAT model itself, so no calibration data is needed. The input is
    the exported input of every model (`optimize.export.export_shape`): any batch and size.

    Raises:
        UserError: the model has had no training step (its weight ranges are still tfmot's
            initial ones and the int8 kernels would be degenerate).
    """
    if qat_training_steps(qat_model) == 0:
        raise UserError(
            f"QAT model {qat_model.name!r} has had no training step, so its int8 weights would "
            "be degenerate: fine-tune it first (quantize_aware with epochs >= 1)"
        )
    serve, _ = serving_function(qat_model, size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], qat_model
    )
    # The frozen-function path: the default detour through a SavedModel takes ~8 s more even
    # for a tiny U-Net and gives the same int8 outputs.
    converter.experimental_lower_to_saved_model = False
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # No `supported_ops = [TFLITE_BUILTINS_INT8]`: TF 2.21's converter then demands a
    # representative dataset before it looks for the QAT ranges. The fake-quant ops give every
    # tensor its range, so the model is full-integer anyway (the tests check it has no float op).
    io_type = tf.float32 if float_io else tf.int8
    converter.inference_input_type = converter.inference_output_type = io_type
    with int8_converter_notes_hidden():
        return converter.convert()


def _base_name(weight: Any) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def fine_tuned_float(qat_model: keras.Model, float_model: keras.Model) -> keras.Model:
    """A float model with the QAT model's fine-tuned weights (the rounding simulation removed).

    ONNX int8 quantized from these weights sits next to the TFLite int8 of the QAT model, not
    next to the float model QAT started from: the two int8 models then agree.
    """
    copy = keras.models.clone_model(float_model)
    wrapped = {other.name for other in qat_model.layers}
    for layer in copy.layers:
        if not layer.weights:
            continue
        name = f"quant_{layer.name}"
        source = qat_model.get_layer(name if name in wrapped else layer.name)
        values = {_base_name(w): keras.backend.get_value(w) for w in source.weights}
        layer.set_weights([values[_base_name(w)] for w in layer.weights])
    return copy
