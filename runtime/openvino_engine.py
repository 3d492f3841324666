"""OpenVINO: the bundle's ONNX files (fp32 and QDQ int8), read directly, no conversion step.

On an x86 CPU with AVX-512 VNNI OpenVINO ran the demo bundle's fp32 ONNX model at ~2.1x
onnxruntime and its QDQ int8 model ~1.15x faster than LiteRT int8 (issue 18); on an AVX2-only
CPU an earlier release was 1.5x slower than onnxruntime fp32. So it is one more engine the
automatic choice measures on the device, not a replacement.

A model that takes any size is compiled for the shape it is given (`reshape`, then
`compile_model`): OpenVINO's static-shape kernels are its fast path, and the runtime gives one
image size (or one tile size) many times. The last two shapes stay compiled: a tiled image
alternates between full batches and the smaller last one.

The `openvino-bf16` engine is the same with bf16 arithmetic (`INFERENCE_PRECISION_HINT`), on a
CPU that has it natively (AVX-512 BF16, AMX): the fp32 model 4.1x faster on an AMX Xeon, masks
99.9% the same. It is another computation than the one the bundle verified, so it is a
(file, engine) pair of its own, verified on the golden tiles like an int8 model.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ModelUnreadable, UserError

INSTALL = "pip install 'unet-edge[runtime-openvino]'"
# Shapes kept compiled at once: each holds its own buffers (~the memory line of one run).
_COMPILED_SHAPES = 2


# Imported by `openvino/__init__.py` inside `try: ... except ImportError`, for `convert_model`.
_CONVERTER = "openvino.tools.ovc"


def _openvino() -> Any:
    """`openvino`, imported without its model converter when this is the first import.

    The converter brings the telemetry client and with it urllib, email and ssl: 13 MB of the
    156 MB a fresh process peaked at segmenting a 512 px image in int8 (issue 18's budget is
    150). The runtime only reads ONNX files. A `None` in `sys.modules` makes that import fail
    and the package skip it; the entry goes again at once, so `import openvino.tools.ovc`
    works later (`openvino.convert_model` is then `openvino.tools.ovc.convert_model`).
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = _CONVERTER not in sys.modules
    if blocked:
        sys.modules[_CONVERTER] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if blocked:
            del sys.modules[_CONVERTER]
    return openvino


def _core() -> Any:
    if not importlib.util.find_spec("openvino"):
        raise UserError(f"OpenVINO is not installed: {INSTALL} (or use --backend litert or onnx)")
    return _openvino().Core()


def _read_onnx(path: Path) -> Any:
    """The ONNX file through OpenVINO's ONNX front end alone: `Core.read_model` tries every
    front end on a file that fails, and TensorFlow's writes its parse errors to fd 2."""
    ov = _openvino()
    frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
    return frontend.convert(frontend.load(str(path)))


def _last_line(error: Exception) -> str:
    """OpenVINO's C++ errors are a stack of 'Exception from file:line:'; the last line says."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def compile_config(num_threads: int | None, precision: str = "f32") -> dict[str, str]:
    """The settings every compile uses (the benchmarks compile with the same).

    The latency hint: one stream, every thread on one request (the runtime runs one image at a
    time). The inference precision is explicit: on a CPU with AMX or AVX-512 BF16 OpenVINO's
    default runs an fp32 model in bf16, which is another model than the one the bundle
    verified; `openvino-bf16` asks for it by name. Threads are not pinned to cores: a pinned
    worker cannot leave a core that another process (or the folder pipeline's decoding) keeps
    busy, and the layer waits for it; with one core kept busy by another process, unpinned ran
    the demo U-Net at 512 px in 218 ms against 236 (fp32) and 62 against 70 (int8), and the
    same on a quiet machine (Xeon, 2 cores).
    """
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
        "ENABLE_CPU_PINNING": "NO",
    }
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = str(num_threads)
    return config


def _check_native(core: Any, precision: str) -> None:
    """bf16 where the CPU plugin lists it; elsewhere OpenVINO would quietly run f32."""
    if precision != "f32" and precision.upper() not in core.get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"
    ):
        raise UserError(
            f"this CPU has no native {precision} (OpenVINO's CPU plugin does not list it): "
            "use --backend openvino"
        )


# Engine name (as in runtime.backends.ENGINES) -> OpenVINO's inference precision.
INFERENCE_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


class OpenVINOBackend:
    def __init__(
        self, path: Path, num_threads: int | None = None, engine: str = "openvino"
    ) -> None:
        self.name = engine
        precision = INFERENCE_PRECISION[engine]
        self._core = _core()
        _check_native(self._core, precision)
        try:
            self._model = _read_onnx(path)
        except Exception as error:  # OpenVINO raises its own untyped errors from its C++
            raise ModelUnreadable(f"OpenVINO cannot read {path} ({_last_line(error)})") from None
        self._config = compile_config(num_threads, precision)
        shape = self._model.input(0).get_partial_shape()
        self.batchable = shape[0].is_dynamic
        self.resizable = shape[1].is_dynamic or shape[2].is_dynamic
        self._dynamic = not shape.is_static
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        if not self._dynamic:  # a fixed-size model is compiled now, as the others load
            self._request(tuple(d.get_length() for d in shape))

    def _request(self, shape: tuple[int, ...]) -> Any:
        """An infer request compiled for `shape` (compiled at its first use)."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        if self._dynamic:  # the model keeps the last shape it was given: set each anew
            self._model.reshape({self._model.input(0): list(shape)})
        try:
            compiled = self._core.compile_model(self._model, "CPU", self._config)
        except Exception as error:
            raise ModelUnreadable(
                f"OpenVINO cannot compile the model for {shape} ({_last_line(error)})"
            ) from None
        self._compiled[shape] = compiled.create_infer_request()
        while len(self._compiled) > _COMPILED_SHAPES:
            self._compiled.popitem(last=False)
        return self._compiled[shape]

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        request = self._request(batch.shape)
        # The input is read in place; the output is copied out of the request's buffer, which
        # the next run overwrites.
        result = request.infer({0: batch}, share_inputs=True, share_outputs=False)
        return np.asarray(result[0], np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.batchable:
            return self._invoke(batch)
        return np.concatenate([self._invoke(tile[None]) for tile in batch])
