"""Magnitude pruning of a trained U-Net with tfmot, and a sparsity report measured on the weights.

The convolutions' smallest kernel weights are zeroed step by step while the model fine-tunes on
its own training data, so the rest of the weights learn to make up for them. The zeros only pay
off on a device whose kernels skip them (XNNPack's sparse inference, 2:4 sparse tensor cores)
or in a compressed download; the QAT stage keeps them (`optimize.qat`). With `--clusters N`
the pruned kernels are then clustered (`optimize.cluster`): N shared nonzero values each, which
is what takes a compressed int8 model below a quarter of its pruned size.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optimize.configs import PruneConfig, PruneMethod
from optimize.finetune import Run, fine_tune
from optimize.latency_prune import LatencyPrune, prune_to_latency
from optimize.wrapping import (
    PRUNABLE_TYPES,
    Sparsity,
    check_prunable,
    clone,
    default_keep_dense,
    sparsity_report,
    wrap_prunable,
)
from runtime.errors import UserError
from runtime.io import atomic_path, write_json_atomic
from runtime.typed_json import JsonRecord
from train.tfk import keras

# isort: split
# After train.tfk, which makes TensorFlow pick Keras 2 (tf_keras), the one tfmot needs.
import tensorflow_model_optimization as tfmot

# Masks are recomputed at most this many times over a fine-tuning: each update sorts every kernel.
_MASK_UPDATES = 16


def _check_arguments(
    model: keras.Model,
    sparsity: float,
    m_by_n: tuple[int, int] | None,
    keep_dense: tuple[str, ...],
    epochs: int,
    steps_per_epoch: int | None,
) -> None:
    if m_by_n is None and not 0.0 < sparsity < 1.0:
        raise UserError(f"sparsity must be in (0, 1), got {sparsity}: e.g. 0.5")
    if m_by_n is not None and (len(m_by_n) != 2 or not 0 < m_by_n[0] < m_by_n[1]):
        raise UserError(f"m_by_n must be (m, n) with 0 < m < n, got {m_by_n}: e.g. (2, 4)")
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}: pruning needs fine-tuning steps")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise UserError(f"steps_per_epoch must be >= 1 or None, got {steps_per_epoch}")
    names = {layer.name for layer in model.layers}
    unknown = [name for name in keep_dense if name not in names]
    if unknown:
        raise UserError(
            f"keep_dense names no layer of the model: {', '.join(unknown)}: "
            f"choose among {', '.join(sorted(n for n in names if _is_prunable(model, n)))}"
        )


def _is_prunable(model: keras.Model, name: str) -> bool:
    return isinstance(model.get_layer(name), PRUNABLE_TYPES)


def _schedule(
    sparsity: float, total_steps: int, ramp: float
) -> tfmot.sparsity.keras.PolynomialDecay:
    """Sparsity 0 -> `sparsity` over the first `ramp` share of the fine-tuning, then held: the
    steps after the last mask update recover what it cut (with `ramp` 1 none do).

    Pruning happens at steps that are multiples of `frequency` up to `end_step` inclusive, and
    the schedule reaches `sparsity` only at `end_step`: so `end_step` is the last multiple of
    the frequency within the ramp.
    """
    ramp_steps = max(1, round(ramp * total_steps))
    frequency = max(1, ramp_steps // _MASK_UPDATES)
    end_step = frequency * (ramp_steps // frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )


def magnitude_prune(
    model: keras.Model,
    run: Run,
    sparsity: float = 0.5,
    m_by_n: tuple[int, int] | None = None,
    keep_dense: tuple[str, ...] | None = None,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    steps_per_epoch: int | None = None,
    verbose: int | None = None,
    ramp: float = 0.5,
) -> keras.Model:
    """Prunes the convolution kernels to `sparsity` while fine-tuning on the run's data.

    Args:
        model: the trained float model; it is left unchanged (a copy is pruned).
        run: the training run whose data, loss and pre-processing the fine-tuning reuses.
        sparsity: the fraction of zeros each pruned kernel ends with (unstructured).
        m_by_n: e.g. (2, 4) for structured sparsity instead: m zeros in every n consecutive
            kernel weights along the input channels, the last axis of TFLite's
            [C_out, H, W, C_in] layout (what 2:4 sparse kernels run). Only full groups get
            zeros, so a layer needs C_in divisible by n (a Conv2DTranspose is grouped along
            its output channels, its kernel's axis 2). tfmot sets the masks at the first step
            and keeps them; `sparsity` is then ignored.
        keep_dense: layer names that stay dense (None: `default_keep_dense`).
        epochs, learning_rate, steps_per_epoch, verbose: the fine-tuning (see `fine_tune`).
        ramp: the share of the fine-tuning over which the sparsity rises; the rest holds it.

    Returns:
        A plain Functional model (pruning wrappers stripped) whose pruned kernels hold zeros.
    """
    check_prunable(model)
    keep_dense = default_keep_dense(model) if keep_dense is None else keep_dense
    _check_arguments(model, sparsity, m_by_n, keep_dense, epochs, steps_per_epoch)
    steps = run.steps_per_epoch(steps_per_epoch)
    if m_by_n is None:
        pruning_args: dict[str, Any] = {
            "pruning_schedule": _schedule(sparsity, epochs * steps, ramp)
        }
    else:
        pruning_args = {"sparsity_m_by_n": tuple(m_by_n)}
    wrapped = wrap_prunable(
        clone(model),
        tuple(keep_dense),
        lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, **pruning_args),
    )
    fine_tune(
        wrapped,
        run,
        epochs,
        learning_rate,
        steps,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=verbose,
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    # The layers kept dense are shared with the wrapped copy, so their `output` is ambiguous
    # and QAT's activation-range probe fails on the result: return a clone that owns its layers.
    return clone(stripped)


# ----------------------------------------------------------------------------------------------
# `python -m optimize.prune`'s work: a trained run in, a pruned run folder out (model.keras,
# config.json, prune_report.json), which `optimize.quantize --model` takes as it is.


@dataclasses.dataclass(frozen=True)
class FileSize:
    raw_bytes: int
    gzip_bytes: int  # what sparsity saves shows once the file is compressed

    @classmethod
    def of(cls, path: Path) -> FileSize:
        data = path.read_bytes()
        return cls(len(data), len(gzip.compress(data, 9)))


@dataclasses.dataclass(frozen=True)
class Params:
    before: int
    after: int


@dataclasses.dataclass(frozen=True)
class Macs:
    before: int
    after: int
    input_size: int  # the side they are counted at


@dataclasses.dataclass(frozen=True)
class Sizes:
    before: FileSize
    after: FileSize


@dataclasses.dataclass(frozen=True)
class Clusters:
    clusters: int  # the number asked for per layer
    layers: Mapping[str, int]  # distinct nonzero kernel values found in each


@dataclasses.dataclass(frozen=True)
class PruneReport(JsonRecord):
    """`prune_report.json`: what pruning did, measured on the models before and after."""

    JSON_NAME = "prune_report"

    method: str
    sparsity: Sparsity
    params: Params
    macs: Macs
    size: Sizes  # of model.keras
    clusters: Clusters | None = None
    latency: LatencyPrune | None = None  # pruned to a latency: the table and the steps


def prune_run(
    model_path: Path, out: Path, config: PruneConfig, overwrite: bool = False
) -> PruneReport:
    """Prunes and fine-tunes a run's model; writes a run folder that later stages read."""
    from optimize.filter_prune import count_macs, filter_prune, keep_ratio_for_macs

    if (out / "model.keras").exists() and not overwrite:
        raise UserError(f"{out} already holds a model: pass --overwrite or another --out")
    if not model_path.is_file():
        raise UserError(
            f"--model {model_path} does not exist: give the model.keras of a `python -m train` run"
        )
    run = Run.load(model_path.parent)
    model = run.load_model(model_path.name)
    check_prunable(model)
    run = run.distilling(model, config.distill, labels=not config.label_free, images=config.images)
    size = run.tile_size
    steps = config.steps_per_epoch or None
    widths: dict[str, int] = {}
    latency = None
    if config.latency_target:
        pruned, widths, latency = prune_to_latency(model, run, config)
    elif config.method is PruneMethod.FILTER:
        ratio = config.keep_ratio or keep_ratio_for_macs(
            model, run.model_config, size, config.target_macs, config.criterion
        )
        thin, widths = filter_prune(
            model, run.model_config, model.input_shape[1], ratio, config.criterion
        )
        fine_tune(thin, run, config.epochs, config.learning_rate, run.steps_per_epoch(steps))
        pruned = thin
    else:
        m_by_n = (2, 4) if config.method is PruneMethod.TWO_FOUR else None
        pruned = magnitude_prune(
            model,
            run,
            config.sparsity,
            m_by_n,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            steps_per_epoch=steps,
            ramp=config.ramp,
        )
    if config.clusters:
        from optimize.cluster import cluster

        pruned = cluster(
            pruned,
            run,
            config.clusters,
            epochs=config.cluster_epochs,
            learning_rate=config.cluster_learning_rate,
            steps_per_epoch=steps,
        )
    out.mkdir(parents=True, exist_ok=True)
    plain = keras.models.clone_model(pruned)  # without the fine-tuning's optimizer state
    plain.set_weights(pruned.get_weights())
    with atomic_path(out / "model.keras") as tmp:
        plain.save(tmp)
    clusters = None
    if config.clusters:
        from optimize.cluster import cluster_report

        clusters = Clusters(config.clusters, cluster_report(pruned))
    report = PruneReport(
        config.method.value,
        sparsity_report(pruned),
        Params(model.count_params(), pruned.count_params()),
        Macs(count_macs(model, size), count_macs(pruned, size), size),
        Sizes(FileSize.of(model_path), FileSize.of(out / "model.keras")),
        clusters,
        latency,
    )
    write_json_atomic(out / "prune_report.json", report.to_dict())
    # The manifest's configs take the "prune" section as it is: the latency record goes there.
    prune = config.to_dict() | ({"latency": latency.to_dict()} if latency else {})
    write_json_atomic(out / "config.json", {**run.raw_config, "prune": prune, "widths": widths})
    return report
