"""runtime.zoo on the layouts and steps format 0.5 allows, with 1x1-convolution ONNX models made
here (so the expected output is a few lines of numpy): channel first with a batch axis and
channel last without one, 2 and 4 channels, a parameterized and a fixed input, per-image
percentiles and per-channel steps. Per-image statistics are the whole image's, so the tiled
result equals the untiled one; bioimageio.core, where installed, agrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime import Segmenter, UserError
from tests.zoo_package import write_package

W2 = np.array([1.5, -2.0], np.float32)  # 2 channels -> 1 logit
W4 = np.array([[1.0, -0.5, 0.25, 2.0], [-1.0, 0.5, 1.5, -0.25]], np.float32)  # 4 -> 2 logits


def _onnx(weights: np.ndarray, channel_last_unbatched: bool, side: int | None) -> bytes:
    """A 1x1 convolution (K, C) in (N, C, H, W), or in (H, W, C) with no batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, c = weights.shape
    h, w = (side, side) if side else ("h", "w")
    init = [
        numpy_helper.from_array(weights.reshape(k, c, 1, 1), "w"),
        numpy_helper.from_array(np.zeros(k, np.float32), "b"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    if channel_last_unbatched:
        nodes = [
            helper.make_node("Transpose", ["raw"], ["chw"], perm=[2, 0, 1]),
            helper.make_node("Unsqueeze", ["chw", "axis0"], ["nchw"]),
            helper.make_node("Conv", ["nchw", "w", "b"], ["y"]),
            helper.make_node("Squeeze", ["y", "axis0"], ["khw"]),
            helper.make_node("Transpose", ["khw"], ["logits"], perm=[1, 2, 0]),
        ]
        shapes = ([h, w, c], [h, w, k])
    else:
        nodes = [helper.make_node("Conv", ["raw", "w", "b"], ["logits"])]
        shapes = (["n", c, h, w], ["n", k, h, w])
    graph = helper.make_graph(
        nodes,
        "conv1x1",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, shapes[0])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shapes[1])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _space(min_step: dict | int, ref: bool = False) -> list[dict]:
    """y and x axes: x without an id (format 0.5 makes it x), output sizes referring to the
    input's when `ref`."""
    if ref:
        return [
            {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
            {"type": "space", "size": {"tensor_id": "raw", "axis_id": "x"}},
        ]
    return [{"type": "space", "id": "y", "size": min_step}, {"type": "space", "size": min_step}]


PERCENTILES = (1.0, 99.8)


@pytest.fixture
def channel_first(tmp_path) -> Path:
    """(batch, channel, y, x), 2 channels, any multiple of 16: per-image percentiles per
    channel, a clip, sigmoid."""
    inputs = {
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["dapi", "actin"]},
            *_space({"min": 16, "step": 16}),
        ],
        "preprocessing": [
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": ["x", "y"],
                    "min_percentile": PERCENTILES[0],
                    "max_percentile": PERCENTILES[1],
                },
            },
            {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}},
        ],
    }
    outputs = {
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["fg"]}, *_space(0, True)],
        "postprocessing": [{"id": "sigmoid"}],
    }
    return write_package(tmp_path / "first", _onnx(W2[None], False, None), inputs, outputs)


def _expected_channel_first(image: np.ndarray) -> np.ndarray:
    """The zoo's steps on the whole image, in plain numpy: (H, W, 2) -> (H, W, 1)."""
    x = image.astype(np.float64)
    low, high = (np.percentile(x, q, axis=(0, 1)) for q in PERCENTILES)
    x = np.clip((x - low) / (high - low + 1e-6), 0, 1)
    return (1 / (1 + np.exp(-(x @ W2))))[..., None].astype(np.float32)


def _fluorescence(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 300.0, shape).astype(np.float32)


def test_channel_first_tiles_equal_the_whole_image(channel_first):
    image = _fluorescence((1104, 704, 2))
    seg = Segmenter.from_bundle(channel_first)
    result = seg.predict(image)
    assert result.tiles > 1  # 512 px tiles: a package without a measured memory line
    np.testing.assert_allclose(result.probabilities, _expected_channel_first(image), atol=2e-6)


