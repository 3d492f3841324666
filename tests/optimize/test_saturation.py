"""The AVX2 u8 x s8 saturation check: exact on a hand-made convolution, and it refuses a
full-range int8 model on any CPU (it emulates the arithmetic, whatever kernels this CPU has)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimize.converters import onnx_fp32
from optimize.finetune import Run
from optimize.onnx_int8 import onnx_int8_qdq, quantize_qdq
from optimize.saturation import SaturationRisk, check_no_saturation, u8s8_saturation


def _qdq_conv(weights: np.ndarray, pads: tuple[int, int, int, int]) -> bytes:
    """x (NHWC float) -> QuantizeLinear(scale 1, zero point 0: uint8 = x) -> Transpose -> DQ ->
    Conv with these int8 (Cout, Cin, kh, kw) weights: the shape of onnxruntime's QDQ export."""
    from onnx import TensorProto, helper, numpy_helper

    cout, cin = weights.shape[:2]
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(weights.astype(np.int8), "w_q"),
        numpy_helper.from_array(np.ones(cout, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(cout, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("QuantizeLinear", ["x_nchw", "one", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "one", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv", pads=list(pads)),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, None, cin])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def _brute_force(x: np.ndarray, weights: np.ndarray, pad: int) -> int:
    """Every pair sum of an explicit channels-last im2col, (kh, kw, cin) order, odd K padded."""
    n, h, w, _ = x.shape
    cout, _cin, kh, kw = weights.shape
    padded = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    flat = weights.transpose(0, 2, 3, 1).reshape(cout, -1).astype(np.int64)
    saturated = 0
    for b in range(n):
        for y in range(h + 2 * pad - kh + 1):
            for xx in range(w + 2 * pad - kw + 1):
                patch = padded[b, y : y + kh, xx : xx + kw, :].reshape(-1)
                products = flat * patch
                if products.shape[1] % 2:
                    products = np.pad(products, ((0, 0), (0, 1)))
                sums = products[:, 0::2] + products[:, 1::2]
                saturated += int(np.count_nonzero((sums > 32767) | (sums < -32768)))
    return saturated


@pytest.mark.parametrize("cin", [1, 3, 4])
def test_pair_sums_match_a_brute_force_im2col(cin: int) -> None:
    """Random full-range weights and activations, odd channel counts included (pairs then span
    kernel taps): the histogram-based count equals the explicit one."""
    rng = np.random.default_rng(cin)
    weights = rng.integers(-128, 128, (5, cin, 3, 3))
    x = rng.integers(0, 256, (2, 7, 6, cin)).astype(np.float32)
    (conv,) = u8s8_saturation(_qdq_conv(weights, (1, 1, 1, 1)), list(x))
    expected = _brute_force(x, weights, pad=1)
    assert expected > 0  # the case is not vacuous
    assert conv.saturated == expected
    assert conv.sums == 5 * -(-9 * cin // 2) * 2 * 7 * 6


def test_share_of_a_known_case() -> None:
    """Two channels at 127 and 1x1 kernels: bright pixels (255, 255) sum to 64770 and saturate,
    dim ones (100, 100) to 25400 and do not; 7-bit weights (64) never saturate."""
    x = np.full((1, 4, 4, 2), 100, np.float32)
    x[0, :1] = 255  # one row of four pixels of sixteen
    (full,) = u8s8_saturation(_qdq_conv(np.full((1, 2, 1, 1), 127), (0, 0, 0, 0)), list(x))
    assert (full.risky_pairs, full.saturated, full.sums) == (1, 4, 16)
    assert full.share == 0.25
    (seven_bit,) = u8s8_saturation(_qdq_conv(np.full((1, 2, 1, 1), 64), (0, 0, 0, 0)), list(x))
    assert (seven_bit.risky_pairs, seven_bit.saturated) == (0, 0)
    check_no_saturation([seven_bit])
    with pytest.raises(SaturationRisk, match=r"conv: 1 of 1 weight pairs, 25\.0000%"):
        check_no_saturation([full])


@pytest.mark.slow
def test_full_range_u8s8_unet_is_refused_and_the_export_is_safe(tiny_run: Path) -> None:
    """The tiny U-Net quantized with full-range int8 weights has pairs that can saturate, found
    on this CPU whatever its kernels; the export's own model (7-bit weights) has none."""
    run = Run.load(tiny_run)
    tiles = run.calibration_tiles()
    fp32 = onnx_fp32(run.load_model(), run.tile_size)
    full_range = quantize_qdq(fp32, tiles, per_channel=True, keep_float=(), reduce_range=False)
    report = u8s8_saturation(full_range, tiles[:4])
    assert len(report) == 13  # every convolution of the tiny U-Net is checked
    assert sum(r.risky_pairs for r in report) > 0
    with pytest.raises(SaturationRisk, match="reduce_range"):
        check_no_saturation(report)

    import onnx
    from onnx import numpy_helper

    safe = onnx_int8_qdq(fp32, tiles)  # refuses by itself: passing is part of the test
    kernels = [
        numpy_helper.to_array(init)
        for init in onnx.load_from_string(safe).graph.initializer
        if len(init.dims) == 4
    ]
    assert max(int(np.abs(k.astype(np.int32)).max()) for k in kernels) <= 64
    assert all(r.risky_pairs == 0 for r in u8s8_saturation(safe, tiles[:4]))
