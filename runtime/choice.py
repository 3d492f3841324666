"""`precision="auto"`: the fastest (model, engine) pair of the bundle that this device verifies.

Which pair is fastest depends on the CPU: with VNNI, LiteRT int8 runs ~3.7x LiteRT fp32 and
OpenVINO on the QDQ int8 .onnx ~1.15x LiteRT int8; on an AVX2-only CPU int8 gains ~1.1x and
onnxruntime fp32 was the fastest (issues 9, 18). So the choice is made on the device, at first
use: every pair of a model within the bundle's Dice budget at the gate and an installed engine
that reads it runs on the golden tiles (`runtime.verify`), the ones that pass are timed, and the
fastest wins. The result is cached in the user's cache folder per bundle, CPU, engine versions
and threads (never in the bundle, which stays read-only and byte-identical from build to
device), with when and under what load it was timed: a choice timed on a busy machine is timed
again once the machine is quiet.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np

from runtime import cache
from runtime.backends import Backend, load
from runtime.bundle import Artifact, Manifest, verified_model_path
from runtime.cpu import cpu_info
from runtime.errors import ModelUnreadable, UserError
from runtime.golden import Golden, check_model, golden_of, runnable

log = logging.getLogger(__name__)

# Timing of one model: at least this many single-tile runs and this many seconds.
_MIN_RUNS, _MIN_SECONDS = 5, 0.3
# Models within this factor of the fastest are timed again, taking turns, to tell them apart.
_CONTENDERS = 1.15
# A machine is busy when its 1-minute load average is at least this per core: then on a 2-core
# CPU another process held a core half the time, enough to reorder pairs within 1.5x of each
# other (a choice timed during a training job cached onnxruntime int8, 1.5x slower than LiteRT
# int8 on the quiet machine: issue 18).
BUSY_LOAD_PER_CORE = 0.5


def pair_key(file: str, engine: str) -> str:
    """How a (model file, engine) pair is named in `Choice.verified_ms`."""
    return f"{file} on {engine}"


def _load_now() -> float:
    return os.getloadavg()[0]


def _busy(load_1m: float, cores: int) -> bool:
    return load_1m >= BUSY_LOAD_PER_CORE * cores


@dataclasses.dataclass(frozen=True)
class Choice:
    file: str
    precision: str
    backend: str  # the engine that runs `file`
    ms_per_tile: float
    reason: str
    verified_ms: dict[str, float]  # every pair that passed here: pair_key -> ms per tile
    made_at: str = ""  # UTC, ISO 8601: when it was timed
    load_1m: float = 0.0  # os.getloadavg()'s 1-minute figure just before the timing
    cores: int = 1  # os.cpu_count() then

    @property
    def made_busy(self) -> bool:
        return _busy(self.load_1m, self.cores)

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


Pair = tuple[Artifact, str]  # a model and the engine that runs it


def _load_pair(bundle: str | Path, pair: Pair, num_threads: int | None) -> Backend:
    return load(pair[1], verified_model_path(bundle, pair[0]), num_threads)


def _verified(
    bundle: str | Path, manifest: Manifest, golden: Golden, backend: str, num_threads: int | None
) -> tuple[dict[str, float], dict[str, Pair], list[str]]:
    """Each pair within the Dice budget that passes here, timed alone right after its check
    (one model in memory at a time), by pair_key; the pairs; the ones left out and why."""
    assert manifest.golden is not None
    tile = golden.inputs(manifest.preprocessing)[0]
    timed, pairs, left_out = {}, {}, []
    for artifact, name in runnable(manifest, None, backend):
        key = pair_key(artifact.file, name)
        built = manifest.golden.models.get(artifact.file)
        if built is None or built.gate_dice_drop > manifest.golden.max_dice_drop:
            left_out.append(f"{key} (over the Dice budget at the gate)")
            continue
        try:
            model = _load_pair(bundle, (artifact, name), num_threads)
        except ModelUnreadable as error:  # another engine may read the same file
            log.warning("runtime: auto: passing over %s: %s", key, error)
            left_out.append(f"{key} (the engine cannot read it)")
            continue
        check = check_model(model, artifact, manifest, golden)
        if not check.passed:
            left_out.append(f"{key} (fails verification here: {check.failure()})")
            continue
        timed |= time_per_tile({key: model}, tile)
        pairs[key] = (artifact, name)
        del model  # one model in memory at a time
    return timed, pairs, left_out


def _measure(
    bundle: str | Path, manifest: Manifest, backend: str, num_threads: int | None
) -> Choice:
    made_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_1m, cores = _load_now(), os.cpu_count() or 1
    golden = golden_of(bundle, manifest)
    timed, pairs, left_out = _verified(bundle, manifest, golden, backend, num_threads)
    if not timed:
        raise UserError(
            f"no model of {bundle} passes verification on this device ({'; '.join(left_out)}): "
            "run python -m runtime.verify on it"
        )
    # Pairs within noise of the fastest (several int8 twins often are) take turns to decide.
    best = min(timed.values())
    close = [k for k, ms in timed.items() if ms <= _CONTENDERS * best]
    if len(close) > 1:
        tile = golden.inputs(manifest.preprocessing)[0]
        loaded = {k: _load_pair(bundle, pairs[k], num_threads) for k in close}
        timed |= time_per_tile(loaded, tile)
    ranked = sorted(timed, key=timed.get)
    artifact, name = pairs[ranked[0]]
    others = ", ".join(f"{k} {timed[k]:.1f} ms" for k in ranked[1:])
    cpu = cpu_info()
    reason = (
        f"fastest of {len(timed)} (model, engine) pair(s) verified on this CPU ({cpu['model']}, "
        f"int8: {cpu['int8']}; load {load_1m:.2f} on {cores} core(s)): "
        f"{timed[ranked[0]]:.1f} ms a {manifest.input_size} px tile"
        + (f"; then {others}" if others else "")
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )
    return Choice(
        artifact.file,
        artifact.precision,
        name,
        timed[ranked[0]],
        reason,
        timed,
        made_at,
        load_1m,
        cores,
    )


def _cached(path: Path) -> Choice | None:
    """The cached choice, unless it was timed on a busy machine that is quiet now."""
    cached = cache.read(path)
    try:
        choice = Choice(**cached) if isinstance(cached, dict) else None
    except TypeError:  # a cache file of another layout is measured again
        return None
    if choice is None or not choice.made_busy:
        return choice
    now = _load_now()
    if not _busy(now, os.cpu_count() or 1):
        log.info(
            "runtime: auto: the cached choice was timed under load %.2f (%s): timing again at "
            "load %.2f",
            choice.load_1m,
            choice.made_at,
            now,
        )
        return None
    # A device that is always this busy would hear it at every start: info, not a warning.
    log.info(
        "runtime: auto: the cached choice was timed under load %.2f and the machine is still "
        "busy (%.2f): keeping it; --rechoose measures again",
        choice.load_1m,
        now,
    )
    return choice


def choose(
    bundle: str | Path,
    manifest: Manifest,
    backend: str = "auto",
    num_threads: int | None = None,
    refresh: bool = False,
) -> Choice:
    """The fastest verified (model, engine) pair for this device, from the cache when it was
    measured before on a machine that was not busy.

    Args:
        backend: "auto" considers every installed engine; a name only that one.
        refresh: measure again even when a cached choice exists (`--rechoose`).
    """
    path = cache_path(manifest, backend, num_threads)
    choice = None if refresh else _cached(path)
    if choice:
        log.info("runtime: auto: %s on %s (cached in %s)", choice.file, choice.backend, path)
        return choice
    log.info("runtime: auto: verifying and timing the bundle's (model, engine) pairs here")
    choice = _measure(bundle, manifest, backend, num_threads)
    cache.write(path, choice.to_dict())
    log.info("runtime: auto chose %s on %s: %s", choice.file, choice.backend, choice.reason)
    return choice
