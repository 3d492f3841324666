"""A per-layer latency table of a U-Net, measured on this machine through one int8 engine.

Filter pruning's MAC count says little about milliseconds: int8 kernels pad channels to their
vector width, small layers cost their call overhead, and engines differ. So each prunable
convolution is timed alone, as an int8 model of that one layer at its real input shape for the
stated image size, at a few keep ratios (input and output channels both scaled, as uniform
filter pruning scales them), through the engine that will run the model. The whole model is
timed at ratio 1.0 and at the table's lowest ratio; what the layers do not account for there
(pooling, concatenation, the head, memory traffic between layers) is the remainder. It shrinks
with the channels too (`small` at 512 px, LiteRT int8: 23 ms of 129 at 1.0, 15 at 0.125), so it
is interpolated between the two, not held constant. A thin model's time is predicted as the sum
of its layers at its ratio, interpolated, plus the remainder at that ratio
(`LatencyTable.predict`).

Models are exported by the bundle's own converters (`optimize.converters`, `optimize.onnx_int8`)
and timed by the runtime's own loop (`runtime.choice.time_per_tile`: single runs, models taking
turns, the median), calling only the engine: quantizing the input happens once, before timing.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from optimize.configs import int8_engines
from optimize.filter_prune import choose_filters, filter_scores
from runtime.backends import ENGINES, installed_backends, litert_interpreter_class, load
from runtime.choice import time_per_tile
from runtime.cpu import cpu_info
from runtime.errors import UserError
from runtime.typed_json import JsonRecord
from train.config import ModelConfig
from train.model import build_unet, is_valid_input_size
from train.tfk import keras

PRECISION = "int8"  # what a bundle ships and the runtime runs by default
# The keep ratios a layer is timed at; below the floor of a model (`keep_ratio_floor`) left out.
TABLE_RATIOS = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125)
MIN_KEEP_RATIO = 0.125  # below this a U-Net has lost most of what it learned
MIN_FILTERS = 2  # no layer is pruned to fewer: one filter is a layer that no longer segments

# Whole models are timed over this many rounds of the runtime's loop (each at least 5 runs):
# a step's measured time decides when pruning stops, and one round of the unpruned `small` at
# 512 px gave 93, 111 and 129 ms in three processes on 2 cores beside a training job.
WHOLE_ROUNDS = 3

Runner = Callable[[], None]


def engine_for_int8(engine: str) -> str:
    """The engine that times int8 models: as named, or for "auto" the runtime's choice for a
    named precision (the first installed engine that runs it: LiteRT, then onnxruntime).

    Raises:
        UserError: an unknown engine, one that does not run int8, or one not installed here.
    """
    runs_int8 = int8_engines()
    if engine == "auto":
        installed = [name for name in installed_backends() if name in runs_int8]
        if not installed:
            raise UserError(
                "no installed engine runs int8 models: pip install ai-edge-litert or onnxruntime"
            )
        return installed[0]
    if engine not in runs_int8:
        raise UserError(f"unknown int8 engine {engine!r}: choose auto, {', '.join(runs_int8)}")
    missing = ENGINES[engine].missing()
    if missing:
        raise UserError(f"engine {engine} cannot run here ({missing}): choose another --engine")
    return engine


@dataclasses.dataclass(frozen=True)
class LatencyTable(JsonRecord):
    """ms of each prunable layer alone at each keep ratio, and of the whole model at two."""

    JSON_NAME = "latency_table"

    cpu: Mapping[str, str]  # runtime.cpu.cpu_info(): what the device cache keys by too
    engine: str
    precision: str
    threads: int
    size: int  # the image side, one pass
    ratios: tuple[float, ...]  # descending, 1.0 first
    layers: Mapping[str, tuple[float, ...]]  # layer -> median ms at each of `ratios`
    whole_ratios: tuple[float, ...]  # the whole model timed at 1.0 and at the lowest ratio
    whole_ms: tuple[float, ...]
    remainder_ms: tuple[float, ...]  # whole_ms less its layers at the same ratios

    @property
    def unpruned_ms(self) -> float:
        return self.whole_ms[0]

    def layer_ms(self, name: str, ratio: float) -> float:
        """Linear between the measured ratios; the nearest measured one outside them."""
        return _interpolated(ratio, self.ratios, self.layers[name])

    def predict(self, ratio: float) -> float:
        """ms of the model with every prunable layer at `ratio`: its layers plus the rest."""
        layers = sum(self.layer_ms(name, ratio) for name in self.layers)
        return layers + _interpolated(ratio, self.whole_ratios, self.remainder_ms)


def _interpolated(ratio: float, ratios: tuple[float, ...], values: tuple[float, ...]) -> float:
    """np.interp over descending ratios."""
    return float(np.interp(ratio, ratios[::-1], values[::-1]))


def widths_at(model: keras.Model, ratio: float) -> dict[str, int]:
    """Filters per prunable layer after uniform filter pruning at `ratio` (filter_prune's)."""
    scores = filter_scores(model)
    return {name: len(kept) for name, kept in choose_filters(scores, ratio).items()}


def keep_ratio_floor(model: keras.Model) -> float:
    """The smallest global keep ratio to prune to: MIN_KEEP_RATIO, or more where the narrowest
    layer would keep fewer than MIN_FILTERS (counts are rounded half up)."""
    narrowest = min(widths_at(model, 1.0).values())
    return max(MIN_KEEP_RATIO, (MIN_FILTERS - 0.5) / narrowest)


def table_ratios(floor: float) -> tuple[float, ...]:
    return tuple(sorted({r for r in TABLE_RATIOS if r >= floor} | {floor}, reverse=True))


def checked_size(model: keras.Model, config: ModelConfig, size: int) -> int:
    """Raises UserError unless the model runs one `size` x `size` image in one pass."""
    fixed = model.input_shape[1]
    if fixed is not None and fixed != size:
        raise UserError(
            f"--latency-size {size} does not fit model {model.name}, which takes {fixed} px "
            f"tiles: pass --latency-size {fixed}"
        )
    if fixed is None and not is_valid_input_size(config, size):
        multiple = config.size_multiple
        raise UserError(
            f"--latency-size {size} is not a multiple of {multiple}: e.g. {max(1, round(size / multiple)) * multiple}"
        )
    return size


def _single_layer(layer: keras.layers.Layer) -> keras.Model:
    """`layer` alone at its input shape, with the ReLU that follows a conv_a/conv_b (the
    converters fuse it and the batch norm into the convolution, so they cost nothing apart)."""
    config = {**layer.get_config(), "name": layer.name, "dtype": "float32"}
    inputs = keras.Input(layer.input_shape[1:], batch_size=1)
    x = type(layer).from_config(config)(inputs)
    if not layer.name.endswith("_upconv"):
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name=layer.name)


