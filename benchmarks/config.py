"""`BenchmarkConfig`: what to measure and how long, round-tripping through JSON and YAML."""

from __future__ import annotations

import dataclasses

from benchmarks.environment import usable_cores
from runtime.config import ConfigBase, require


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

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep tuples so the config stays hashable and frozen.
        for name in ("sizes", "threads"):
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

    @property
    def thread_counts(self) -> list[int]:
        """The thread counts to measure, 0 resolved to the cores this process may use."""
        return sorted({t or usable_cores() for t in self.threads})
