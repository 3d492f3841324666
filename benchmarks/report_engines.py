"""The report's "Engines side by side" section: each engine's fastest model of the main
bundle at each size, from the same interleaved latency run."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num, pct, ratio, times
from benchmarks.schema import MAIN, Latency, Report, plural


def engines_section(report: Report) -> Section | None:
    """The fastest model of the main bundle on each engine, per size, from the same
    interleaved run as the latency tables (the most threads, batch 1)."""
    engines = {v.name: v.engine for v in report.variants if v.bundle == MAIN and v.engine}
    threads = max((e.threads for e in report.latency), default=0)
    tables = []
    for (size, t, batch), entries in report.latency_groups().items():
        if t != threads or batch != 1:
            continue
        best: dict[str, Latency] = {}
        for e in entries:
            engine = engines.get(e.variant)
            if engine and (engine not in best or e.p50_ms < best[engine].p50_ms):
                best[engine] = e
        fastest = min((e.p50_ms for e in best.values()), default=None)
        rows = [
            (
                engine,
                e.variant,
                num(e.p50_ms, 1),
                times(ratio(e.p50_ms, fastest)),
                pct(e.of_ceiling, 0),
                pct(e.of_int8_ceiling, 0),
            )
            for engine, e in sorted(best.items(), key=lambda item: item[1].p50_ms)
        ]
        headers = (
            "engine",
            "fastest model",
            "p50 ms",
            "vs fastest",
            "% fp32 ceiling",
            "% int8 ceiling",
        )
        tables.append(
            Table(headers, rows, "llrrrr", caption=f"{size} px, {plural(threads, 'thread')}")
        )
    if not tables:
        return None
    note = (
        "Each engine's fastest model of the main bundle, from the latency run above (the "
        "variants took turns, so the machine's load fell on all alike). vs fastest: its p50 "
        "over the fastest engine's (1.00x is the fastest). % int8 ceiling: an int8 model's "
        "GMAC/s over the int8 GEMM measured through OpenVINO at the same threads."
    )
    return Section("Engines side by side", tables=tables, notes=[note])
