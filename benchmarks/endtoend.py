"""End to end: the runtime per image beside the interpreter alone, memory per size, a folder.

- Per size: `Segmenter.predict` on one image (pre-processing, tiling, inference, stitching and
  thresholding; no file decoding) and the interpreter alone on the same inputs (the plan's
  tiles), the two taking turns run after run.
- Per size: the peak RSS of a fresh process that segments one image (`benchmarks.coldstart`).
- A folder of PNGs through `runtime.predict`'s pipeline (decoding, pre-processing and writing
  overlapped with inference): images per second, against the interpreter alone.

The main bundle's deployable models only (TFLite and ONNX, fp32 and int8). The timings run in
one fresh process (`python -m benchmarks.endtoend SPEC.json OUT.json`), at the most threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.config import BenchmarkConfig
from benchmarks.environment import run_worker, usable_cores
from benchmarks.load import LoadProbe
from benchmarks.schema import (
    MAIN,
    EndToEnd,
    EndToEndSize,
    FolderRun,
    ProcessMemory,
)
from benchmarks.targets import RSS_LIMIT_MB, RSS_SIZE
from benchmarks.variants import Variant
from runtime.memory import MEMORY_FIRST_MB
from runtime.typed_json import from_json, to_json

log = logging.getLogger(__name__)

# The models a device would run, on each engine.
KEYS = ("fp32", "int8", "fp32-onnx", "int8-onnx", "fp32-openvino", "int8-openvino")


def end_to_end_variants(variants: list[Variant]) -> list[Variant]:
    return [v for v in variants if v.bundle == MAIN and v.key in KEYS]


def random_image(size: int, channels: int) -> np.ndarray:
    """Random pixels: an interpreter's time does not depend on what the image shows."""
    shape = (size, size) if channels == 1 else (size, size, 3)
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _segmenter(variant: Variant, threads: int):
    from runtime.segmenter import Segmenter

    return Segmenter.from_bundle(
        variant.bundle_path,
        variant.precision,
        variant.backend,
        threads,
        max_memory_mb=variant.max_memory_mb,
    )


def _per_size(
    variant: Variant, size: int, threads: int, config: BenchmarkConfig, smallest: int
) -> EndToEndSize:
    """p50 of the runtime and of the interpreter alone, one image of `size`, taking turns with
    the runtime on a `smallest` px image: the per-pixel claim compares two sizes timed side by
    side (LiteRT int8 at 512 px, timed a minute after its 256 px runs on a quiet Xeon, once
    came out 1.32x four 256 px images, 0.83-0.88x in the runs around it)."""
    from benchmarks.latency import round_robin, runner_for

    plan = variant.plan(size)
    segmenter = _segmenter(variant, threads)
    image, small = random_image(size, variant.channels), random_image(smallest, variant.channels)
    interpreter, _ = runner_for(variant)(variant, threads, plan.count, plan.batch, plan.tile)
    runners = {"runtime": lambda: segmenter.predict(image), "interpreter": interpreter}
    if size != smallest:
        runners["smallest"] = lambda: segmenter.predict(small)
    probe = LoadProbe()
    times = round_robin(
        runners,
        warmup=1,
        min_runs=3,  # a 2048 px fp32 image takes seconds a run
        seconds=config.seconds,
        max_runs=config.max_runs,
    )
    return EndToEndSize(
        variant=variant.name,
        size=size,
        threads=threads,
        runs=len(times["runtime"]),
        runtime_ms=float(np.median(times["runtime"])) * 1e3,
        interpreter_ms=float(np.median(times["interpreter"])) * 1e3,
        **dataclasses.asdict(plan),
        other_cores=probe.other_cores(),
        smallest_runtime_ms=float(np.median(times["smallest"])) * 1e3
        if "smallest" in times
        else None,
    )


# Passes over the folder, each beside a run of the interpreter alone over as many images, the
# medians kept: a folder pass and an interpreter timing taken seconds apart drifted apart with
# the CPU's clock (shares of 0.76 to 1.15 for one model on a quiet Xeon, 3 passes each).
FOLDER_PASSES = 5


