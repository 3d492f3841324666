"""The third-party private APIs this project calls (runtime/private_api.py), each checked against
the installed release: a rename or a changed result fails here, naming the function, instead
of somewhere deep in an export or a benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import private_api


@pytest.fixture(scope="module")
def interpreter(tiny_bundle):
    from runtime.backends import litert_interpreter_class

    interpreter = litert_interpreter_class()(model_path=str(tiny_bundle / "model_fp32.tflite"))
    return _sized(interpreter)


def _sized(interpreter):
    """Allocated for one 64 px tile (the model takes any size)."""
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, 64, 64, 1], strict=True)
    interpreter.allocate_tensors()
    return interpreter


def test_litert_lists_operators_with_their_tensors(interpreter):
    nodes = private_api.operators(interpreter)
    names = [node["op_name"] for node in nodes]
    assert "CONV_2D" in names and "DELEGATE" in names, names
    for node in nodes:
        assert {"index", "op_name", "inputs", "outputs"} <= set(node), node
    conv = next(node for node in nodes if node["op_name"] == "CONV_2D")
    assert isinstance(private_api.tensor_name(interpreter, conv["outputs"][0]), str)
    assert private_api.tensor_dtype(interpreter, conv["inputs"][0]) == np.float32


def test_undelegated_operators_finds_what_litert_runs_itself(interpreter):
    left = private_api.undelegated_operators(interpreter)
    assert left and "CONV_2D" not in left and "DELEGATE" not in left
    assert left["RESIZE_NEAREST_NEIGHBOR"] == 2  # XNNPACK takes no nearest resize


def test_undelegated_operators_of_an_undelegated_model_is_every_operator(tiny_bundle):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(tiny_bundle / "model_fp32.tflite"),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    _sized(interpreter)
    every = [node["op_name"] for node in private_api.operators(interpreter)]
    assert sum(private_api.undelegated_operators(interpreter).values()) == len(every)


def test_tfmot_cluster_preserve_module_has_what_qat_uses():
    import train.tfk  # noqa: F401  (Keras 2 first, as tfmot needs)

    module = private_api.tfmot_cluster_preserve()
    for name in (
        "get_unique",
        "get_centroids",
        "ClusterPreserveDefault8BitConvWeightsQuantizer",
        "ClusterPreserveDefault8BitWeightsQuantizer",
    ):
        assert hasattr(module, name), f"tfmot's cluster_preserve_quantize_registry.{name} is gone"


def test_tfmot_centroids_are_put_back_even_after_an_error():
    import train.tfk  # noqa: F401

    module = private_api.tfmot_cluster_preserve()
    original = module.get_centroids

    def replacement(*args):
        return args

    with pytest.raises(RuntimeError), private_api.tfmot_centroids_replaced(replacement):
        assert module.get_centroids is replacement
        raise RuntimeError("build failed")
    assert module.get_centroids is original


def test_tf2onnx_optimizers_are_left_out_and_put_back_even_after_an_error():
    from tf2onnx import optimizer

    every = list(optimizer._optimizers)
    assert "reshape_optimizer" in every, "tf2onnx's reshape_optimizer is gone (optimize/export.py)"
    with pytest.raises(RuntimeError), private_api.tf2onnx_without_optimizers("reshape_optimizer"):
        assert list(optimizer._optimizers) == [n for n in every if n != "reshape_optimizer"]
        raise RuntimeError
    assert list(optimizer._optimizers) == every
    with (
        pytest.raises(KeyError, match="no optimizer named nope"),
        private_api.tf2onnx_without_optimizers("nope"),
    ):
        pass
