"""`BenchmarkConfig`: what to measure and how long, round-tripping through JSON and YAML."""

from __future__ import annotations

import dataclasses

from benchmarks.environment import usable_cores
from runtime.config import ConfigBase, require
from runtime.memory import DEFAULT_MAX_MEMORY_MB


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig(ConfigBase):
    sizes: tuple[int, ...] = (256, 512)  # image sides; each runs as the runtime tiles it
    threads: tuple[int, ...] = (1, 0)  # interpreter threads; 0 = every core
    batch: int = 4  # the throughput batch (images), measured with the most threads; 0 = none
    warmup: int = 2  # untimed runs first: allocation, delegate set-up, caches
    min_runs: int = 5  # timed runs of every variant at least
    seconds: float = 1.5  # ... and about this long per variant and setting, up to max_runs
    max_runs: int = 50
    images: int = 6  # held-out images for parity and accuracy, at most
    cold_start: bool = True  # a fresh process per variant: import, load, first inference
    # The runtime end to end per image (and a fresh process's peak RSS) at these sides; () = off.
    end_to_end_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB  # the runtime's budget for one run
    folder_images: int = 8  # PNGs through runtime.predict's pipeline; 0 = none
    folder_size: int = 512  # their side
    # Test-time augmentation per runtime model: Dice with flips and d4 beside none on the
    # held-out images, and its time per image at `sizes` (`benchmarks.tta`).
    tta: bool = True

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep tuples so the config stays hashable and frozen.
        for name in ("sizes", "threads", "end_to_end_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        super().__post_init__()

    def check(self) -> None:
        require(
            bool(self.sizes) and all(s >= 16 for s in self.sizes),
            f"sizes must be >= 16 px, got {self.sizes}",
        )
        require(
            bool(self.threads) and all(t >= 0 for t in self.threads),
            f"threads must be >= 0 (0: every core), got {self.threads}",
        )
        require(self.batch >= 0, f"batch must be >= 0 (0: no throughput batch), got {self.batch}")
        require(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        require(self.min_runs >= 3, f"min-runs must be >= 3 for a median, got {self.min_runs}")
        require(self.max_runs >= self.min_runs, "max-runs must be >= min-runs")
        require(self.seconds >= 0, f"seconds must be >= 0, got {self.seconds}")
        require(self.images >= 1, f"images must be >= 1, got {self.images}")
        require(
            all(s >= 16 for s in self.end_to_end_sizes),
            f"end-to-end sizes must be >= 16 px, got {self.end_to_end_sizes}",
        )
        require(self.max_memory_mb > 0, f"max-memory-mb must be > 0, got {self.max_memory_mb}")
        require(self.folder_images >= 0, f"folder-images must be >= 0, got {self.folder_images}")
        require(self.folder_size >= 16, f"folder-size must be >= 16 px, got {self.folder_size}")

    @property
    def thread_counts(self) -> list[int]:
        """The thread counts to measure, 0 resolved to the cores this process may use."""
        return sorted({t or usable_cores() for t in self.threads})
