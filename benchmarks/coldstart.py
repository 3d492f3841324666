"""Cold start: a fresh process imports, loads a model and segments one image; its peak RSS.

What a device pays before its first mask. The child (`python -m benchmarks.coldstart`) imports
nothing before it starts its clock; the parent times the whole process, interpreter start-up
included, and reads the child's own phase times and peak resident memory.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import dataclasses
import json
import subprocess
import sys
from typing import Any

from benchmarks.environment import quiet_env
from benchmarks.schema import ColdStart
from benchmarks.variants import Variant


def _segment_with_runtime(variant: Variant, image: Any) -> tuple[float, float]:
    from runtime.segmenter import Segmenter

    imported = time.perf_counter()
    segmenter = Segmenter.from_bundle(
        variant.bundle_path,
        variant.precision,
        variant.backend,
        max_memory_mb=variant.max_memory_mb,
    )
    loaded = time.perf_counter()
    segmenter.predict(image)
    return imported, loaded


def _segment_with_keras(variant: Variant, image: Any) -> tuple[float, float]:
    from runtime.bundle import read_manifest
    from train.tfk import keras

    imported = time.perf_counter()
    model = keras.models.load_model(variant.path, compile=False)
    manifest = read_manifest(variant.bundle_path)
    loaded = time.perf_counter()
    variant.keras_predict(model, manifest.preprocessing, image)
    return imported, loaded


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (10^6 bytes), as the report gives it."""
    from runtime.memory import peak_rss_bytes

    return peak_rss_bytes() / 1e6


def _child(variant: Variant, size: int) -> dict[str, float]:
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    segment = _segment_with_keras if variant.format == "keras" else _segment_with_runtime
    imported, loaded = segment(variant, image)
    done = time.perf_counter()
    return {
        "import_s": imported - _STARTED,
        "load_s": loaded - imported,
        "first_inference_s": done - loaded,
        "peak_rss_mb": peak_rss_mb(),
        "tensorflow_imported": "tensorflow" in sys.modules,  # a device path must not need it
    }


def measure_cold_start(variant: Variant, size: int) -> ColdStart:
    """Wall seconds of a fresh process segmenting one size x size image, and its phases."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.coldstart",
            json.dumps(dataclasses.asdict(variant)),
            str(size),
        ],
        capture_output=True,
        text=True,
        env=quiet_env(),
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ColdStart(variant.name, size, error=last)
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    return ColdStart(variant.name, size, seconds, **phases)


if __name__ == "__main__":
    print(json.dumps(_child(Variant(**json.loads(sys.argv[1])), int(sys.argv[2]))))
