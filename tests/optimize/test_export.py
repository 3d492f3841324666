"""The float ONNX export keeps the Keras model's output shape, and the tf2onnx bug it avoids."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from optimize.converters import onnx_fp32, tflite_int8
from optimize.finetune import Run


def _run(content: bytes, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.slow
def test_a_one_channel_model_exports_with_its_output_shape(tiny_run: Path):
    import onnx

    run = Run.load(tiny_run)
    model = run.load_model()
    batch = np.random.default_rng(0).normal(size=(2, 96, 64, 1)).astype(np.float32)
    content = onnx_fp32(model, run.tile_size)
    np.testing.assert_allclose(_run(content, batch), model(batch).numpy(), atol=1e-4)
    # tf2onnx's reshape optimizer did not run: it adds a Squeeze to each NCHW<->NHWC Reshape
    # (and loses it when that Reshape is the graph output, below).
    assert "Squeeze" not in {node.op_type for node in onnx.load_from_string(content).graph.node}


@pytest.mark.slow
def test_int8_conversion_keeps_the_converters_notes_to_itself(tiny_run: Path, capfd):
    run = Run.load(tiny_run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tflite_int8(run.load_model(), run.tile_size, run.calibration_tiles()[:2])
    assert not [w for w in caught if "Statistics for quantized inputs" in str(w.message)]
    assert "fully_quantize" not in capfd.readouterr().err  # written by C++ to fd 2


def test_tf2onnx_reshape_optimizer_still_loses_the_squeeze_at_a_graph_output():
    """Why `onnx_fp32` leaves tf2onnx's reshape optimizer out. When this fails, a tf2onnx
    release has fixed it: the export can keep the pass."""
    from onnx import TensorProto
    from tf2onnx.graph import Graph
    from tf2onnx.optimizer import ReshapeOptimizer

    def nchw_to_nhwc_as_graph_output() -> Graph:
        """What tf2onnx makes of a 1-channel model's last Transpose: a Reshape to the NHWC
        dimensions, read from the input's shape at run time."""
        graph = Graph([], opset=17)
        graph.add_graph_input("x", TensorProto.FLOAT, [-1, 1, -1, -1])
        shape = graph.make_node("Shape", ["x"]).output[0]
        order = graph.make_const("order", np.array([0, 2, 3, 1], np.int64)).output[0]
        nhwc = graph.make_node("Gather", [shape, order]).output[0]
        out = graph.make_node("Reshape", ["x", nhwc], shapes=[[-1, -1, -1, 1]]).output[0]
        graph.add_graph_output(out, TensorProto.FLOAT, [-1, -1, -1, 1])
        return graph

    batch = np.zeros((2, 1, 5, 7), np.float32)
    graph = nchw_to_nhwc_as_graph_output()
    assert _run(graph.make_model("t").SerializeToString(), batch).shape == (2, 5, 7, 1)
    optimized = ReshapeOptimizer().optimize(nchw_to_nhwc_as_graph_output(), 0)
    assert _run(optimized.make_model("t").SerializeToString(), batch).shape == (1, 2, 5, 7, 1)


@pytest.mark.slow
def test_export_takes_best_keras_of_an_unfinished_run(tiny_run: Path, tmp_path, capsys):
    """A run stopped before its last epoch has best.keras and no model.keras: --checkpoint
    best exports it, the default (final) names the file it lacks."""
    from optimize.export import main, parse_args

    run = Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("logs")))
    (run / "model.keras").unlink()
    out = tmp_path / "bundle"
    assert main(parse_args([str(run), "--out", str(out)])) == 2
    assert f"{run} has no model.keras" in capsys.readouterr().err
    assert main(parse_args([str(run), "--checkpoint", "best", "--out", str(out)])) == 0
    assert (out / "manifest.json").is_file()