def test_channel_first_agrees_with_bioimageio_core(channel_first):
    pytest.importorskip("bioimageio.core", reason="the zoo extra: pip install '.[zoo]'")
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    image = _fluorescence((1104, 704, 2), seed=1)
    description = load_model_description(channel_first / "rdf.yaml", perform_io_checks=False)
    pipeline = create_prediction_pipeline(description, weight_format="onnx")
    theirs = predict(model=pipeline, inputs=image.transpose(2, 0, 1)[None])
    theirs = theirs.members["prob"].data.values[0].transpose(1, 2, 0)
    ours = Segmenter.from_bundle(channel_first).predict(image)
    np.testing.assert_allclose(ours.probabilities, theirs, atol=2e-6)


MEANS, STDS, GAINS = [100.0, 200.0, 50.0, 10.0], [30.0, 60.0, 20.0, 5.0], [1.0, 0.5, 2.0, 1.5]


@pytest.fixture
def channel_last(tmp_path) -> Path:
    """(y, x, channel) without a batch axis, 4 channels, exactly 64 x 64: fixed per-channel
    mean and std, a per-channel gain, softmax over 2 classes."""
    inputs = {
        "axes": [*_space(64), {"type": "channel", "channel_names": ["a", "b", "c", "d"]}],
        "preprocessing": [
            {
                "id": "fixed_zero_mean_unit_variance",
                "kwargs": {"mean": MEANS, "std": STDS, "axis": "channel"},
            },
            {"id": "scale_linear", "kwargs": {"gain": GAINS, "offset": 0.0, "axis": "channel"}},
        ],
    }
    outputs = {
        "axes": [*_space(0, True), {"type": "channel", "channel_names": ["bg", "cell"]}],
        "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
    }
    return write_package(tmp_path / "last", _onnx(W4, True, 64), inputs, outputs)


def test_channel_last_without_batch_tiles_a_fixed_input(channel_last):
    image = _fluorescence((150, 130, 4))
    seg = Segmenter.from_bundle(channel_last)
    result = seg.predict(image)
    assert result.tiles > 1 and seg.manifest.classes == 2
    x = (image - np.array(MEANS)) / (np.array(STDS) + 1e-6) * np.array(GAINS)
    logits = x @ W4.T
    e = np.exp(logits - logits.max(-1, keepdims=True))
    # float32 logits reach |50| here, where one ulp is 4e-6: a float64 reference differs so.
    np.testing.assert_allclose(result.probabilities, e / e.sum(-1, keepdims=True), atol=3e-5)
    assert np.mean(result.mask == np.argmax(logits, -1)) > 0.9999


def test_an_image_of_other_channels_is_one_line(channel_last):
    seg = Segmenter.from_bundle(channel_last)
    with pytest.raises(UserError, match=r"4-channel model .*give an \(H, W, 4\) array"):
        seg.predict(_fluorescence((64, 64, 3)))
    with pytest.raises(UserError, match="only the onnx engine"):
        Segmenter.from_bundle(channel_last, backend="openvino")


def _with_z(onnx_bytes: bytes) -> bytes:
    """The 1x1 convolution with a space axis z of size 1 in its input (squeezed before the
    convolution) and its output (added after it): (N, C, 1, H, W) in and out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "z"))
    graph.node[0].input[0], graph.node[0].output[0] = "raw4", "logits4"
    graph.node.insert(0, helper.make_node("Squeeze", ["raw", "z"], ["raw4"]))
    graph.node.append(helper.make_node("Unsqueeze", ["logits4", "z"], ["logits"]))
    for values, channels in ((graph.input, 2), (graph.output, 1)):
        name = values[0].name
        del values[:]
        shape = ["n", channels, 1, "h", "w"]
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_an_axis_of_size_one_is_squeezed(channel_first, tmp_path):
    """The spec's `expand_output_shape` example adds a space axis z of size 1 to a 2-D model's
    output: still a 2-D model (not refused as 3-D), the axis squeezed out and put back, the
    same probabilities; a statistic over z spans its one pixel."""
    rdf = yaml.safe_load((channel_first / "rdf.yaml").read_text())
    inputs, outputs = rdf["inputs"][0], rdf["outputs"][0]
    for tensor in (inputs, outputs):
        tensor["axes"].insert(2, {"type": "space", "id": "z", "size": 1})
    inputs["preprocessing"][0]["kwargs"]["axes"] = ["z", "x", "y"]
    model = _with_z((channel_first / "model.onnx").read_bytes())
    expanded = write_package(tmp_path / "expanded", model, inputs, outputs)
    image = _fluorescence((200, 180, 2))
    ours = Segmenter.from_bundle(expanded).predict(image)
    np.testing.assert_allclose(ours.probabilities, _expected_channel_first(image), atol=2e-6)
