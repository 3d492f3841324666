"""Sparsity-preserving weight clustering (tfmot), after pruning: fewer distinct weights to store.

Pruning alone cannot make an int8 model much smaller than a quarter of its float file even
compressed: each nonzero int8 weight still carries ~6.5 bits of entropy. Clustering then
replaces each pruned kernel's nonzero weights with one of `clusters` shared values (k-means++
centroids, fine-tuned), so a weight needs ~log2(clusters) bits and gzip finds it. The zeros stay
zero (`preserve_sparsity`), and the QAT stage keeps both (`optimize.qat`, tfmot's PCQAT scheme).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optimize.finetune import Run, fine_tune
from optimize.wrapping import check_prunable, default_keep_dense, kernels, wrap_prunable
from runtime.errors import UserError
from train.tfk import keras

# isort: split
# After train.tfk, which makes TensorFlow pick Keras 2 (tf_keras), the one tfmot needs.
import tensorflow_model_optimization as tfmot

tfmot_c = tfmot.clustering.keras

# A trained float kernel has about as many distinct values as nonzero weights, a clustered one
# at most its clusters: kernels with this many nonzero weights tell the two apart.
_EVIDENCE = 64
MAX_CLUSTERS = 256  # more is no longer clustering for an int8 model (256 codes in all)


def check_clusters(clusters: int) -> None:
    if not 2 <= clusters <= MAX_CLUSTERS:
        raise UserError(
            f"clusters must be in 2..{MAX_CLUSTERS} (or 0 for no clustering), got {clusters}: "
            "e.g. 16"
        )


def unique_nonzero(kernel: np.ndarray) -> int:
    """How many distinct nonzero values a kernel holds (its clusters, when clustered)."""
    values = np.asarray(kernel).ravel()
    return int(np.unique(values[values != 0]).size)


def cluster_report(model: keras.Model) -> dict[str, int]:
    """Layer name -> distinct nonzero kernel values, for every prunable layer (through wrappers)."""
    return {name: unique_nonzero(kernel) for name, kernel in kernels(model).items()}


def _shares_values(kernel: np.ndarray) -> bool:
    """Four or more nonzero weights per distinct value, and at most `MAX_CLUSTERS` values."""
    return unique_nonzero(kernel) <= min(MAX_CLUSTERS, np.count_nonzero(kernel) // 4)


def is_clustered(model: keras.Model) -> bool:
    """True when most kernels share their nonzero values (clustered), through tfmot's wrappers.

    Kernels with few nonzero weights (the 1x1 head) say nothing. Counting values per nonzero
    weight, not per kernel, keeps a heavily pruned float model (few weights left, all
    different) from looking clustered.
    """
    evidence = [k for k in kernels(model).values() if np.count_nonzero(k) >= _EVIDENCE]
    clustered = [k for k in evidence if _shares_values(k)]
    return bool(evidence) and 2 * len(clustered) >= len(evidence)


def _wrap(model: keras.Model, clusters: int, keep_dense: tuple[str, ...]) -> keras.Model:
    """The model with `cluster_weights` around each prunable layer not kept dense."""
    params: dict[str, Any] = {
        "number_of_clusters": clusters,
        "cluster_centroids_init": tfmot_c.CentroidInitialization.KMEANS_PLUS_PLUS,
        "preserve_sparsity": True,
    }
    return wrap_prunable(model, keep_dense, lambda layer: tfmot_c.cluster_weights(layer, **params))


def cluster(
    model: keras.Model,
    run: Run,
    clusters: int = 16,
    keep_dense: tuple[str, ...] | None = None,
    epochs: int = 1,
    learning_rate: float = 1e-4,
    steps_per_epoch: int | None = None,
    verbose: int | None = None,
) -> keras.Model:
    """Clusters each kernel's nonzero weights into `clusters` values, keeping its zeros.

    Args:
        model: the (pruned) model; left unchanged (a copy is clustered).
        run: the training run whose data the fine-tuning reuses.
        clusters: shared values per kernel (k-means++ on the nonzero weights, then trained:
            the gradients of the weights in a cluster move its centroid).
        keep_dense: layer names left unclustered (None: those pruning leaves dense).
        epochs, learning_rate, steps_per_epoch, verbose: the fine-tuning (see `fine_tune`).

    Returns:
        A plain Functional model (clustering wrappers stripped) whose clustered kernels hold at
        most `clusters` distinct nonzero values and all the zeros they had.
    """
    check_prunable(model)
    check_clusters(clusters)
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}: clustering needs fine-tuning steps")
    copy = keras.models.clone_model(model)  # tfmot wraps (and changes) the layers it is given
    copy.set_weights(model.get_weights())
    keep_dense = default_keep_dense(model) if keep_dense is None else keep_dense
    wrapped = _wrap(copy, clusters, tuple(keep_dense))
    fine_tune(
        wrapped, run, epochs, learning_rate, run.steps_per_epoch(steps_per_epoch), verbose=verbose
    )
    stripped = tfmot_c.strip_clustering(wrapped)
    # The layers left unclustered are shared with `copy`, so `layer.output` would be ambiguous
    # (QAT's range probe reads it): a clone owns all its layers.
    plain = keras.models.clone_model(stripped)
    plain.set_weights(stripped.get_weights())
    return plain
