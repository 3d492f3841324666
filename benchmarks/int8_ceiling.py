"""The int8 ceiling: the best rate of a large integer GEMM (u8 x i8 -> i32) through OpenVINO.

The float32 ceiling (numpy's BLAS) says little about int8 models: VNNI does 4 int8 MACs where
FMA does one float32 MAC, and AMX tiles far more. So "% of ceiling" of an int8 model is measured
against an int8 GEMM on the same CPU, through the engine that runs the fastest int8 kernels
here. The GEMM is a quantize (FakeQuantize, u8) into a MatMul with int8 weights: OpenVINO's
low-precision pass runs it as an integer FullyConnected, and `int8_gemm_ceiling` checks that it
did (the node's runtime precision), else a float GEMM would pass for the int8 ceiling.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Int8Ceiling:
    gmacs_per_s: float
    kernel: str  # OpenVINO's primitive, e.g. brgemm_avx512_amx_I8 or ..._vnni


def _model(side: int):
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([side, side], np.float32, name="x")
    low, high = ops.constant(np.float32(0)), ops.constant(np.float32(2.55))
    quantized = ops.fake_quantize(x, low, high, low, high, 256)  # u8 activations
    w = np.random.default_rng(0).integers(-127, 128, (side, side), dtype=np.int8)
    scales = ops.constant(np.full((side, 1), 0.01, np.float32))
    weights = ops.multiply(ops.convert(ops.constant(w), np.float32), scales)  # i8 weights
    return ov.Model([ops.matmul(quantized, weights, False, True)], [x])


def _gemm_kernel(compiled) -> tuple[str, str]:
    """(runtime precision, primitive) of the compiled GEMM node."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            return info["runtimePrecision"].astype(str), info["primitiveType"].astype(str)
    return "none", "none"


def int8_gemm_ceiling(threads: int, side: int = 2048, repeats: int = 5) -> Int8Ceiling | None:
    """Best of `repeats` side x side x side int8 GEMMs at `threads`; None without OpenVINO or
    when it did not run the GEMM in integers."""
    if not importlib.util.find_spec("openvino"):
        return None
    import openvino as ov

    from runtime.openvino_engine import compile_config

    compiled = ov.Core().compile_model(_model(side), "CPU", compile_config(threads))
    precision, kernel = _gemm_kernel(compiled)
    if precision not in ("u8", "i8"):
        return None
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random((side, side), np.float32) * 2.55
    request.infer({0: x})  # warm-up: weight packing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: x})
        best = min(best, time.perf_counter() - start)
    return Int8Ceiling(side**3 / best / 1e9, kernel)
