"""benchmarks.zoo_peer on a 256 px image: both peers run in their own processes, the report
holds their times, memory and agreement, and a size below the package's block is one line.

The package is made here: a 1x1 convolution with a fixed 128 px input and a 16 px halo
(batch, channel, y, x), per-image normalization and a sigmoid, so the runtime's tiles and
core's blocks see the same pixels and must agree exactly, whatever the tiles' places.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.zoo_peer import main, parse_args, summary
from tests.zoo_package import write_package

SIDE, HALO = 128, 16


def _onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init = [
        numpy_helper.from_array(np.full((1, 1, 1, 1), 2.0, np.float32), "w"),
        numpy_helper.from_array(np.array([-0.5], np.float32), "b"),
    ]
    shape = [1, 1, SIDE, SIDE]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["raw", "w", "b"], ["logits"])],
        "conv1x1",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def package(tmp_path) -> Path:
    space = [{"type": "space", "id": axis, "size": SIDE} for axis in "yx"]
    follows = [
        {"type": "space", "id": axis, "size": {"tensor_id": "raw", "axis_id": axis}, "halo": HALO}
        for axis in "yx"
    ]
    channel = {"type": "channel", "channel_names": ["c0"]}
    normalize = {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}
    inputs = {"axes": [{"type": "batch"}, channel, *space], "preprocessing": [normalize]}
    outputs = {
        "axes": [{"type": "batch"}, channel, *follows],
        "postprocessing": [{"id": "sigmoid"}],
    }
    return write_package(tmp_path / "conv", _onnx(), inputs, outputs)


def test_both_peers_run_and_agree(package, tmp_path, capsys):
    pytest.importorskip("bioimageio.core", reason="the zoo extra: pip install '.[zoo]'")
    out = tmp_path / "peer.json"
    assert main(parse_args([str(package), "--size", "256", "--out", str(out)])) == 0
    report = json.loads(out.read_text())
    assert report["size"] == 256 and report["threads"] == 2
    assert report["image"] == "gamma noise (no test input)"
    for peer, words in (("runtime", "onnxruntime, 2 threads"), ("core", "bioimageio.core")):
        run = report["runs"][peer]
        assert run["ms"] > 0 and run["load_ms"] > 0 and run["detail"].startswith(words)
        assert 30 < run["peak_rss_mb"] < 4000  # a Python process with numpy and onnxruntime
    assert report["mask_agreement"] == 1.0
    assert report["max_probability_difference"] < 1e-5
    printed = capsys.readouterr().out.splitlines()
    assert printed == summary(report).splitlines() and len(printed) == 3


def test_an_image_smaller_than_a_block_is_one_line(package, tmp_path, capsys):
    out = tmp_path / "peer.json"
    assert main(parse_args([str(package), "--size", "100", "--out", str(out)])) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --size 100 is smaller than the package's {SIDE} px block, which "
        f"bioimageio.core's blocked prediction cannot run: give --size {SIDE} or more\n"
    )
    assert not out.exists()


def test_summary_is_three_lines():
    run = {"ms": 1234.5, "load_ms": 10.0, "peak_rss_mb": 321.0, "detail": "d"}
    report = {
        "runs": {"runtime": run, "core": {**run, "ms": 2345.6}},
        "mask_agreement": 0.99995,
        "size": 2048,
        "max_probability_difference": 1.9e-3,
    }
    lines = summary(report).splitlines()
    assert lines[0].split()[:2] == ["runtime", "1234"] and "321 MB" in lines[0]
    assert lines[1].split()[:2] == ["core", "2346"]
    assert lines[2].startswith("masks agree 99.9950% on 2048 x 2048 px")
