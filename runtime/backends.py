"""Engines: LiteRT for .tflite; ONNX Runtime and OpenVINO for .onnx. Each takes float input,
gives float.

What is supported is data: `ENGINES` names each engine with the model formats it reads, the
packages that provide it and its loader, so a (model format, engine) pair is a row, and one .onnx
file runs on two engines (DESIGN: verification and the automatic choice are per file and engine).
Integer models get their input quantized and their output dequantized with the scale and zero
point the model file itself declares.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.cpu import cpu_flags
from runtime.errors import ModelUnreadable, UserError
from runtime.log import native_lines_kept_back

log = logging.getLogger(__name__)
# LiteRT's C++ prints this once per process, at the first allocation, past any Python logging.
XNNPACK_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate"


class Backend(Protocol):
    name: str
    batchable: bool  # the model takes any batch: several tiles run as one
    resizable: bool  # the model takes any height and width (a 'same' U-Net)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 normalized input -> (N, h, w, K) float32 probabilities."""
        ...


def _quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    real = q.astype(np.float32)  # one float copy, then in place
    real -= zero_point
    real *= np.float32(scale)
    return real


def litert_interpreter_class():
    """ai_edge_litert (LiteRT), or the older tflite_runtime where only that is installed."""
    if importlib.util.find_spec("ai_edge_litert"):
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    if importlib.util.find_spec("tflite_runtime"):
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    raise UserError("LiteRT is not installed: pip install ai-edge-litert (or use --backend onnx)")


def _not_the_xnnpack_notice(line: str) -> bool:
    """The notice becomes a debug message (-v shows it); any other line is shown."""
    if line.startswith(XNNPACK_NOTICE):
        log.debug(line.strip())
        return False
    return True


def allocate(interpreter) -> None:
    """`allocate_tensors`, with LiteRT's XNNPACK notice turned into a debug message."""
    with native_lines_kept_back(_not_the_xnnpack_notice):
        interpreter.allocate_tensors()


class LiteRTBackend:
    name = "litert"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        interpreter_class = litert_interpreter_class()
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
            allocate(self._interpreter)
        except (ValueError, RuntimeError) as error:
            raise ModelUnreadable(
                f"LiteRT cannot load {path} ({error}): re-export the bundle"
            ) from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        # -1 where the model takes any size: the batch, and height and width of a 'same' U-Net.
        signature = self._input["shape_signature"]
        self.batchable = bool(signature[0] < 0)
        self.resizable = bool((signature[1:3] < 0).any())

    @property
    def interpreter(self):
        return self._interpreter

    def _fit(self, shape: tuple[int, ...]) -> None:
        """Resizes the input to `shape` when it is not that already (plans memory anew)."""
        if tuple(self._input["shape"]) == shape:
            return
        self._interpreter.resize_tensor_input(self._input["index"], list(shape), strict=True)
        allocate(self._interpreter)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self._input["quantization"]
            batch = _quantize(batch, scale, zero_point, dtype)
        if self.batchable or self.resizable:
            self._fit(batch.shape)
        self._interpreter.set_tensor(self._input["index"], batch.astype(dtype, copy=False))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        if np.issubdtype(out.dtype, np.integer):
            return _dequantize(out, *self._output["quantization"])
        return out.astype(np.float32, copy=False)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.batchable:
            return self._invoke(batch)  # the whole batch in one run
        # Bundles made before run-time sizes have a batch of 1: one tile after another.
        return np.concatenate([self._invoke(tile[None]) for tile in batch])


