"""The report's "Cold start and memory" section: a fresh process per variant, in phases, with
its peak RSS and whether TensorFlow got imported."""

from __future__ import annotations

from benchmarks.report_parts import DASH, Section, Table, num
from benchmarks.schema import Report


def cold_start_section(report: Report) -> Section | None:
    entries = report.cold_start
    if not entries:
        return None
    rows = [
        (
            e.variant,
            num(e.seconds, 3),
            num(e.import_s, 3),
            num(e.load_s, 3),
            num(e.first_inference_s, 3),
            num(e.peak_rss_mb, 1),
            {True: "yes", False: "no"}.get(e.tensorflow_imported, DASH),
            e.error or "",
        )
        for e in entries
    ]
    headers = (
        "variant",
        "total s",
        "import s",
        "load s",
        "first inference s",
        "peak RSS MB",
        "TensorFlow loaded",
        "error",
    )
    if not any(e.error for e in entries):  # the column only when a process failed
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    sizes = sorted({e.size for e in entries if e.size is not None})
    image = f"one {' / '.join(map(str, sizes))} px image" if sizes else "one image"
    return Section(
        "Cold start and memory",
        tables=[Table(headers, rows, "lrrrrrll"[: len(headers)])],
        notes=[
            f"A fresh process: import, load the model (SHA-256 checked), segment {image} "
            "through the runtime; total includes starting Python. Peak RSS is the process's "
            "high-water mark (VmHWM), MB = 10^6 bytes."
        ],
    )
