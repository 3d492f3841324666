"""Every private API of a third-party library that this project calls, in one place.

Each is used because no public one does the job, and each has a test
(tests/test_private_api.py) that fails loudly, naming the function, when a library release
renames or changes it. Imports are lazy: importing this module needs numpy only.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any


def operators(interpreter: Any) -> list[dict[str, Any]]:
    """A LiteRT interpreter's nodes: op_name, index, inputs, outputs (`_get_ops_details`, the
    only API that lists a model's operators). After delegation it also lists the DELEGATE
    nodes, and keeps the nodes they replaced."""
    return interpreter._get_ops_details()


def undelegated_operators(interpreter: Any) -> Counter[str]:
    """The operators LiteRT runs itself, outside any delegate, after `allocate_tensors`.

    The node list keeps the nodes a delegate replaced, so this walks back from the outputs
    through what is executed: a tensor that a DELEGATE node outputs comes from that delegate;
    any other from the node that outputs it, which is then executed as it is.
    """
    nodes = operators(interpreter)
    producer: dict[int, dict[str, Any]] = {}
    for node in nodes:  # delegates last, so they override the nodes they replaced
        if node["op_name"] != "DELEGATE":
            producer.update({int(t): node for t in node["outputs"]})
    for node in nodes:
        if node["op_name"] == "DELEGATE":
            producer.update({int(t): node for t in node["outputs"]})
    needed = [int(d["index"]) for d in interpreter.get_output_details()]
    seen: set[int] = set()
    executed: Counter[str] = Counter()
    while needed:
        node = producer.get(needed.pop())
        if node is None or node["index"] in seen:
            continue  # a model input or constant, or a node already counted
        seen.add(node["index"])
        if node["op_name"] != "DELEGATE":
            executed[node["op_name"]] += 1
        needed.extend(int(t) for t in node["inputs"] if t >= 0)
    return executed


def tensor_name(interpreter: Any, index: int) -> str:
    """A LiteRT tensor's name (`_get_tensor_details`; the public list skips some tensors)."""
    return interpreter._get_tensor_details(index, 0)["name"]


def tensor_dtype(interpreter: Any, index: int) -> Any:
    return interpreter._get_tensor_details(index, 0)["dtype"]


def tfmot_cluster_preserve() -> Any:
    """tfmot's (P)CQAT quantizer module, whose quantizers its public API only offers inside a
    scheme. It needs TensorFlow with Keras 2: import `train.tfk` first."""
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        cluster_preserve_quantize_registry,
    )

    return cluster_preserve_quantize_registry


@contextlib.contextmanager
def tfmot_centroids_replaced(get_centroids: Callable[..., Any]) -> Iterator[None]:
    """tfmot's module-level `get_centroids`, replaced while a quantizer builds (the build
    is not threaded); the original is put back whatever happens."""
    module = tfmot_cluster_preserve()
    original = module.get_centroids
    module.get_centroids = get_centroids
    try:
        yield
    finally:
        module.get_centroids = original


@contextlib.contextmanager
def tf2onnx_without_optimizers(*names: str) -> Iterator[None]:
    """tf2onnx's table of graph optimizers (`tf2onnx.optimizer._optimizers`, which every
    conversion reads and no argument of `tf2onnx.convert.from_function` can change) without
    these passes while a conversion runs; the table is put back whatever happens."""
    from tf2onnx import optimizer

    table = optimizer._optimizers
    missing = [name for name in names if name not in table]
    if missing:
        raise KeyError(f"tf2onnx has no optimizer named {', '.join(missing)}")
    original = dict(table)
    for name in names:
        del table[name]
    try:
        yield
    finally:
        table.clear()
        table.update(original)
