"""The machine a report was measured on, and its float32 ceiling (a large matrix product)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cpu import cpu_flags, cpu_info

PACKAGES = (
    "numpy",
    "ai-edge-litert",
    "onnxruntime",
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "onnx",
    "archspec",
)
# CPU flag (archspec's names, as /proc/cpuinfo's) -> report name: the SIMD features int8 and fp32 kernels pick from.
CPU_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "asimd": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
}


def quiet_env() -> dict[str, str]:
    """The environment for child processes: TensorFlow's start-up chatter off (unless set)."""
    return {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _git(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"revision": None, "dirty": None}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    cpu, flags = cpu_info(), cpu_flags()
    return {
        "cpu": cpu["model"],
        "microarchitecture": cpu["microarchitecture"],
        "int8_capability": cpu["int8"],
        "machine": platform.machine(),
        "cores": usable_cores(),
        "flags": {name: flag in flags for flag, name in CPU_FLAGS.items()},
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "git": _git(Path(__file__).resolve().parent.parent),
    }


def gemm_ceiling(threads: int, side: int = 2048, repeats: int = 5) -> float:
    """GMAC/s of the best of `repeats` float32 `side`^3 matrix products on `threads` threads.

    A large float32 GEMM is the most a CPU's float units do in practice: a convolution
    lowered to GEMM can approach it, not beat it, so a model's GMAC/s over this says how
    far from the machine's limit it runs.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((side, side), dtype=np.float32) for _ in range(2))
    with threadpool_limits(threads):
        a @ b  # warm-up: thread pool start, page faults
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return side**3 / best / 1e9
