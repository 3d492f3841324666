"""The machine a report was measured on, and its float32 ceiling (a large matrix product)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.schema import Environment, GitState
from runtime.cpu import cpu_flags, cpu_info
from runtime.versions import package_versions

# CPU flag (archspec's names, as /proc/cpuinfo's) -> report name: the SIMD features int8, bf16
# and fp32 kernels pick from.
CPU_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",  # openvino-bf16 is offered with one of these two
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "asimd": "neon",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
}


def quiet_env() -> dict[str, str]:
    """The environment for child processes: TensorFlow's start-up chatter off (unless set)."""
    return {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _git(root: Path) -> GitState:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return GitState(git("rev-parse", "HEAD"), bool(git("status", "--porcelain")))
    except (OSError, subprocess.CalledProcessError):
        return GitState()


def environment() -> Environment:
    cpu, flags = cpu_info(), cpu_flags()
    return Environment(
        cpu=cpu["model"],
        microarchitecture=cpu["microarchitecture"],
        int8_capability=cpu["int8"],
        machine=platform.machine(),
        cores=usable_cores(),
        flags={name: flag in flags for flag, name in CPU_FLAGS.items()},
        os=platform.platform(),
        python=platform.python_version(),
        packages={
            p: v for p, v in package_versions().items() if p != "python" and v != "not installed"
        },
        git=_git(Path(__file__).resolve().parent.parent),
    )


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


def run_worker(module: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Runs `python -m MODULE SPEC.json OUT.json` in a fresh process (TensorFlow and the
    interpreters fix their thread pools when they start) and returns what it wrote."""
    with tempfile.TemporaryDirectory() as scratch:
        spec_path, out_path = Path(scratch, "spec.json"), Path(scratch, "out.json")
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [sys.executable, "-m", module, str(spec_path), str(out_path)],
            check=True,
            env=quiet_env(),
        )
        return json.loads(out_path.read_text())