def _folder(variant: Variant, size: int, count: int, threads: int) -> FolderRun:
    """Images per second of `runtime.predict`'s pipeline over `count` PNGs of `size` px:
    synthetic EM slices, whose masks have the structure real ones have (a mask of noise is
    the slowest PNG to encode: 5 ms at 512 px, several times a real one's)."""
    from PIL import Image

    from benchmarks.latency import round_robin, runner_for
    from runtime.predict import segment_files
    from train.data.synthetic import generate_em

    segmenter = _segmenter(variant, threads)
    plan = variant.plan(size)
    interpreter, _ = runner_for(variant)(variant, threads, plan.count, plan.batch, plan.tile)
    with tempfile.TemporaryDirectory() as scratch:
        folder, out = Path(scratch, "in"), Path(scratch, "out")
        folder.mkdir()
        out.mkdir()
        paths = []
        for i, slice_ in enumerate(generate_em(count, size, seed=1)[0]):
            paths.append(folder / f"{i:03d}.png")
            image = slice_ if variant.channels == 1 else np.repeat(slice_[..., None], 3, -1)
            Image.fromarray(image).save(paths[-1])
        segmenter.predict(random_image(size, variant.channels))  # the interpreter sized and warm
        pipeline_ms = _pipeline_ms(segmenter, paths, out)

        def folder_pass() -> None:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                segment_files(segmenter, paths, out)

        def interpreter_alone() -> None:
            for _ in paths:
                interpreter()

        probe = LoadProbe()
        times = round_robin(
            {"folder": folder_pass, "interpreter": interpreter_alone},
            warmup=0,
            min_runs=FOLDER_PASSES,
            seconds=0,
            max_runs=FOLDER_PASSES,
        )
        other_cores = probe.other_cores()
    return FolderRun(
        variant.name,
        size,
        count,
        count / float(np.median(times["folder"])),
        pipeline_ms,
        usable_cores(),
        other_cores,
        float(np.median(times["interpreter"])) * 1e3 / count,
    )


def _pipeline_ms(segmenter, paths: list[Path], out: Path) -> float:
    """Median ms of the pipeline's own stages on one file (read and pre-process, then write
    the mask), one after the other: what the interpreter's runs share the cores with."""
    from runtime.predict import read_file, write_masks

    times = []
    for path in paths:
        start = time.perf_counter()
        read = read_file(segmenter, path)
        read_s = time.perf_counter() - start
        results = [segmenter.predict_prepared(p) for p in read.prepared]
        start = time.perf_counter()
        write_masks(read, results, segmenter.manifest.classes, out, tint=False)
        times.append(read_s + time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _worker(spec_path: Path, out_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    config = BenchmarkConfig.from_dict(spec["config"])
    variants = [Variant(**v) for v in spec["variants"]]
    threads = spec["threads"]
    smallest = min(config.end_to_end_sizes)
    sizes = [
        _per_size(v, size, threads, config, smallest)
        for size in config.end_to_end_sizes
        for v in variants
    ]
    folder = (
        [_folder(v, config.folder_size, config.folder_images, threads) for v in variants]
        if config.folder_images
        else []
    )
    out_path.write_text(json.dumps(to_json(EndToEnd(tuple(sizes), tuple(folder)))))


def measure_end_to_end(variants: list[Variant], config: BenchmarkConfig, threads: int) -> EndToEnd:
    """The timings (a fresh process) and each size's cold-start memory (a process each)."""
    chosen = end_to_end_variants(variants)
    if not chosen or not config.end_to_end_sizes:
        return EndToEnd()
    spec = {
        "threads": threads,
        "config": config.to_dict(),
        "variants": [dataclasses.asdict(v) for v in chosen],
    }
    timed = from_json(EndToEnd, run_worker("benchmarks.endtoend", spec), "end_to_end")
    memory = [_fresh_process(v, size) for size in config.end_to_end_sizes for v in chosen]
    # An int8 model that needs more than RSS_LIMIT_MB for RSS_SIZE px in one pass: again
    # with a budget that tiles it, to show what staying within the limit costs.
    over = {
        e.variant
        for e in memory
        if e.size == RSS_SIZE and "int8" in e.variant and (e.peak_rss_mb or 0) > RSS_LIMIT_MB
    }
    memory += [
        _fresh_process(dataclasses.replace(v, max_memory_mb=MEMORY_FIRST_MB), RSS_SIZE)
        for v in chosen
        if v.name in over
    ]
    return dataclasses.replace(timed, memory=tuple(memory))


def _fresh_process(variant: Variant, size: int) -> ProcessMemory:
    """Peak RSS and phases of a fresh process segmenting one image, with the runtime's plan."""
    from benchmarks.coldstart import measure_cold_start

    log.info("memory: %s, %d px", variant.name, size)
    cold = dataclasses.asdict(measure_cold_start(variant, size))
    plan = dataclasses.asdict(variant.plan(size))
    return ProcessMemory(**cold, **plan, max_memory_mb=variant.max_memory_mb)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
