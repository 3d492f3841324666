"""The report's "Test-time augmentation" section: per runtime model, its Dice with each kind
and what each costs per image at each size (`benchmarks.tta`)."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, finite, num, pct, pp, ratio, signed, text, times
from benchmarks.schema import Report, Tta, TtaLatency, plural


def tta_section(report: Report) -> Section | None:
    """Per runtime model: its Dice with each TTA kind and the gain of d4; its time per image at
    each size with each kind and the ratio to none."""
    tta = report.tta
    if tta is None or not (tta.scores or tta.latency):
        return None
    scores = _tta_scores_table(report, tta)
    tables = [scores] if scores else []
    by_size: dict[int, list[TtaLatency]] = {}
    for entry in tta.latency:
        by_size.setdefault(entry.size, []).append(entry)
    tables += [_tta_latency_table(size, by_size[size], tta.kinds) for size in sorted(by_size)]
    note = (
        "Test-time augmentation (the runtime's tta): the model's probabilities averaged over "
        "the 4 flips (flips) or the 8 flips and rotations (d4) of the image, then thresholded "
        "as without. Scored on the held-out images of the accuracy table (none is its figure); "
        "agreement with float is against the float model without augmentation, so it may fall "
        "where Dice rises. Timed: Segmenter.predict on one image, the kinds taking turns "
        "(p50); the views of one orientation run as one batch where the memory budget allows."
    )
    if finite(tta.wall_seconds):
        note += f" Measuring augmentation added {num(tta.wall_seconds, 0)} s to this run."
    notes = [note]
    return Section("Test-time augmentation", tables=tables, notes=notes)


def _tta_scores_table(report: Report, tta: Tta) -> Table | None:
    if not tta.scores:
        return None
    kinds = tta.kinds or tuple(dict.fromkeys(k for kinds in tta.scores.values() for k in kinds))
    has_truth = any(s.dice_vs_truth is not None for v in tta.scores.values() for s in v.values())
    key, label = ("dice_vs_truth", "Dice") if has_truth else ("agreement_with_float", "agreement")
    best = "d4" if "d4" in kinds else kinds[-1]  # the most views

    def value(name: str, kind: str, field: str) -> float | None:
        scores = tta.scores[name].get(kind)
        return getattr(scores, field) if scores else None

    def gain(name: str) -> float | None:
        after, before = value(name, best, key), value(name, "none", key)
        return after - before if finite(after) and finite(before) else None

    names = [n for n in report.variant_names() if n in tta.scores]
    names += [n for n in tta.scores if n not in names]
    fmt = (lambda v: num(v, 4)) if has_truth else (lambda v: pct(v, 2))
    rows = [
        (
            name,
            *(fmt(value(name, kind, key)) for kind in kinds),
            signed(gain(name), 4) if has_truth else pp(gain(name)),
            *(pct(value(name, kind, "agreement_with_float"), 2) for kind in kinds if has_truth),
        )
        for name in names
    ]
    headers = (
        "variant",
        *(f"{label} {kind}" for kind in kinds),
        f"{best} gain",
        *(f"agreement {kind}" for kind in kinds if has_truth),
    )
    images = len(report.accuracy.images) if report.accuracy else 0
    what = "Dice vs truth" if has_truth else "Agreement with float"
    caption = f"{what} on the {plural(images, 'held-out image')}" if images else what
    return Table(headers, rows, "l" + "r" * (len(headers) - 1), caption=caption)


def _tta_latency_table(size: int, entries: list[TtaLatency], kinds: tuple[str, ...]) -> Table:
    kinds = kinds or tuple(dict.fromkeys(e.tta for e in entries))
    ms = {(e.variant, e.tta): e for e in entries}
    names = list(dict.fromkeys(e.variant for e in entries))
    others = [k for k in kinds if k != "none"]

    def p50(name: str, kind: str) -> float | None:
        entry = ms.get((name, kind))
        return entry.p50_ms if entry else None

    rows = [
        (
            name,
            *(num(p50(name, kind), 1) for kind in kinds),
            *(times(ratio(p50(name, kind), p50(name, "none"))) for kind in others),
            text(min((e.runs for e in entries if e.variant == name and e.runs), default=None)),
        )
        for name in names
    ]
    headers = (
        "variant",
        *(f"{kind} ms" for kind in kinds),
        *(f"{kind} / none" for kind in others),
        "runs",
    )
    threads = entries[0].threads
    caption = f"ms per image, {size} px, {plural(threads, 'thread')}, p50"
    return Table(headers, rows, "l" + "r" * (len(headers) - 1), caption=caption)