def layer_models(
    model: keras.Model, config: ModelConfig, size: int, ratio: float
) -> dict[str, keras.Model]:
    """Each prunable layer of `model` thinned to `ratio`, alone, at its input shape for a
    `size` px image (built, not trained: int8 kernels take as long whatever the weights)."""
    widths = widths_at(model, ratio)
    thin = build_unet(config, model.input_shape[1] or size, name="thin", widths=widths)
    return {name: _single_layer(thin.get_layer(name)) for name in widths}


def uniform_thin(model: keras.Model, config: ModelConfig, ratio: float) -> keras.Model:
    """`model` with every prunable layer at `ratio`, fresh weights: what a step will time."""
    if ratio == 1.0:
        return model
    return build_unet(config, model.input_shape[1], name="thin", widths=widths_at(model, ratio))


@dataclasses.dataclass
class _Invoker:
    """What `time_per_tile` times: one run of the engine on an input set beforehand."""

    invoke: Runner
    name: str = "invoker"
    batchable: bool = False
    resizable: bool = False

    def run(self, _batch: np.ndarray) -> None:
        self.invoke()


@dataclasses.dataclass(frozen=True)
class Timer:
    """Exports Keras models to int8 for one engine and times them on a `size` px image."""

    engine: str
    threads: int
    size: int

    def _shape(self, model: keras.Model) -> tuple[int, ...]:
        _, height, width, channels = model.input_shape
        return (1, height or self.size, width or self.size, channels)

    def _export(self, model: keras.Model, stem: Path) -> Path:
        """The int8 model file the engine reads, calibrated on one random tile (timing does
        not depend on the quantization ranges). One file per model: LiteRT maps its file, and
        rewriting a mapped file under a live interpreter crashed it (SIGBUS)."""
        shape = self._shape(model)
        tile = np.random.default_rng(0).standard_normal(shape[1:], dtype=np.float32)
        if "tflite" in ENGINES[self.engine].formats:
            from optimize.converters import tflite_int8

            path, content = stem.with_suffix(".tflite"), tflite_int8(model, shape[1], [tile])
        else:
            from optimize.converters import onnx_fp32
            from optimize.onnx_int8 import onnx_int8_qdq

            content = onnx_int8_qdq(onnx_fp32(model, shape[1]), [tile])
            path = stem.with_suffix(".onnx")
        path.write_bytes(content)
        return path

    def _invoker(self, path: Path, shape: tuple[int, ...]) -> _Invoker:
        x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
        if path.suffix != ".tflite":
            backend = load(self.engine, path, self.threads)  # float in: Q/DQ is in the graph
            return _Invoker(lambda: backend.run(x))
        from runtime.backends import allocate

        interpreter = litert_interpreter_class()(model_path=str(path), num_threads=self.threads)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(shape), strict=False)
        allocate(interpreter)
        detail = interpreter.get_input_details()[0]
        scale, zero_point = detail["quantization"]
        interpreter.set_tensor(
            index, np.clip(np.rint(x / scale + zero_point), -128, 127).astype(np.int8)
        )
        return _Invoker(interpreter.invoke)

    def time(self, models: Mapping[str, keras.Model], rounds: int = 1) -> dict[str, float]:
        """Median ms of one run of each model, the models taking turns; with several rounds
        of the runtime's loop, the median of their medians."""
        with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
            invokers = {
                key: self._invoker(self._export(model, Path(tmp) / str(i)), self._shape(model))
                for i, (key, model) in enumerate(models.items())
            }
            timed = [time_per_tile(invokers, np.zeros(1, np.float32)) for _ in range(rounds)]
            return {key: statistics.median(t[key] for t in timed) for key in models}

    def time_whole(self, model: keras.Model) -> float:
        return self.time({"model": model}, WHOLE_ROUNDS)["model"]


