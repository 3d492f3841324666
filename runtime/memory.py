"""How much memory a model needs for an input size: measured, then a line through two sizes.

An interpreter's memory for one run grows with the pixels it computes: activations, and the
buffers its kernels size by their outputs. On the demo U-Net (Ice Lake Xeon) LiteRT int8 took
~620 bytes a pixel, LiteRT fp32 ~1.1 KB, onnxruntime int8 ~235 and fp32 ~525: a whole 1024 px
image needs 0.6 GB in LiteRT int8. The bundle writer measures every model at two input shapes,
a fresh process each (`python -m runtime.memory MODEL FORMAT N H W C`), and the runtime sizes
its tiles from the line through the two. Another CPU's kernels may pack differently:
`runtime.verify --memory` measures the line on the device, and the runtime then uses that one
(`runtime.cache.memory_line`).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MB = 1 << 20
# The memory one interpreter run may take, by default: a 512 px image runs in one pass with
# every model of the demo bundle (LiteRT fp32 needs ~300 MB for it, int8 ~170 MB, onnxruntime
# int8 ~90 MB; measured on the Ice Lake Xeon).
DEFAULT_MAX_MEMORY_MB = 384.0
# The memory-first budget: every engine's fresh process segments a 512 px image of the demo
# U-Net within 150 MB (LiteRT int8 in 4 tiles: 133 MB, 1.4x its one-pass time; one pass takes
# 213 MB, most of it XNNPACK's indirection buffers). The README and the benchmarks name it.
MEMORY_FIRST_MB = 96.0


@dataclasses.dataclass(frozen=True)
class ModelMemory:
    """Peak memory of one run of a batch of `pixels` input pixels: base_mb + bytes_per_pixel x
    pixels. Measured on the build machine (`built_on`), the process's own start-up excluded."""

    base_mb: float
    bytes_per_pixel: float

    def mb(self, pixels: int) -> float:
        return self.base_mb + self.bytes_per_pixel * pixels / MB

    def pixels_within(self, budget_mb: float) -> int:
        """The most input pixels one run may have to stay within `budget_mb`."""
        return max(0, int((budget_mb - self.base_mb) * MB / self.bytes_per_pixel))

    @classmethod
    def through(cls, points: list[tuple[int, float]]) -> ModelMemory:
        """The line through (pixels, MB) at the smallest and largest side.

        A slope the noise made non-positive falls back to the largest run's MB per pixel (an
        overestimate, which tiles sooner rather than later).
        """
        (p1, m1), (p2, m2) = min(points), max(points)
        slope = (m2 - m1) / (p2 - p1) if p2 > p1 else 0.0
        if slope <= 0:
            slope = m2 / p2
        base = max(0.0, m2 - slope * p2)
        return cls(round(base, 2), round(slope * MB, 1))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    Linux: VmHWM, the high-water mark of the address space exec made (`ru_maxrss` would also
    count a parent's pages from before exec: 600 MB of a TensorFlow parent). Elsewhere
    `ru_maxrss` (bytes on macOS, KiB on Linux).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_mb() -> float:
    """`peak_rss_bytes` in MB of 2^20 bytes, the unit of `max_memory_mb`."""
    return peak_rss_bytes() / MB


def measure_model(path: Path, fmt: str, shapes: list[tuple[int, ...]]) -> ModelMemory:
    """Runs `python -m runtime.memory` once per input shape, side by side (a fresh process
    each: the peak is a high-water mark of the process's own), and fits the line through the
    pixels of each batch."""

    def peak_mb(shape: tuple[int, ...]) -> float:
        command = [sys.executable, "-m", "runtime.memory", str(path), fmt, *map(str, shape)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.splitlines()[-1])["mb"]

    with ThreadPoolExecutor(len(shapes)) as pool:
        peaks = list(pool.map(peak_mb, shapes))
    return ModelMemory.through(
        [(int(np.prod(shape[:3])), mb) for shape, mb in zip(shapes, peaks, strict=True)]
    )


def measurement_shapes(shape: tuple[int, ...], tile: int) -> list[tuple[int, ...]] | None:
    """The two input shapes a model's line is measured at: the tile side and twice it for a
    model that takes any size, batches of 1 and 4 for one with a fixed tile; None for a model
    that takes one shape only (it has no line)."""
    if -1 in shape[1:3]:
        return [(1, tile, tile, shape[-1]), (1, 2 * tile, 2 * tile, shape[-1])]
    if shape[0] == -1:
        return [(1, *shape[1:]), (4, *shape[1:])]
    return None


def _measure_one_run(path: Path, fmt: str, shape: tuple[int, ...]) -> float:
    """Peak MB that loading `path` and one run of a zero input of `shape` add to this process."""
    from runtime.backends import backend_for, engines_for, installed_backends, load

    # The format's first installed engine: a device with OpenVINO alone measures its .onnx
    # files through OpenVINO.
    engine = next(iter(engines_for(fmt, installed_backends())), backend_for(fmt))
    batch = np.zeros(shape, np.float32)  # allocated before the baseline
    before = peak_rss_mb()
    model = load(engine, path)
    model.run(batch)
    return peak_rss_mb() - before


if __name__ == "__main__":
    model_path, model_format, *model_shape = sys.argv[1:]
    mb = _measure_one_run(Path(model_path), model_format, tuple(map(int, model_shape)))
    print(json.dumps({"mb": round(mb, 2)}))
