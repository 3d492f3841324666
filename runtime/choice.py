"""`precision="auto"`: the fastest model of the bundle that this device verifies.

Which model is fastest depends on the CPU: with VNNI, LiteRT int8 runs ~3.7x LiteRT fp32; on an
AVX2-only CPU int8 gains ~1.1x and onnxruntime fp32 was the fastest (issue 9). So the choice is
made on the device, at first use: every model within the bundle's Dice budget at the gate runs
on the golden tiles (`runtime.verify`), the ones that pass are timed, and the fastest wins. The
result is cached in the user's cache folder per bundle and CPU (never in the bundle, which stays
read-only and byte-identical from build to device).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from runtime import cache
from runtime.backends import BACKENDS, Backend
from runtime.bundle import Artifact, Manifest, verified_model_path
from runtime.cpu import cpu_info
from runtime.errors import UserError
from runtime.golden import Golden, check_model, golden_of, runnable

log = logging.getLogger(__name__)

# Timing of one model: at least this many single-tile runs and this many seconds.
_MIN_RUNS, _MIN_SECONDS = 5, 0.3
# Models within this factor of the fastest are timed again, taking turns, to tell them apart.
_CONTENDERS = 1.15


@dataclasses.dataclass(frozen=True)
class Choice:
    file: str
    precision: str
    backend: str
    ms_per_tile: float
    reason: str
    verified_ms: dict[str, float]  # every model that passed here: file name -> ms per tile

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def cache_path(manifest: Manifest, backend: str, num_threads: int | None) -> Path:
    """One file per bundle, CPU, interpreter versions, backend and thread count."""
    return cache.device_file("choice", manifest, backend, num_threads)


def time_per_tile(models: dict[str, Backend], tile: np.ndarray) -> dict[str, float]:
    """Median ms of single-tile runs of each model, taking turns run after run so that the
    machine's drift falls on all alike (the models are warm: verification ran them)."""
    times: dict[str, list[float]] = {key: [] for key in models}
    start, rounds = time.perf_counter(), 0
    while rounds < _MIN_RUNS or time.perf_counter() - start < _MIN_SECONDS * len(models):
        rounds += 1
        for key, model in models.items():
            began = time.perf_counter()
            model.run(tile[None])
            times[key].append((time.perf_counter() - began) * 1000)
    return {key: statistics.median(values) for key, values in times.items()}


def _verified(
    bundle: str | Path, manifest: Manifest, golden: Golden, backend: str, num_threads: int | None
) -> tuple[dict[str, float], dict[str, tuple[Artifact, str]], list[str]]:
    """Each model within the Dice budget that passes here, timed alone right after its check
    (one model in memory at a time); the models by file name; the ones left out and why."""
    assert manifest.golden is not None
    tile = golden.inputs(manifest.preprocessing)[0]
    timed, models, left_out = {}, {}, []
    for artifact, name in runnable(manifest, None, backend):
        built = manifest.golden.models.get(artifact.file)
        if built is None or built.gate_dice_drop > manifest.golden.max_dice_drop:
            left_out.append(f"{artifact.file} (over the Dice budget at the gate)")
            continue
        model = BACKENDS[name][1](verified_model_path(bundle, artifact), num_threads)
        check = check_model(model, artifact, manifest, golden)
        if not check.passed:
            left_out.append(f"{artifact.file} (fails verification here: {check.failure()})")
            continue
        timed |= time_per_tile({artifact.file: model}, tile)
        models[artifact.file] = (artifact, name)
    return timed, models, left_out


def _measure(
    bundle: str | Path, manifest: Manifest, backend: str, num_threads: int | None
) -> Choice:
    golden = golden_of(bundle, manifest)
    timed, models, left_out = _verified(bundle, manifest, golden, backend, num_threads)
    if not timed:
        raise UserError(
            f"no model of {bundle} passes verification on this device ({'; '.join(left_out)}): "
            "run python -m runtime.verify on it"
        )
    # Models within noise of the fastest (several int8 twins often are) take turns to decide.
    best = min(timed.values())
    close = [f for f, ms in timed.items() if ms <= _CONTENDERS * best]
    if len(close) > 1:
        tile = golden.inputs(manifest.preprocessing)[0]
        loaded = {
            f: BACKENDS[models[f][1]][1](verified_model_path(bundle, models[f][0]), num_threads)
            for f in close
        }
        timed |= time_per_tile(loaded, tile)
    ranked = sorted(timed, key=timed.get)
    file = ranked[0]
    artifact, name = models[file]
    others = ", ".join(f"{f} on {models[f][1]} {timed[f]:.1f} ms" for f in ranked[1:])
    cpu = cpu_info()
    reason = (
        f"fastest of {len(timed)} model(s) verified on this CPU ({cpu['model']}, int8: "
        f"{cpu['int8']}): {timed[file]:.1f} ms a {manifest.input_size} px tile"
        + (f"; then {others}" if others else "")
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )
    return Choice(file, artifact.precision, name, timed[file], reason, timed)


def choose(
    bundle: str | Path,
    manifest: Manifest,
    backend: str = "auto",
    num_threads: int | None = None,
    refresh: bool = False,
) -> Choice:
    """The fastest verified model for this device, from the cache when it was measured before.

    Args:
        backend: "auto" considers every installed interpreter; a name only that one.
        refresh: measure again even when a cached choice exists.
    """
    path = cache_path(manifest, backend, num_threads)
    cached = None if refresh else cache.read(path)
    try:
        choice = Choice(**cached) if isinstance(cached, dict) else None
    except TypeError:  # a cache file of another layout is measured again
        choice = None
    if choice:
        log.info("runtime: auto: %s on %s (cached in %s)", choice.file, choice.backend, path)
        return choice
    log.info("runtime: auto: verifying and timing the bundle's models on this device")
    choice = _measure(bundle, manifest, backend, num_threads)
    cache.write(path, choice.to_dict())
    log.info("runtime: auto chose %s on %s: %s", choice.file, choice.backend, choice.reason)
    return choice
