"""The emulated side of `make cross-cpu`: the bundle's models on its golden tiles, on this CPU.

Run as a script (`python benchmarks/crosscpu/worker.py ...` with the project root on
PYTHONPATH), never as `benchmarks.crosscpu.worker`: under qemu it has only the device's
packages (numpy, Pillow, the interpreters, `runtime`), as a device would.

It judges every model with `runtime.verify.verify_bundle`, the code behind `runtime.verify`, and
keeps each model's probabilities from that same run, so that the host can compare them with its
own, pixel by pixel. A file may run on several engines (onnxruntime and OpenVINO for .onnx):
results are keyed `FILE@ENGINE`. Models outside the bundle (`--extra NAME=FILE.onnx`, the full-range control)
run on the same tiles through the runtime's ONNX backend and get no verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import OnnxBackend
from runtime.bundle import Artifact, read_manifest
from runtime.cpu import cpu_info
from runtime.golden import Check, golden_of
from runtime.verify import verify_bundle


def key(file: str, engine: str) -> str:
    return f"{file}@{engine}"


class _Recorder:
    """A backend that keeps the probabilities of its last run (the timed one)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.last: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.last = self._model.run(batch)
        return self.last


def _verify_recording(
    bundle: Path, precision: str | None, threads: int
) -> tuple[list[Check], dict[str, np.ndarray]]:
    """`verify_bundle`'s verdicts (its loop, SHA-256 checks and engine choice) and the
    probabilities each (file, engine) pair gave in that same run."""
    recorders: dict[str, _Recorder] = {}

    def record(model: Any, artifact: Artifact) -> _Recorder:
        recorders[key(artifact.file, model.name)] = _Recorder(model)
        return recorders[key(artifact.file, model.name)]

    checks = verify_bundle(bundle, precision, "auto", threads, observe=record)
    outputs = {name: r.last for name, r in recorders.items() if r.last is not None}
    return checks, outputs


def _run_extra(bundle: Path, path: Path, threads: int) -> np.ndarray:
    manifest = read_manifest(bundle)
    inputs = golden_of(bundle, manifest).inputs(manifest.preprocessing)
    return OnnxBackend(path, threads).run(inputs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path, help="writes OUT.json (verdicts) and OUT.npz (outputs)")
    parser.add_argument("--precision", help="only this precision (default: every model)")
    parser.add_argument("--extra", action="append", default=[], help="NAME=FILE.onnx")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    checks, outputs = _verify_recording(args.bundle, args.precision, args.threads)
    for spec in args.extra:
        name, _, file = spec.partition("=")
        outputs[key(name, "onnx")] = _run_extra(args.bundle, Path(file), args.threads)
    verdicts = {
        key(c.file, c.backend): {
            "passed": c.passed,
            "dice_vs_float": c.dice_vs_float,
            "ms": c.ms_per_tile,
        }
        for c in checks
    }
    args.out.with_suffix(".json").write_text(json.dumps({"cpu": cpu_info(), "models": verdicts}))
    np.savez(args.out.with_suffix(".npz"), **outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
