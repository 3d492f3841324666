"""The claims a report checks: speed-ups at the largest size on every core, and Dice costs.

Each is data (what, against what, how much); a claim whose variants were not measured is
left out, and the report's skipped list says why they were not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks.load import busy_reason
from benchmarks.schema import (
    MAIN,
    Accuracy,
    EndToEnd,
    EndToEndSize,
    FolderRun,
    Latency,
    ProcessMemory,
    Target,
)
from benchmarks.variants import Variant
from runtime.choice import Choice, pair_key
from runtime.cpu import has_int8_dot_product


@dataclasses.dataclass(frozen=True)
class SpeedClaim:
    variant: str
    baseline: str
    factor: float

    @property
    def text(self) -> str:
        words = "not slower than" if self.factor == 1 else f">= {self.factor:g}x faster than"
        return f"{self.variant} {words} {self.baseline}"

    def speedup(self, p50_ms: dict[str, float]) -> float | None:
        if self.variant not in p50_ms or self.baseline not in p50_ms:
            return None
        return p50_ms[self.baseline] / p50_ms[self.variant]


# The Dice a pruned + int8 model may lose against the float model (the optimize issue's limits).
DICE_BUDGET = {"magnitude": 0.01, "2:4": 0.01, "filter": 0.02, None: 0.01}


# Where the CPU has no int8 dot product, int8 kernels widen to int16 and gain little.
NO_DOT_PRODUCT_NOTE = (
    "This CPU has no int8 dot product ({capability}): int8 kernels widen to int16 "
    "(VPMADDUBSW/VPMADDWD on AVX2) and run at about the float32 rate, so LiteRT int8 is only "
    "~1.1x LiteRT fp32 (1.10x measured on an AVX2-only AMD EPYC, against 3.66x with AVX-512 "
    "VNNI). The int8 speed targets hold for CPUs with VNNI or ARM dot product; here the speed "
    'comes from filter pruning (fewer MACs: checked below) and from precision="auto", which '
    "picks the fastest model this CPU verifies (onnxruntime fp32 on that EPYC)."
)
# precision="auto" must pick a model at most this much slower than the fastest verified one.
AUTO_TOLERANCE = 1.05


def _speed_claims(variants: list[Variant], dot_product: bool) -> list[SpeedClaim]:
    thin = [
        v.name
        for v in variants
        if v.key == "int8" and v.format == "tflite" and v.prune_method == "filter"
    ]
    if not dot_product:  # half the MACs is ~2x in any precision; int8 adds ~1.1x
        return [SpeedClaim(name, "tflite fp32", 1.4) for name in thin]
    return [
        SpeedClaim("tflite int8", "tflite fp32", 1.3),
        SpeedClaim("tflite int8", "keras fp32", 2.0),
        SpeedClaim("onnx int8", "onnx fp32", 1.0),
        *(SpeedClaim(name, "tflite fp32", 2.5) for name in thin),
    ]


def _auto_claim(
    variants: list[Variant], p50: dict[str, float], choice: Choice, where: str
) -> Target | None:
    """precision="auto"'s pick against the fastest (model, engine) pair it verified, in this
    run's timings."""
    main = [v for v in variants if v.bundle == MAIN and v.backend]
    by_pair = {pair_key(Path(v.path).name, v.backend): v.name for v in main}
    by_pair = {k: name for k, name in by_pair.items() if name in p50}
    verified = {by_pair[k]: p50[by_pair[k]] for k in choice.verified_ms if k in by_pair}
    chosen = by_pair.get(pair_key(choice.file, choice.backend))
    if chosen not in verified:
        return None
    fastest = min(verified, key=verified.__getitem__)
    return Target(
        f'precision="auto" ({chosen}) within {AUTO_TOLERANCE:g}x of the fastest '
        f"verified model ({fastest}){where}",
        AUTO_TOLERANCE,
        verified[chosen] / verified[fastest],
        verified[chosen] <= AUTO_TOLERANCE * verified[fastest],
    )


def check_targets(
    variants: list[Variant],
    latency: list[Latency],
    accuracy: Accuracy | None,
    size: int,
    threads: int,
    capability: str,
    choice: Choice | None = None,
) -> list[Target]:
    """Every claim that can be checked, with the measured value and whether it is met.

    Args:
        capability: the CPU's int8 dot-product capability (`runtime.cpu.cpu_info`): the int8
            speed-up targets apply only where it has one.
        choice: precision="auto"'s choice (`runtime.choice.Choice`) at `threads`.
    """
    p50 = {e.variant: e.p50_ms for e in latency if e.setting == (size, threads, 1)}
    where = f" ({size} px, {threads} thread(s), batch 1, p50)"
    results = []
    for claim in _speed_claims(variants, has_int8_dot_product(capability)):
        speedup = claim.speedup(p50)
        if speedup is not None:
            results.append(
                Target(claim.text + where, claim.factor, speedup, speedup >= claim.factor)
            )
    if choice and (auto := _auto_claim(variants, p50, choice, where)):
        results.append(auto)
    scored = accuracy.variants if accuracy else {}
    for v in variants:
        drop = scored[v.name].overall.dice_drop if v.name in scored else None
        if v.bundle == MAIN or v.key != "int8" or drop is None:
            continue
        budget = DICE_BUDGET.get(v.prune_method, 0.01)
        claim = f"{v.name} loses <= {budget} Dice against the float model"
        results.append(Target(claim, budget, drop, drop <= budget))
    return results


