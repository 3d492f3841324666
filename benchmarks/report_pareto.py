"""The report's "Speed against Dice" section: every verified (model, engine) pair of every bundle
by its measured milliseconds and its Dice, the Pareto front, and the pair it recommends under the
Dice budget (`benchmarks.pareto`), with the plot `benchmarks.plots` draws of it.
"""

from __future__ import annotations

from benchmarks.pareto import within
from benchmarks.report_parts import DASH, Section, Table, finite, num, signed, text
from benchmarks.schema import MAIN, Pareto, ParetoPoint, Report, plural

TITLE = "Speed against Dice"
_SCORES = {
    "dice_vs_truth": "Dice against the labels on the held-out images",
    "dice_vs_float": "Dice against the float model's masks (the data has no labels)",
}


def pareto_section(report: Report) -> Section | None:
    """None for a report without the record (made before it, or with nothing timed and scored)."""
    pareto = report.pareto
    if pareto is None:
        return None
    facts = [
        ("Recommended", recommendation(pareto)),
        ("Dice budget", f"{pareto.budget:g} below the float model ({pareto.budget_from})"),
        ("Timed", f"p50 at {pareto.size} px, {plural(pareto.threads, 'thread')}, batch 1"),
        ("Dice", _SCORES.get(pareto.score, pareto.score)),
    ]
    notes = [
        "On the front: no other pair is at least as fast and at least as accurate, and faster "
        "or more accurate (identical pairs both stay). Recommended: the fastest pair whose Dice "
        "is within the budget of the float model's; it is always on the front. Only pairs "
        "that passed their bundle's golden-tile check on this device (runtime.verify's) are "
        "drawn."
    ]
    if pareto.left_out:
        left = "; ".join(f"{s.name} ({s.reason})" for s in pareto.left_out)
        notes.append(f"Left out: {left}.")
    return Section(TITLE, facts=facts, tables=[_table(pareto)], notes=notes, plots=["pareto"])


def recommendation(pareto: Pareto) -> str:
    """'tflite int8 [thin] (litert, bundle thin): 12.3 ms, Dice 0.8050, 0.0019 below the float
    model's 0.8069 (keras fp32)', or why there is none."""
    reference = f" ({pareto.reference})" if pareto.reference else ""
    chosen = next((p for p in pareto.points if p.variant == pareto.recommended), None)
    if chosen is None:
        if not finite(pareto.float_dice):
            return "none: the float model has no Dice to hold the budget against"
        best = max(pareto.points, key=lambda p: p.dice)
        return (
            f"none: no verified pair is within {pareto.budget:g} of the float model's Dice "
            f"{num(pareto.float_dice, 4)}{reference} (the most accurate, {best.variant}, has "
            f"{num(best.dice, 4)})"
        )
    said = f"{_pair(chosen)}: {num(chosen.ms, 1)} ms, Dice {num(chosen.dice, 4)}"
    if not finite(pareto.float_dice):
        return said
    drop = pareto.float_dice - chosen.dice
    against = "equal to" if drop == 0 else f"{abs(drop):.4f} {'below' if drop > 0 else 'above'}"
    return f"{said}, {against} the float model's {num(pareto.float_dice, 4)}{reference}"


def _pair(point: ParetoPoint) -> str:
    where = "" if point.bundle == MAIN else f", bundle {point.bundle}"
    return f"{point.variant} ({text(point.engine)}{where})"


def _table(pareto: Pareto) -> Table:
    on_front = set(pareto.front)
    reference = pareto.float_dice if finite(pareto.float_dice) else None

    def verdict(point: ParetoPoint) -> str:
        if point.variant not in on_front:
            return "no"
        return "yes, recommended" if point.variant == pareto.recommended else "yes"

    rows = [
        (
            p.variant,
            p.bundle,
            text(p.engine),
            num(p.ms, 1),
            num(p.dice, 4),
            DASH if reference is None else signed(reference - p.dice, 4),
            DASH
            if reference is None
            else ("yes" if within(p.dice, reference, pareto.budget) else "no"),
            verdict(p),
        )
        for p in sorted(pareto.points, key=lambda p: (p.ms, -p.dice))
    ]
    headers = (
        "pair",
        "bundle",
        "engine",
        "p50 ms",
        "Dice",
        "Dice drop",
        "within budget",
        "on the front",
    )
    caption = f"{plural(len(rows), 'verified pair')}, fastest first"
    return Table(headers, rows, "lllrrrll", caption=caption)
