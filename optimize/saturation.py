"""Would this int8 ONNX model compute other masks on an x86 CPU without VNNI? Asked in numpy.

onnxruntime's u8 x s8 integer convolution on x86 without VNNI (AVX2, AVX-512 without VNNI)
multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds each pair of
neighbouring products into an int16 and saturates: 255 * 127 * 2 = 64770 > 32767. A CPU with
VNNI adds into int32 and cannot saturate, and onnxruntime picks its kernels from the CPU at run
time, with no switch to force the AVX2 path: so the build machine cannot show the fault, and this
module emulates the arithmetic instead. Measured on an AVX2-only CPU (issue 9): the same file
agreed with float on 97.1% of pixels there and 99.7% on a VNNI CPU.

The pairs are neighbours along the convolution's reduction axis in the (kernel row, kernel
column, input channel) order of onnxruntime's channels-last im2col; for an odd channel count
a pair spans two kernel taps, which is the pessimistic reading (a kernel that pads channels per
tap pairs the last one with a zero weight instead, and one product alone cannot saturate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767
UINT8_MAX = 255


@dataclasses.dataclass(frozen=True)
class ConvSaturation:
    """One quantized convolution: how many of its int16 pair sums can and do saturate."""

    node: str
    weight_pairs: int  # neighbouring int8 weight pairs, over all output channels
    risky_pairs: int  # pairs that saturate for some uint8 input: 255 * (w0 + w1) out of int16
    sums: int  # pair sums computed on the tiles (weight pairs x output pixels)
    saturated: int  # of those, the ones out of int16

    @property
    def share(self) -> float:
        return self.saturated / self.sums if self.sums else 0.0


class SaturationRisk(ValueError):
    """An int8 ONNX model whose weights can saturate onnxruntime's AVX2 int8 kernels."""


