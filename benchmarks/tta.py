"""Test-time augmentation's cost: each runtime model's `Segmenter.predict` on one image of each
benchmark size with tta "none", "flips" and "d4" (`runtime.tta`), the three taking turns run
after run (`benchmarks.latency.round_robin`), so that machine noise falls on all alike; p50.

What it gains is measured with the accuracy (`benchmarks.accuracy.measure_accuracy`, on the
held-out images). Timed is the runtime end to end, not the interpreter alone: flipping the
views, mapping them back and averaging are part of the cost. Fewer runs than the latency
tables (`ROUNDS` at least, about `BenchmarkConfig.seconds` for the three together), since a
d4 image costs 8 of the others. The timings run in one fresh process
(`python -m benchmarks.tta SPEC.json OUT.json`), at the most threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.config import BenchmarkConfig
from benchmarks.endtoend import random_image
from benchmarks.environment import run_worker
from benchmarks.schema import TtaLatency
from benchmarks.variants import Variant
from runtime.tta import TTA_KINDS
from runtime.typed_json import from_json, to_json

log = logging.getLogger(__name__)

ROUNDS = 3  # timed turns of each kind at least: a median, and a d4 run is 8 passes


def tta_variants(variants: list[Variant]) -> list[Variant]:
    """The models the runtime runs (the float Keras model has no TTA in the runtime)."""
    return [v for v in variants if v.format != "keras"]


def _per_size(
    variant: Variant, size: int, threads: int, config: BenchmarkConfig
) -> list[TtaLatency]:
    from benchmarks.latency import round_robin
    from runtime.segmenter import Segmenter

    image = random_image(size, variant.channels)
    runners = {}
    for kind in TTA_KINDS:
        segmenter = Segmenter.from_bundle(
            variant.bundle_path,
            variant.precision,
            variant.backend,
            threads,
            max_memory_mb=variant.max_memory_mb,
            tta=kind,
        )
        runners[kind] = lambda s=segmenter: s.predict(image)
    times = round_robin(
        runners,
        warmup=1,  # sizes the interpreter for the views' batch
        min_runs=ROUNDS,
        seconds=config.seconds / len(TTA_KINDS),  # round_robin's budget is per runner
        max_runs=config.max_runs,
    )
    return [
        TtaLatency(variant.name, size, threads, kind, float(np.median(t)) * 1e3, len(t))
        for kind, t in times.items()
    ]


def _worker(spec_path: Path, out_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    config = BenchmarkConfig.from_dict(spec["config"])
    threads = spec["threads"]
    variants = [Variant(**raw) for raw in spec["variants"]]
    settings = [(size, v) for size in config.sizes for v in variants]
    entries = []
    for size, v in tqdm(settings, desc="test-time augmentation", file=sys.stderr):
        entries += _per_size(v, size, threads, config)
    out_path.write_text(json.dumps({"entries": to_json(entries)}))


def measure_tta_latency(
    variants: list[Variant], config: BenchmarkConfig, threads: int
) -> tuple[TtaLatency, ...]:
    """Every runtime model at every benchmark size with each TTA kind, in a fresh process."""
    chosen = tta_variants(variants)
    if not chosen:
        return ()
    log.info("test-time augmentation: %d models at %s px", len(chosen), config.sizes)
    spec = {
        "threads": threads,
        "config": config.to_dict(),
        "variants": [dataclasses.asdict(v) for v in chosen],
    }
    result = run_worker("benchmarks.tta", spec)
    return from_json(tuple[TtaLatency, ...], result["entries"], "tta.latency")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
