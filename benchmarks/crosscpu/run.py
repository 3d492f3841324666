"""The host side of `make cross-cpu`: the bundle's models on emulated CPUs against this machine.

For each emulated CPU the worker (`benchmarks/crosscpu/worker.py`, `runtime` only) runs the
models on the bundle's golden tiles under qemu-user; this machine runs the same worker natively.
Per CPU and model: mask agreement with this machine, the largest probability difference, and
`runtime.verify`'s verdict there.

Two checks show that the emulation is real:

- a control: the bundle's fp32 ONNX quantized with full-range int8 weights (`reduce_range=False`)
  saturates onnxruntime's AVX2 u8 x s8 kernels (pairs of products summed in int16) and not the
  VNNI ones, so on Haswell its masks must differ from this machine's;
- a copy of the bundle with perturbed int8 ONNX weights (hash updated) must fail
  `python -m runtime.verify` on every emulated CPU.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.crosscpu.sysroot import CPUS, ROOT, TCG_NOISE, EmulatedCpu, command
from benchmarks.schema import CrossCpu, CrossCpuModel, CrossCpuRun
from runtime.bundle import read_manifest, sha256_of
from runtime.cpu import cpu_info
from runtime.errors import UserError
from runtime.golden import golden_of
from runtime.metrics import masks_from_probabilities

WORKER = ROOT / "benchmarks" / "crosscpu" / "worker.py"
CONTROL = "control: full-range int8 ONNX"
CONTROL_FILE = "control_int8_full_range.onnx"
PERTURBED = "model_int8.onnx"  # the file whose weights the tampered copy perturbs
# An emulated model runs 5-30 s a 256 px tile; a whole worker stays well inside this.
WORKER_TIMEOUT_S = 3600


def full_range_control(bundle: Path, out: Path) -> Path:
    """The bundle's fp32 ONNX quantized as `optimize.onnx_int8` does, but with full-range int8
    weights, calibrated on the golden tiles."""
    from optimize.onnx_int8 import quantize_qdq  # TensorFlow comes with optimize: only here

    manifest = read_manifest(bundle)
    fp32 = next(a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32")
    tiles = list(golden_of(bundle, manifest).inputs(manifest.preprocessing))
    model = quantize_qdq((bundle / fp32.file).read_bytes(), tiles, True, (), reduce_range=False)
    path = out / CONTROL_FILE
    path.write_bytes(model)
    return path


def perturbed_copy(bundle: Path, out: Path, seed: int = 0) -> Path:
    """A copy of the bundle whose int8 ONNX kernels carry noise, re-hashed in the manifest as a
    bad copy or a broken converter would leave it: only `runtime.verify` can tell."""
    import onnx
    from onnx import numpy_helper

    copy = out / "perturbed-bundle"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("report"))
    path = copy / PERTURBED
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if len(init.dims) == 4 and w.dtype == np.int8:  # 7-bit weights: +-40 is large noise
            noisy = np.clip(w.astype(np.int32) + rng.integers(-40, 41, w.shape), -127, 127)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.int8), init.name))
    onnx.save(model, str(path))
    manifest = json.loads((copy / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact["file"] == PERTURBED:
            artifact["sha256"], artifact["size"] = sha256_of(path), path.stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


class WorkerFailed(RuntimeError):
    """The worker crashed or failed on a CPU: a finding, reported in one line (exit 1)."""


def _python(cpu: EmulatedCpu | None, script: list[str]) -> tuple[list[str], dict[str, str] | None]:
    if cpu is None:  # this machine: the venv's own Python
        return [sys.executable, *script], {**os.environ, "PYTHONPATH": str(ROOT)}
    return command(cpu, script)


def _run(cpu: EmulatedCpu | None, script: list[str]) -> subprocess.CompletedProcess:
    argv, env = _python(cpu, script)
    try:
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        where = cpu.label if cpu else "this machine"
        raise WorkerFailed(f"{script[0]} on {where} ran over {WORKER_TIMEOUT_S} s") from None


def _stderr_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and TCG_NOISE not in line]
    return lines[-1] if lines else ""


def run_worker(
    cpu: EmulatedCpu | None,
    bundle: Path,
    out: Path,
    precisions: list[str | None],
    extras: dict[str, Path],
    threads: int,
) -> tuple[dict, dict[str, np.ndarray]]:
    """The worker's verdicts and outputs on `cpu` (None: natively), one run per precision."""
    verdicts: dict = {"models": {}}
    outputs: dict[str, np.ndarray] = {}
    for i, precision in enumerate(precisions):
        target = out / f"{cpu.name if cpu else 'native'}-{precision or 'all'}"
        script = [str(WORKER), str(bundle), str(target), f"--threads={threads}"]
        script += [f"--precision={precision}"] if precision else []
        if i == 0:  # extra models once
            script += [f"--extra={name}={path}" for name, path in extras.items()]
        done = _run(cpu, script)
        if done.returncode != 0:
            where = cpu.label if cpu else "this machine"
            raise WorkerFailed(
                f"worker on {where} exited {done.returncode}: {_stderr_line(done.stderr)}"
            )
        result = json.loads(target.with_suffix(".json").read_text())
        verdicts["cpu"] = result["cpu"]
        verdicts["models"].update(result["models"])
        with np.load(target.with_suffix(".npz")) as arrays:
            outputs.update({name: arrays[name] for name in arrays.files})
    return verdicts, outputs