@dataclasses.dataclass(frozen=True)
class _QuantizedConv:
    node: str
    activation: str  # the uint8 tensor the Conv's input is dequantized from
    zero_point: int
    weights: np.ndarray  # int8 (Cout, Cin, kh, kw)
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    strides: tuple[int, int]
    dilations: tuple[int, int]


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _quantized_convs(model) -> list[_QuantizedConv]:
    """The Conv nodes that onnxruntime fuses into u8 x s8 QLinearConv: uint8 input, int8 weights."""
    constants = _initializers(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue  # a layer kept in float
        weights = constants.get(w_dq.input[0])
        zero_point = constants.get(x_dq.input[2]) if len(x_dq.input) > 2 else None
        if weights is None or weights.dtype != np.int8 or zero_point is None:
            continue
        if zero_point.dtype != np.uint8:
            continue  # int8 activations take onnxruntime's s8 x s8 path
        attrs = _attributes(node)
        if attrs.get("group", 1) != 1:
            raise SaturationRisk(f"{node.name}: grouped Conv is not emulated")
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        convs.append(
            _QuantizedConv(
                node=node.name,
                activation=x_dq.input[0],
                zero_point=int(zero_point),
                weights=weights,
                pads=_pads(node.name, attrs, weights.shape[2:], strides, dilations),
                strides=strides,
                dilations=dilations,
            )
        )
    return convs


def _pads(name: str, attrs: dict, kernel: tuple[int, ...], strides, dilations) -> tuple:
    """(top, left, bottom, right). A model exported for any input size says SAME_UPPER instead
    of numbers; at stride 1 that is (k - 1) x dilation, the odd one at the end; with the stride
    equal to the kernel (a patch stem) it is none on the sides the U-Net takes (multiples of
    the stride)."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "NOTSET":
        return tuple(attrs.get("pads", (0, 0, 0, 0)))
    if auto == "VALID":
        return (0, 0, 0, 0)
    if tuple(strides) == tuple(kernel) and set(dilations) == {1}:
        return (0, 0, 0, 0)
    if set(strides) != {1}:
        raise SaturationRisk(f"{name}: a strided {auto} Conv is not emulated")
    totals = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    begin, end = (small, large) if auto == "SAME_UPPER" else (large, small)
    return (*begin, *end)


def _activations(model, names: list[str], tiles: np.ndarray) -> dict[str, np.ndarray]:
    """The uint8 tensors, computed with every graph optimization off: Q/DQ then run as float
    ops, so the values do not depend on this CPU's integer kernels."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None) for name in names
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = session.get_inputs()[0].name
    runs = [session.run(names, {feed: tile[None].astype(np.float32)}) for tile in tiles]
    return {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}


def _pairs(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Cout, K/2) first and second weights of each neighbouring pair, K in (kh, kw, cin)
    order, zero-padded to an even K."""
    cout = weights.shape[0]
    flat = weights.transpose(0, 2, 3, 1).reshape(cout, -1).astype(np.int32)
    if flat.shape[1] % 2:
        flat = np.pad(flat, ((0, 0), (0, 1)))
    return flat[:, 0::2], flat[:, 1::2]


def _can_saturate(w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    top = UINT8_MAX * (np.maximum(w0, 0) + np.maximum(w1, 0))
    bottom = UINT8_MAX * (np.minimum(w0, 0) + np.minimum(w1, 0))
    return (top > INT16_MAX) | (bottom < INT16_MIN)


def _output_size(conv: _QuantizedConv, h: int, w: int) -> tuple[int, int]:
    top, left, bottom, right = conv.pads
    _, _, kh, kw = conv.weights.shape
    (sy, sx), (ly, lx) = conv.strides, conv.dilations
    return (
        (h + top + bottom - (kh - 1) * ly - 1) // sy + 1,
        (w + left + right - (kw - 1) * lx - 1) // sx + 1,
    )


def _tap_view(padded: np.ndarray, k: int, conv: _QuantizedConv, out_hw: tuple[int, int]):
    """The activations the reduction index k multiplies, for every output pixel: (N, Ho, Wo)."""
    _, cin, kh, kw = conv.weights.shape
    if k >= kh * kw * cin:  # the zero pad of an odd K
        return np.zeros((padded.shape[0], *out_hw), np.int32)
    tap, channel = divmod(k, cin)
    dy, dx = divmod(tap, kw)
    (sy, sx), (ly, lx) = conv.strides, conv.dilations
    y0, x0 = dy * ly, dx * lx
    return padded[:, channel, y0 : y0 + sy * out_hw[0] : sy, x0 : x0 + sx * out_hw[1] : sx]


def _saturated_sums(conv: _QuantizedConv, x: np.ndarray, risky: np.ndarray) -> int:
    """Counts the pair sums out of int16 for the risky pairs, over every output pixel."""
    top, left, bottom, right = conv.pads
    padded = np.pad(
        x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=conv.zero_point
    )
    out_hw = _output_size(conv, *x.shape[2:])
    w0, w1 = _pairs(conv.weights)
    saturated = 0
    for j in np.unique(np.nonzero(risky)[1]):
        a0 = _tap_view(padded, 2 * j, conv, out_hw).astype(np.int32).ravel()
        a1 = _tap_view(padded, 2 * j + 1, conv, out_hw).astype(np.int32).ravel()
        # The joint histogram of the activation pairs: every pixel once, whatever the channels.
        counts = np.bincount(a0 * 256 + a1, minlength=256 * 256)
        seen = np.nonzero(counts)[0]
        v0, v1 = seen // 256, seen % 256
        channels = np.nonzero(risky[:, j])[0]
        sums = v0[:, None] * w0[channels, j] + v1[:, None] * w1[channels, j]
        out = (sums > INT16_MAX) | (sums < INT16_MIN)
        saturated += int(counts[seen] @ out.sum(axis=1))
    return saturated


def u8s8_saturation(qdq_onnx: bytes, tiles: Sequence[np.ndarray]) -> list[ConvSaturation]:
    """Emulates onnxruntime's AVX2 u8 x s8 pair sums for every quantized Conv on these tiles.

    Args:
        qdq_onnx: a QDQ model (`optimize.onnx_int8.onnx_int8_qdq`).
        tiles: normalized (H, W, C) input tiles, as the runtime feeds them (a few are enough:
            the weights alone say whether a pair can saturate, the tiles how often it does).
    """
    import onnx

    model = onnx.load_from_string(qdq_onnx)
    convs = _quantized_convs(model)
    batch = np.stack([np.asarray(t, np.float32) for t in tiles])
    activations = _activations(model, [conv.activation for conv in convs], batch)
    report = []
    for conv in convs:
        x = activations[conv.activation]
        risky = _can_saturate(*_pairs(conv.weights))
        report.append(
            ConvSaturation(
                node=conv.node,
                weight_pairs=risky.size,
                risky_pairs=int(risky.sum()),
                sums=risky.size * len(x) * int(np.prod(_output_size(conv, *x.shape[2:]))),
                saturated=_saturated_sums(conv, x, risky) if risky.any() else 0,
            )
        )
    return report


def check_no_saturation(report: list[ConvSaturation]) -> None:
    """Refuses a model with any weight pair that can saturate, naming the worst layers."""
    risky = sorted((r for r in report if r.risky_pairs), key=lambda r: -r.share)
    if risky:
        worst = "; ".join(
            f"{r.node}: {r.risky_pairs} of {r.weight_pairs} weight pairs, "
            f"{r.share:.4%} of pair sums on the calibration tiles"
            for r in risky[:3]
        )
        raise SaturationRisk(
            f"int8 ONNX weights can saturate onnxruntime's u8 x s8 kernels on x86 CPUs without "
            f"VNNI in {len(risky)} of {len(report)} convolutions ({worst}): quantize the "
            "weights with reduce_range (7 bits)"
        )


def saturation_summary(report: list[ConvSaturation]) -> dict[str, float]:
    """The manifest's record: convolutions checked, weight pairs that can saturate, and the
    share of pair sums on the calibration tiles that did."""
    sums = sum(r.sums for r in report)
    return {
        "convolutions": len(report),
        "risky_weight_pairs": sum(r.risky_pairs for r in report),
        "saturated_share": sum(r.saturated for r in report) / sums if sums else 0.0,
    }