# onnxruntime's WeightBiasQuantization pass (in 1.31) re-quantizes, per tensor, the float weights
# of any Conv whose input comes from a DequantizeLinear. A QDQ model whose convolutions were left
# in float on purpose (optimize.quantize --keep-float) would lose exactly the precision it kept: on
# a test model whose float layer cannot take int8, the masks went from 99.5% agreement with float
# to empty ones. In a fully quantized model every Conv has int8 weights and bias: nothing to do.
ONNX_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def onnx_session(path: Path, num_threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime session as the runtime runs one (the benchmarks use the same settings).

    Memory patterns are off (below). Spinning is off: onnxruntime's idle threads otherwise keep
    a core busy for milliseconds after each run, which slowed whatever ran next on a 2-core CPU
    by half (a LiteRT int8 model after an ONNX one: 70 ms instead of 41) and two sessions'
    spinning threads fought each other (ONNX int8 96 ms instead of 61).
    """
    import onnxruntime as ort

    # Errors only: tf2onnx's models draw deprecation warnings at every run otherwise.
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Memory patterns plan one block per input shape; with sizes set at run time that held
    # about twice the memory at the same speed (fp32, 1024 px: 988 MB against 552).
    options.enable_mem_pattern = False
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path),
        options,
        # The CPU provider always; accelerators when this onnxruntime build has them.
        providers=providers or ort.get_available_providers(),
        disabled_optimizers=ONNX_DISABLED_OPTIMIZERS,
    )


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        if not importlib.util.find_spec("onnxruntime"):
            raise UserError(
                "onnxruntime is not installed: pip install onnxruntime (or use --backend litert)"
            )
        try:
            self._session = onnx_session(path, num_threads)
        except Exception as error:  # onnxruntime raises its own untyped exceptions
            raise ModelUnreadable(
                f"onnxruntime cannot load {path} ({error}): re-export the bundle"
            ) from None
        model_input = self._session.get_inputs()[0]
        self._input = model_input.name
        # Symbolic (named) dimensions where the model takes any size.
        self.batchable = not isinstance(model_input.shape[0], int)
        self.resizable = not all(isinstance(d, int) for d in model_input.shape[1:3])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch.astype(np.float32, copy=False)})[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.batchable:
            out = self._invoke(batch)
        else:
            out = np.concatenate([self._invoke(tile[None]) for tile in batch])
        return out.astype(np.float32, copy=False)


def _openvino(path: Path, num_threads: int | None = None, engine: str = "openvino") -> Backend:
    from runtime.openvino_engine import OpenVINOBackend  # imports openvino only when asked

    return OpenVINOBackend(path, num_threads, engine)


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    formats: tuple[str, ...]  # model file formats it reads
    modules: tuple[str, ...]  # importable when installed (any one of them)
    distributions: tuple[str, ...]  # pip distributions whose versions key the device caches
    load: Callable[[Path, int | None], Backend]
    # Offered only on a CPU with one of these flags (archspec's names); empty: on any CPU.
    cpu_flags: frozenset[str] = frozenset()
    # The bundle precisions it runs; empty: all.
    precisions: frozenset[str] = frozenset()

    def runs(self, fmt: str, precision: str | None = None) -> bool:
        """Whether it runs a model file of this format (and bundle precision, when given)."""
        return fmt in self.formats and (
            precision is None or not self.precisions or precision in self.precisions
        )

    @property
    def installed(self) -> bool:
        return not self.missing()

    def missing(self) -> str:
        """Why it is not offered here: not installed, or a CPU without what it needs ('' when
        it is offered)."""
        if not any(importlib.util.find_spec(m) for m in self.modules):
            return f"{self.name} is not installed"
        if self.cpu_flags and not self.cpu_flags & cpu_flags():
            return f"{self.name} needs a CPU with {' or '.join(sorted(self.cpu_flags))}"
        return ""


# In order of preference for a named precision with backend="auto" (LiteRT, then onnxruntime):
# the automatic choice (precision="auto") measures every pair instead.
ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "litert",
            ("tflite",),
            ("ai_edge_litert", "tflite_runtime"),
            ("ai-edge-litert", "tflite-runtime"),
            LiteRTBackend,
        ),
        Engine("onnx", ("onnx",), ("onnxruntime",), ("onnxruntime",), OnnxBackend),
        Engine("openvino", ("onnx",), ("openvino",), ("openvino",), _openvino),
        # bf16 arithmetic where the CPU has it natively, on the float model (the int8 model
        # gained nothing from it: 60 ms against 54 at 512 px, AMX Xeon): a verified pair.
        Engine(
            "openvino-bf16",
            ("onnx",),
            ("openvino",),
            ("openvino",),
            functools.partial(_openvino, engine="openvino-bf16"),
            frozenset({"avx512_bf16", "amx_bf16"}),
            frozenset({"fp32"}),
        ),
    )
}
# (format, loader) by engine: its first format; what callers that predate ENGINES read.
BACKENDS: dict[str, tuple[str, Callable[[Path, int | None], Backend]]] = {
    name: (e.formats[0], e.load) for name, e in ENGINES.items()
}


def backend_for(fmt: str) -> str:
    """The first engine that reads a model format (LiteRT for "tflite", onnxruntime for
    "onnx"): the build side's parity gate measures each file there."""
    return next(name for name, e in ENGINES.items() if fmt in e.formats)


def engines_for(fmt: str, names: list[str], precision: str | None = None) -> list[str]:
    """Those of `names` that run a model format (and bundle precision), in `names`' order."""
    return [name for name in names if ENGINES[name].runs(fmt, precision)]


def installed_backends() -> list[str]:
    return [name for name, e in ENGINES.items() if e.installed]


def load(name: str, path: Path, num_threads: int | None = None) -> Backend:
    """Engine `name` on a model file (a UserError when the engine is missing or cannot read it)."""
    return ENGINES[name].load(path, num_threads)


def check_runs(name: str, precision: str) -> None:
    """A UserError when engine `name` does not run the bundle's `precision` models."""
    engine = ENGINES[name]
    if engine.precisions and precision not in engine.precisions:
        runs = " or ".join(sorted(engine.precisions))
        raise UserError(
            f"{name} runs the bundle's {runs} model, not {precision}: "
            f"use --precision {runs}, or another --backend"
        )


def check_backend(name: str) -> str:
    if name != "auto" and name not in ENGINES:
        raise UserError(f"unknown backend {name!r}: choose auto, {', '.join(ENGINES)}")
    return name