def verify_cli(cpu: EmulatedCpu, bundle: Path) -> tuple[int, str]:
    """`python -m runtime.verify BUNDLE --precision int8 --backend onnx` on `cpu`: exit code and
    the line that says why."""
    done = _run(cpu, ["-m", "runtime.verify", str(bundle), "--precision=int8", "--backend=onnx"])
    return done.returncode, _stderr_line(done.stderr) or _stderr_line(done.stdout)


def compare(
    cpu: str,
    native: dict[str, np.ndarray],
    emulated: dict[str, np.ndarray],
    verdicts: dict,
    threshold: float,
) -> list[CrossCpuModel]:
    rows = []
    for name, here in native.items():
        if name not in emulated:  # an engine this CPU's install lacks (OpenVINO on ARM)
            continue
        there = emulated[name]
        same = masks_from_probabilities(there, threshold) == masks_from_probabilities(
            here, threshold
        )
        verdict = verdicts["models"].get(name)
        file, _, engine = name.rpartition("@")
        rows.append(
            CrossCpuModel(
                cpu=cpu,
                model=file,
                engine=engine,
                agreement=float(same.mean()),
                max_probability_difference=float(np.abs(there - here).max()),
                verified=verdict["passed"] if verdict else None,
                ms_per_tile=verdict["ms"] if verdict else None,
            )
        )
    return rows


def cross_cpu(
    bundle: Path,
    cpus: list[EmulatedCpu],
    precisions: list[str | None],
    threads: int = 1,
    say: Callable[[str], None] = print,
) -> CrossCpu:
    """Runs everything and returns the typed result (the caller writes it)."""
    manifest = read_manifest(bundle)  # a broken bundle fails here, before any emulation
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cross-cpu-") as tmp:
        work = Path(tmp)
        say("making the full-range int8 control and the perturbed copy of the bundle")
        extras = {CONTROL: full_range_control(bundle, work)}
        perturbed = perturbed_copy(bundle, work)
        _, native = run_worker(None, bundle, work, precisions, extras, threads)
        runs, models = [], []
        for cpu in cpus:
            say(f"{cpu.label}: qemu -cpu {cpu.qemu_cpu} ...")
            begun = time.perf_counter()
            verdicts, emulated = run_worker(cpu, bundle, work, precisions, extras, threads)
            code, line = verify_cli(cpu, perturbed)
            models += compare(cpu.name, native, emulated, verdicts, manifest.threshold)
            runs.append(
                CrossCpuRun(
                    cpu=cpu.name,
                    label=cpu.label,
                    qemu_cpu=cpu.qemu_cpu,
                    seen_as=f"{verdicts['cpu']['model']} ({verdicts['cpu']['int8']})",
                    perturbed_exit=code,
                    perturbed_said=line,
                    seconds=time.perf_counter() - begun,
                )
            )
            say(f"  {time.perf_counter() - begun:.0f} s")
    here = cpu_info()
    return CrossCpu(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        bundle=str(bundle),
        host=f"{here['model']} ({here['int8']})",
        runs=tuple(runs),
        models=tuple(models),
        wall_seconds=time.perf_counter() - started,
    )


def cpus_named(names: str) -> list[EmulatedCpu]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in CPUS]
    if unknown or not chosen:
        raise UserError(
            f"unknown CPU {', '.join(unknown) or '(none)'}: choose from {', '.join(CPUS)}"
        )
    return [CPUS[n] for n in chosen]
