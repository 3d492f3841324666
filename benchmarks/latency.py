"""Latency: every variant's interpreter on what the runtime runs for one image (or a batch).

One process per thread count (TensorFlow fixes its thread pools when it starts), in which the
variants take turns run after run, so that machine noise falls on all of them alike. Timed is
the interpreter's work on the runs `Variant.plan` says the runtime makes for a size x size image
(one pass, or tiles): pre-processing, quantizing the input and stitching are not (they are the
same for all; `benchmarks.endtoend` times them).

Run as `python -m benchmarks.latency SPEC.json OUT.json` by `measure_latency`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.config import BenchmarkConfig
from benchmarks.environment import gemm_ceiling, run_worker
from benchmarks.int8_ceiling import f32_gemm_ceiling, int8_gemm_ceiling
from benchmarks.schema import Ceiling, Latency
from benchmarks.variants import Variant
from runtime.typed_json import from_json, to_json

Runner = Callable[[], None]


Tile = tuple[int, int]  # (height, width) of one interpreter input


def _inputs(
    variant: Variant, count: int, tile: Tile, dtype: np.dtype, quantization=(0.0, 0)
) -> np.ndarray:
    """Normalized-looking random tiles, quantized the way the model's input wants them."""
    shape = (count, *tile, variant.channels)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    scale, zero_point = quantization
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _litert_invoke(variant: Variant, threads: int, count: int, tile: Tile) -> Runner | None:
    """One invoke on `count` tiles, or None when the model cannot take that batch."""
    from runtime.backends import allocate, litert_interpreter_class

    interpreter = litert_interpreter_class()(model_path=variant.path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if count != 1 or variant.resizable:
        try:  # XNNPack resizes the batch of a fully convolutional model
            interpreter.resize_tensor_input(detail["index"], [count, *tile, variant.channels])
        except (ValueError, RuntimeError):
            return None
    try:
        allocate(interpreter)
    except RuntimeError:
        return None
    detail = interpreter.get_input_details()[0]
    x = _inputs(variant, count, tile, detail["dtype"], detail["quantization"])
    output = interpreter.get_output_details()[0]["index"]

    def run() -> None:
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        interpreter.get_tensor(output)

    return run


def _chunks(tiles: int, batch: int) -> list[int]:
    """Tiles per call: `batch` at a time, the rest last."""
    return [min(batch, tiles - i) for i in range(0, tiles, batch)]


def litert_runner(
    variant: Variant, threads: int, tiles: int, batch: int, tile: Tile
) -> tuple[Runner, bool]:
    """Runs `tiles` tiles, `batch` per invoke when the model takes a batch; (runner, batched)."""
    chunks = _chunks(tiles, batch)
    made = {n: _litert_invoke(variant, threads, n, tile) for n in set(chunks)}
    if any(m is None for m in made.values()):
        made, chunks = {1: _litert_invoke(variant, threads, 1, tile)}, [1] * tiles
    runs = [made[n] for n in chunks]

    def run_all() -> None:
        for run in runs:
            run()

    return run_all, max(chunks) > 1


def onnx_runner(
    variant: Variant, threads: int, tiles: int, batch: int, tile: Tile
) -> tuple[Runner, bool]:
    """`batch` tiles a run for a model that takes any size; one by one for a fixed batch 1."""
    from runtime.backends import onnx_session

    session = onnx_session(Path(variant.path), threads, ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = _chunks(tiles, batch) if variant.resizable else [1] * tiles
    inputs = {n: _inputs(variant, n, tile, np.float32) for n in set(chunks)}

    def run() -> None:
        for n in chunks:
            session.run(None, {name: inputs[n]})

    return run, max(chunks) > 1


def openvino_runner(
    variant: Variant, threads: int, tiles: int, batch: int, tile: Tile
) -> tuple[Runner, bool]:
    """The runtime's OpenVINO settings (`compile_config`), compiled for each chunk's shape
    before timing (the runtime compiles a shape at its first use and keeps it)."""
    import openvino as ov

    from runtime.openvino_engine import INFERENCE_PRECISION, compile_config

    core = ov.Core()
    chunks = _chunks(tiles, batch) if variant.resizable else [1] * tiles
    requests, inputs = {}, {}
    for n in set(chunks):
        model = core.read_model(variant.path)
        if variant.resizable:
            model.reshape({model.input(0): [n, *tile, variant.channels]})
        config = compile_config(threads, INFERENCE_PRECISION[variant.backend])
        requests[n] = core.compile_model(model, "CPU", config).create_infer_request()
        inputs[n] = _inputs(variant, n, tile, np.float32)
        requests[n].infer({0: inputs[n]})  # OpenVINO builds its kernels at the first run

    def run() -> None:
        for n in chunks:
            requests[n].infer({0: inputs[n]}, share_inputs=True)

    return run, max(chunks) > 1


def keras_runner(
    variant: Variant, threads: int, tiles: int, batch: int, tile: Tile
) -> tuple[Runner, bool]:
    """A compiled tf.function call (not model.predict, whose per-call set-up is not inference)."""
    from train.tfk import keras, tf

    model = keras.models.load_model(variant.path, compile=False)
    spec = tf.TensorSpec([None, None, None, variant.channels], tf.float32)
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    chunks = [tf.constant(_inputs(variant, n, tile, np.float32)) for n in _chunks(tiles, batch)]

    def run() -> None:
        for chunk in chunks:
            call(chunk).numpy()

    return run, batch > 1


# By engine (`Variant.backend`), and "keras" for the float Keras model.
RUNNERS: dict[str, Callable[[Variant, int, int, int, Tile], tuple[Runner, bool]]] = {
    "litert": litert_runner,
    "onnx": onnx_runner,
    "openvino": openvino_runner,
    "openvino-bf16": openvino_runner,
    "keras": keras_runner,
}


def runner_for(variant: Variant) -> Callable[[Variant, int, int, int, Tile], tuple[Runner, bool]]:
    return RUNNERS[variant.backend or "keras"]


def round_robin(
    runners: dict[str, Runner], warmup: int, min_runs: int, seconds: float, max_runs: int
) -> dict[str, list[float]]:
    """Seconds of each run, variants taking turns, until every one has `min_runs` and about
    `seconds` each has passed (or `max_runs`)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    start, budget = time.perf_counter(), seconds * len(runners)
    for done in range(1, max_runs + 1):
        for name, run in runners.items():
            begin = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - begin)
        if done >= min_runs and time.perf_counter() - start >= budget:
            break
    return times


def summarize(
    seconds: list[float], images: int, macs: int, ceiling: float, int8_ceiling: float | None = None
) -> dict[str, Any]:
    """`Latency`'s timing fields: percentiles in ms; throughput and GMAC/s from the median;
    `int8_ceiling` is given for an int8 model only."""
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    gmacs = macs * images / (p50 / 1e3) / 1e9
    return {
        "runs": len(ms),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(ms.mean()),
        "ms_per_image": p50 / images,
        "images_per_s": images / (p50 / 1e3),
        "gmacs_per_s": gmacs,
        "of_ceiling": gmacs / ceiling if ceiling else None,
        "of_int8_ceiling": gmacs / int8_ceiling if int8_ceiling else None,
    }


def _settings(config: BenchmarkConfig, threads: int) -> list[tuple[int, int]]:
    """(size, batch) pairs: batch 1 always, the throughput batch with the most threads."""
    batches = [1] + (
        [config.batch] if config.batch > 1 and threads == max(config.thread_counts) else []
    )
    return [(size, batch) for size in config.sizes for batch in batches]


def measure_threads(
    variants: list[Variant], config: BenchmarkConfig, threads: int
) -> tuple[list[Latency], Ceiling]:
    """Every variant at every setting for one thread count; returns entries and the ceilings."""
    int8, blas, engine = (
        int8_gemm_ceiling(threads),
        gemm_ceiling(threads),
        f32_gemm_ceiling(threads),
    )
    ceilings = Ceiling(
        threads,
        max(blas, engine or 0.0),
        int8.gmacs_per_s if int8 else None,
        int8.kernel if int8 else None,
        blas,
        engine,
    )
    entries = []
    settings = _settings(config, threads)
    for size, batch in tqdm(settings, desc=f"latency, {threads} thread(s)", file=sys.stderr):
        runners, batched = {}, {}
        for v in variants:
            plan = v.plan(size)
            runners[v.name], batched[v.name] = runner_for(v)(
                v, threads, plan.count * batch, batch if batch > 1 else plan.batch, plan.tile
            )
        times = round_robin(
            runners, config.warmup, config.min_runs, config.seconds, config.max_runs
        )
        for v in variants:
            int8_ceiling = ceilings.int8_gmacs_per_s if v.precision.startswith("int8") else None
            timings = summarize(
                times[v.name], batch, v.macs(size), ceilings.gmacs_per_s, int8_ceiling
            )
            entries.append(
                Latency(
                    variant=v.name,
                    size=size,
                    threads=threads,
                    batch=batch,
                    tiles=v.tiles(size),
                    batched=batched[v.name],
                    **timings,
                )
            )
        del runners
        gc.collect()
    return entries, ceilings


def measure_latency(
    variants: list[Variant], config: BenchmarkConfig
) -> tuple[list[Latency], list[Ceiling]]:
    """Latency entries and the GEMM ceiling for each thread count, a fresh process each."""
    entries: list[Latency] = []
    ceilings: list[Ceiling] = []
    for threads in config.thread_counts:
        spec = {
            "threads": threads,
            "config": config.to_dict(),
            "variants": [dataclasses.asdict(v) for v in variants],
        }
        result = run_worker("benchmarks.latency", spec)
        entries += from_json(tuple[Latency, ...], result["entries"], "latency")
        ceilings.append(from_json(Ceiling, result["ceiling"], "ceiling"))
    return entries, ceilings


def _worker(spec_path: Path, out_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    threads = spec["threads"]
    variants = [Variant(**v) for v in spec["variants"]]
    if any(v.format == "keras" for v in variants):
        from train.tfk import tf  # before any TensorFlow op: its thread pools are fixed then

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    entries, ceiling = measure_threads(variants, BenchmarkConfig.from_dict(spec["config"]), threads)
    out_path.write_text(json.dumps({"entries": to_json(entries), "ceiling": to_json(ceiling)}))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
