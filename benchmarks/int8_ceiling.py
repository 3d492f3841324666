"""The engine ceilings: the best rate of a large GEMM through OpenVINO, integer (u8 x i8 -> i32)
and float32.

The float32 ceiling (numpy's BLAS) says little about int8 models: VNNI does 4 int8 MACs where
FMA does one float32 MAC, and AMX tiles far more. So "% of ceiling" of an int8 model is measured
against an int8 GEMM on the same CPU, through the engine that runs the fastest int8 kernels
here. The GEMM is a quantize (FakeQuantize, u8) into a MatMul with int8 weights: OpenVINO's
low-precision pass runs it as an integer FullyConnected, and `int8_gemm_ceiling` checks that it
did (the node's runtime precision), else a float GEMM would pass for the int8 ceiling. The
float32 ceiling is the better of numpy's BLAS and the same engine's f32 GEMM, so both ceilings
come from a kernel an engine runs.
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


def _f32_model(side: int):
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([side, side], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((side, side), dtype=np.float32)
    return ov.Model([ops.matmul(x, ops.constant(w), False, True)], [x])


def _best_rate(compiled, side: int, repeats: int) -> float:
    """GMAC/s of the best of `repeats` runs of a compiled side^3 GEMM."""
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random((side, side), np.float32) * 2.55
    request.infer({0: x})  # warm-up: weight packing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: x})
        best = min(best, time.perf_counter() - start)
    return side**3 / best / 1e9


def _compiled(model, threads: int):
    import openvino as ov

    from runtime.openvino_engine import compile_config

    return ov.Core().compile_model(model, "CPU", compile_config(threads))


def int8_gemm_ceiling(threads: int, side: int = 2048, repeats: int = 5) -> Int8Ceiling | None:
    """Best of `repeats` side x side x side int8 GEMMs at `threads`; None without OpenVINO or
    when it did not run the GEMM in integers."""
    if not importlib.util.find_spec("openvino"):
        return None
    compiled = _compiled(_model(side), threads)
    precision, kernel = _gemm_kernel(compiled)
    if precision not in ("u8", "i8"):
        return None
    return Int8Ceiling(_best_rate(compiled, side, repeats), kernel)


def f32_gemm_ceiling(threads: int, side: int = 2048, repeats: int = 5) -> float | None:
    """The float32 GEMM measured the way the int8 one is: through OpenVINO's kernel, in f32
    arithmetic (checked, not bf16 on a CPU with AMX); None without OpenVINO."""
    if not importlib.util.find_spec("openvino"):
        return None
    compiled = _compiled(_f32_model(side), threads)
    if _gemm_kernel(compiled)[0] != "f32":
        return None
    return _best_rate(compiled, side, repeats)
