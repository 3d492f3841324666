"""Clustering after pruning, and cluster-preserving QAT (PCQAT), on the tiny U-Net."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from optimize.cluster import cluster, cluster_report, is_clustered, unique_nonzero
from optimize.finetune import Run
from optimize.prune import main as prune_main
from optimize.prune import parse_args as prune_args
from optimize.pruning import magnitude_prune
from optimize.qat import prepare_qat, qat_tflite_int8, quantize_aware
from optimize.wrapping import kernels, sparsity_report
from runtime.errors import UserError
from train.config import preset
from train.model import build_unet
from train.tfk import keras, tf

KEEP_DENSE = ("enc1_conv_a", "head")
CLUSTERS = 8


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    """The session's briefly trained tiny U-Net (tests/conftest.py)."""
    return Run.load(tiny_run)


@pytest.fixture(scope="module")
def pruned(run: Run) -> keras.Model:
    return magnitude_prune(run.load_model(), run, 0.5, epochs=1, steps_per_epoch=8, verbose=0)


@pytest.fixture(scope="module")
def clustered(run: Run, pruned: keras.Model) -> keras.Model:
    return cluster(pruned, run, CLUSTERS, epochs=1, steps_per_epoch=4, verbose=0)


@pytest.fixture(scope="module")
def qat_clustered(run: Run, clustered: keras.Model) -> keras.Model:
    return quantize_aware(clustered, run, epochs=1, steps_per_epoch=4, verbose=0)


def _zeros_kept(before: keras.Model, after: keras.Model) -> dict[str, float]:
    """Per pruned layer: the fraction of its zeros that are still zero."""
    now = kernels(after)
    return {
        name: float(np.mean(now[name][kernel == 0] == 0))
        for name, kernel in kernels(before).items()
        if name not in KEEP_DENSE
    }


@pytest.mark.slow
def test_clustering_shares_values_and_keeps_the_zeros(
    pruned: keras.Model, clustered: keras.Model
) -> None:
    counts, source = cluster_report(clustered), cluster_report(pruned)
    for name, count in counts.items():
        if name in KEEP_DENSE:
            assert count == source[name], (name, count)  # left unclustered
        else:
            assert 2 <= count <= CLUSTERS, (name, count)
    assert _zeros_kept(pruned, clustered) == dict.fromkeys(_zeros_kept(pruned, clustered), 1.0)
    assert sparsity_report(clustered).sparsity == sparsity_report(pruned).sparsity
    assert is_clustered(clustered) and not is_clustered(pruned)


def test_a_sparse_float_model_is_not_taken_for_a_clustered_one() -> None:
    model = build_unet(preset("tiny"))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, *rest = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.9)] = 0.0  # 90 % zeros
            layer.set_weights([kernel, *rest])
    assert not is_clustered(model)
    for layer in model.layers:  # the same zeros, the rest rounded to a few shared values
        if isinstance(layer, keras.layers.Conv2D):
            kernel, *rest = layer.get_weights()
            shared = np.round(kernel * 4) / 4 + 0.01  # + 0.01: no new zeros
            layer.set_weights([np.where(kernel == 0, 0.0, shared).astype(np.float32), *rest])
    assert is_clustered(model)


@pytest.mark.slow
def test_cluster_preserving_qat_keeps_clusters_and_zeros(
    clustered: keras.Model, qat_clustered: keras.Model
) -> None:
    # The centroids trained (QAT did something) but every kernel still shares CLUSTERS values.
    before, after = kernels(clustered), kernels(qat_clustered)
    assert any(not np.array_equal(before[n], after[n]) for n in before if n not in KEEP_DENSE)
    for name, kernel in after.items():
        if name not in KEEP_DENSE:
            assert unique_nonzero(kernel) <= CLUSTERS, (name, unique_nonzero(kernel))
    assert min(_zeros_kept(clustered, qat_clustered).values()) == 1.0