def measure_table(
    model: keras.Model, config: ModelConfig, timer: Timer, ratios: tuple[float, ...]
) -> LatencyTable:
    """Times every prunable layer of `model` at each of `ratios` (descending from 1.0; each
    layer's ratios taking turns, so drift falls on all of them alike) and the whole model at
    the first and the last ratio, also taking turns."""
    by_ratio = {ratio: layer_models(model, config, timer.size, ratio) for ratio in ratios}
    layers = {}
    for name in by_ratio[ratios[0]]:
        timed = timer.time({str(r): by_ratio[r][name] for r in ratios})
        layers[name] = tuple(timed[str(r)] for r in ratios)
    ends = (ratios[0], ratios[-1])
    wholes = {str(r): uniform_thin(model, config, r) for r in ends}
    timed = timer.time(wholes, WHOLE_ROUNDS)
    whole = tuple(timed[str(r)] for r in ends)
    at_ends = (0, len(ratios) - 1)
    return LatencyTable(
        cpu=cpu_info(),
        engine=timer.engine,
        precision=PRECISION,
        threads=timer.threads,
        size=timer.size,
        ratios=ratios,
        layers=layers,
        whole_ratios=ends,
        whole_ms=whole,
        remainder_ms=tuple(
            ms - sum(times[i] for times in layers.values())
            for ms, i in zip(whole, at_ends, strict=True)
        ),
    )
