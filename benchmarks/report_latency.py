"""The report's "Latency" section: p50/p90/p99 per variant at each (size, threads, batch),
the speed-up over the baseline, GMAC/s against the compute ceiling, and the ceiling."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num, pct, ratio, text, times
from benchmarks.schema import Latency, Report, plural

_LATENCY_HEADERS = (
    "variant",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "ms / image",
    "images / s",
    "speedup",
    "GMAC/s",
    "% of ceiling",
    "tiles / image",
    "runs",
)


def latency_section(report: Report) -> Section | None:
    groups = report.latency_groups()
    if not groups:
        return None
    baseline = report.baseline
    tables = [
        Table(
            _LATENCY_HEADERS,
            [_latency_row(e, entries, baseline) for e in entries],
            "l" + "r" * (len(_LATENCY_HEADERS) - 1),
            caption=f"{size} px, {plural(threads, 'thread')}, batch {batch}",
        )
        for (size, threads, batch), entries in groups.items()
    ]
    if report.ceiling:
        rows = [
            (
                str(c.threads),
                num(c.gmacs_per_s, 1),
                num(c.blas_gmacs_per_s, 1),
                num(c.engine_f32_gmacs_per_s, 1),
                num(c.int8_gmacs_per_s, 1),
                text(c.int8_kernel),
            )
            for c in report.ceiling
        ]
        headers = (
            "threads",
            "fp32 GMAC/s",
            "numpy BLAS",
            "OpenVINO f32",
            "int8 GMAC/s",
            "int8 kernel",
        )
        tables.append(Table(headers, rows, "rrrrrl", caption="Compute ceiling"))
    notes = [
        f"Speedup: the p50 of {baseline} over the variant's p50 at the same size, threads and "
        "batch (above 1 is faster). % of ceiling: the model's GMAC/s over the float32 GEMM "
        "peak measured at that thread count (the better of numpy's BLAS and OpenVINO's f32 "
        "kernel); MACs are counted on the ONNX graph at each input's size; int8 kernels can pass it (more MACs per "
        "instruction). Timed is the interpreter's work on what the runtime runs for an image "
        "of that size: the whole image in one run where it fits the memory budget, else its "
        "tiles (a model with a fixed tile: its tiles); a batch runs as one call where the "
        "model takes a batch, else tile by tile."
    ]
    measured = {e.variant for e in report.latency}
    unmeasured = [v.name for v in report.variants if v.name not in measured]
    if unmeasured:
        notes.append(f"No latency measured for: {', '.join(unmeasured)}.")
    return Section("Latency", tables=tables, notes=notes, plots=["latency"])


def _latency_row(entry: Latency, group: list[Latency], baseline: str | None) -> tuple:
    one_by_one = " (one by one)" if entry.batch > 1 and not entry.batched else ""
    return (
        entry.variant,
        num(entry.p50_ms, 1),
        num(entry.p90_ms, 1),
        num(entry.p99_ms, 1),
        num(entry.ms_per_image, 1),
        num(entry.images_per_s, 2),
        "baseline" if entry.variant == baseline else times(_speedup(entry, group, baseline)),
        num(entry.gmacs_per_s, 1),
        pct(entry.of_ceiling, 0),  # measured against the same process's GEMM
        text(entry.tiles) + one_by_one,
        text(entry.runs),
    )


def _speedup(entry: Latency, group: list[Latency], baseline: str | None) -> float | None:
    """The baseline's p50 over this entry's p50 at the same size, threads and batch."""
    base = next((e for e in group if e.variant == baseline), None)
    return ratio(base.p50_ms, entry.p50_ms) if base else None
