"""The report's "Size" section: each variant's file raw and gzipped, against the fp32
TFLite, and its MACs per image at each measured size."""

from __future__ import annotations

from benchmarks.report_parts import DASH, Section, Table, num, pct, ratio, scaled, text
from benchmarks.schema import MAIN, Report, VariantInfo


def size_section(report: Report) -> Section | None:
    variants = report.variants
    if not variants:
        return None
    reference = _size_reference(report)
    mac_sizes = sorted({s for v in variants for s in v.macs})
    headers = (
        "variant",
        "format",
        "precision",
        "file",
        "MB",
        "gzip MB",
        f"% of {reference.name if reference else DASH}",
        *(f"GMAC @ {s} px" for s in mac_sizes),
    )
    rows = [_size_row(v, reference, mac_sizes) for v in variants]
    return Section(
        "Size",
        tables=[Table(headers, rows, "llll" + "r" * (len(headers) - 4))],
        notes=["MB are 10^6 bytes; gzip MB is the file compressed with gzip (a download's size)."],
        plots=["size_vs_dice"],
    )


def _size_row(variant: VariantInfo, reference: VariantInfo | None, mac_sizes: list[int]) -> tuple:
    share = ratio(variant.size_bytes, reference.size_bytes if reference else None)
    return (
        variant.name,
        text(variant.format),
        text(variant.precision),
        text(variant.file),
        num(scaled(variant.size_bytes, 1e-6), 2),
        num(scaled(variant.gzip_bytes, 1e-6), 2),
        pct(share, 1),
        *(num(scaled(variant.macs.get(s), 1e-9), 2) for s in mac_sizes),
    )


def _size_reference(report: Report) -> VariantInfo | None:
    """The fp32 TFLite that sizes are compared with (the baseline if there is none)."""
    variants = report.variants
    fp32 = [v for v in variants if v.format == "tflite" and v.precision == "fp32"]
    main = [v for v in fp32 if v.bundle == MAIN]
    baseline = [v for v in variants if v.name == report.baseline]
    return (main or fp32 or baseline or [None])[0]