def _int8_kernels(content: bytes) -> dict[str, np.ndarray]:
    """The int8 convolution weights of a TFLite model by tensor name ([O, H, W, I])."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        shape = detail["shape"]
        if detail["dtype"] == np.int8 and len(shape) == 4 and shape[0] > 1 and shape[-1] > 1:
            try:
                found[detail["name"]] = interpreter.get_tensor(detail["index"])
            except ValueError:  # an activation: no data before invoke
                continue
    return found


@pytest.mark.slow
def test_int8_tflite_keeps_the_clusters_and_compresses_better(
    run: Run, pruned: keras.Model, qat_clustered: keras.Model
) -> None:
    clustered_int8 = qat_tflite_int8(qat_clustered, run.tile_size)
    pruned_int8 = qat_tflite_int8(
        quantize_aware(pruned, run, epochs=1, steps_per_epoch=4, verbose=0), run.tile_size
    )

    # TFLite folds each batch norm into its convolution with one scale per output channel, so
    # the shared values survive per output channel: at most CLUSTERS nonzero codes in each.
    weights = _int8_kernels(clustered_int8)
    per_channel = {
        name: max(unique_nonzero(channel) for channel in kernel) for name, kernel in weights.items()
    }
    shared = [name for name, count in per_channel.items() if count <= CLUSTERS]
    assert len(shared) >= len(kernels(pruned)) - len(KEEP_DENSE), per_channel
    zeros = sum(int(np.sum(k == 0)) for k in weights.values()) / sum(
        k.size for k in weights.values()
    )
    assert zeros >= 0.45, zeros  # 50 % pruned; the dense first convolution dilutes it

    # Measured 0.84 on the tiny U-Net, whose file is mostly graph, not weights; the `small`
    # U-Net on ISBI: 0.68 (README).
    ratio = len(gzip.compress(clustered_int8, 9)) / len(gzip.compress(pruned_int8, 9))
    assert ratio < 0.9, ratio


def test_cluster_preserving_qat_takes_transposed_convolutions() -> None:
    """tfmot's CQAT registry has no Conv2DTranspose rule: ours keeps its clusters and zeros."""
    model = build_unet(preset("tiny").replace(upsampling="transpose"), input_size=16)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name not in KEEP_DENSE:
            kernel, *rest = layer.get_weights()
            values = rng.normal(0.0, 0.3, size=CLUSTERS).astype(np.float32)
            kernel = values[rng.integers(0, CLUSTERS, kernel.shape)]
            kernel[rng.random(kernel.shape) < 0.5] = 0.0
            layer.set_weights([kernel, *rest])
    assert is_clustered(model)

    qat = prepare_qat(model)  # auto: sparse and clustered -> PCQAT
    optimizer = keras.optimizers.SGD(0.1)
    x = tf.random.stateless_uniform((2, 16, 16, 1), seed=(1, 2))
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(qat(x, training=True))
        grads = tape.gradient(loss, qat.trainable_variables)
        pairs = zip(grads, qat.trainable_variables, strict=True)
        optimizer.apply_gradients([(g, v) for g, v in pairs if g is not None])
    qat(x, training=True)  # the kernels are written from the centroids in a training call

    before, after = kernels(model), kernels(qat)
    assert isinstance(qat.get_layer("quant_dec1_upconv").layer, keras.layers.Conv2DTranspose)
    assert not np.array_equal(before["dec1_upconv"], after["dec1_upconv"])  # it trained
    for name in before:
        if name not in KEEP_DENSE:
            assert unique_nonzero(after[name]) <= CLUSTERS, name
            assert np.all(after[name][before[name] == 0] == 0), name


@pytest.mark.slow
def test_prune_cli_clusters_and_reports_them(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "clustered"
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(out), "--epochs", "1"]
    argv += ["--steps-per-epoch", "4", "--clusters", "4", "--cluster-epochs", "1"]
    assert prune_main(prune_args(argv)) == 0

    report = json.loads((out / "prune_report.json").read_text())
    layers = report["clusters"]["layers"]
    assert report["clusters"]["clusters"] == 4
    assert all(layers[n] <= 4 for n in layers if n not in KEEP_DENSE), layers
    assert report["sparsity"]["sparsity"] == pytest.approx(0.5, abs=0.03)
    assert json.loads((out / "config.json").read_text())["prune"]["clusters"] == 4


@pytest.mark.parametrize("clusters", ["1", "-3", "300"])
def test_bad_cluster_counts_are_one_line_errors(tmp_path: Path, capsys, clusters: str) -> None:
    # The config is checked before the model is even looked for.
    argv = ["--model", str(tmp_path / "model.keras"), "--out", str(tmp_path / "o")]
    assert prune_main(prune_args([*argv, "--clusters", clusters])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"clusters must be 0 (off) or in 2..256, got {clusters}" in err
    with pytest.raises(UserError, match=r"clusters must be in 2\.\.256"):
        cluster(build_unet(preset("tiny")), run=None, clusters=1)  # type: ignore[arg-type]