# The runtime on a whole image may cost at most this much more than the same pixels as
# smallest-size images; a fresh process with an int8 model stays within RSS_LIMIT_MB at
# RSS_SIZE px; a folder runs at FOLDER_SHARE at least of the rate its cores allow
# (`folder_ceiling`).
PIXEL_FACTOR = 1.15
RSS_LIMIT_MB = 150.0
RSS_SIZE = 512
FOLDER_SHARE = 0.9


def _scaling_claims(sizes: tuple[EndToEndSize, ...]) -> list[Target]:
    """Runtime ms of each one-pass size against the smallest size's, per pixel."""
    by = {(e.variant, e.size): e for e in sizes}
    results = []
    for (name, size), entry in by.items():
        smallest = min(s for n, s in by if n == name)
        base = by[(name, smallest)]
        if size == smallest or entry.count != 1:
            continue  # a tiled size: the report shows the budget that tiled it
        pixels = (size / smallest) ** 2
        # The smallest size timed beside this one where the report has it, else its own entry.
        ratio = entry.runtime_ms / (pixels * (entry.smallest_runtime_ms or base.runtime_ms))
        claim = (
            f"{name}: a {size} px image through the runtime costs <= {PIXEL_FACTOR:g} x "
            f"{pixels:g} x a {smallest} px one ({entry.threads} thread(s), p50)"
        )
        loads = [e.other_cores for e in (entry, base) if e.other_cores is not None]
        busy = busy_reason(max(loads) if loads else None, f"the {size} and {smallest} px runs")
        results.append(Target(claim, PIXEL_FACTOR, ratio, ratio <= PIXEL_FACTOR, busy))
    return results


def _memory_claims(memory: tuple[ProcessMemory, ...]) -> list[Target]:
    """Per int8 model at RSS_SIZE px: the default budget's process, or where that one needs
    more than RSS_LIMIT_MB, the memory-first budget's, with the default's peak named in the
    claim (LiteRT int8: XNNPACK's indirection buffers; docs/ARCHITECTURE.md)."""
    by_variant: dict[str, list[ProcessMemory]] = {}
    for e in memory:
        if e.size == RSS_SIZE and "int8" in e.variant and e.peak_rss_mb is not None:
            by_variant.setdefault(e.variant, []).append(e)
    results = []
    for name, runs in by_variant.items():
        default, e = runs[0], runs[-1]  # measured at the default budget first
        peak = e.peak_rss_mb or 0.0
        tile = "x".join(map(str, e.tile or ()))
        budget = f"max_memory_mb {e.max_memory_mb:g}: {e.count} run(s) of {tile} px"
        if e is not default:
            budget = (
                f"the memory-first {budget}; {default.peak_rss_mb:.0f} MB at the default "
                f"max_memory_mb {default.max_memory_mb:g} in {default.count} run(s)"
            )
        claim = (
            f"{name}: a fresh process segmenting one {RSS_SIZE} px image peaks at "
            f"<= {RSS_LIMIT_MB:g} MB RSS ({budget})"
        )
        results.append(Target(claim, RSS_LIMIT_MB, peak, peak <= RSS_LIMIT_MB))
    return results


def folder_ceiling(interpreter_ms: float, threads: int, entry: FolderRun) -> float:
    """Images per second a folder can reach at best: the interpreter's own rate, unless the
    cores cannot hold the interpreter's threads and the pipeline's decoding and writing side by
    side; then the cores' time per image (threads x interpreter + pipeline) caps it.

    On a 2-core CPU a 2-thread interpreter leaves no core free, so decoding and encoding the
    PNGs add to its time per image whatever the pipeline does: 0.9 of the interpreter's own
    rate (the earlier bar) measured the core count, not the pipeline (0.80 on a 2-core EPYC).
    """
    rate = 1e3 / interpreter_ms
    if entry.pipeline_ms is None or entry.cores is None:
        return rate
    return min(rate, entry.cores * 1e3 / (threads * interpreter_ms + entry.pipeline_ms))


def folder_interpreter_ms(entry: FolderRun, single: EndToEndSize | None) -> float | None:
    """The interpreter's ms an image that a folder's rate is judged against: timed between the
    folder's passes where the report has it, else the size's own entry."""
    return entry.interpreter_ms or (single.interpreter_ms if single else None)


def _folder_claims(folder: tuple[FolderRun, ...], sizes: tuple[EndToEndSize, ...]) -> list[Target]:
    interpreter = {(e.variant, e.size): e for e in sizes}
    results = []
    for entry in folder:
        single = interpreter.get((entry.variant, entry.size))
        if single is None:
            continue
        ceiling = folder_ceiling(folder_interpreter_ms(entry, single), single.threads, entry)
        share = entry.images_per_s / ceiling
        claim = (
            f"{entry.variant}: runtime.predict on a folder of {entry.images} {entry.size} px "
            f"PNGs runs at >= {FOLDER_SHARE:.0%} of the images per second its cores allow "
            f"({ceiling:.1f}: the interpreter's {single.threads} thread(s) and the pipeline's "
            f"{entry.pipeline_ms or 0:.1f} ms an image on {entry.cores or '?'} core(s))"
        )
        busy = busy_reason(entry.other_cores, "the folder's passes")
        results.append(Target(claim, FOLDER_SHARE, share, share >= FOLDER_SHARE, busy))
    return results


def end_to_end_targets(end_to_end: EndToEnd) -> list[Target]:
    """The whole-image claims: per-pixel cost, a fresh process's memory, folder throughput."""
    return (
        _scaling_claims(end_to_end.sizes)
        + _memory_claims(end_to_end.memory)
        + _folder_claims(end_to_end.folder, end_to_end.sizes)
    )
