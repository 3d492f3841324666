"""The trade between speed and accuracy: the Pareto front of (milliseconds, Dice) points and the
pair to deploy under a Dice budget.

`front` and `recommend` are pure functions of plain numbers; `pareto_of` reads a measured
`Report` (with which pairs verified on this device, `benchmarks.verification`) into the record
that report.json keeps (`benchmarks.schema.Pareto`) and the report's section and plot show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from benchmarks.schema import Pareto, ParetoPoint, Report, Skipped

SIZE = 512  # px: the size the trade is timed at, where it was measured (else the largest)
_EPSILON = 1e-12


def front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the (cost, value) points on the Pareto front, lowest cost first.

    A point is off the front when another is at least as cheap and at least as good and better
    in one of the two (for latency: at least as fast and as accurate, and faster or more
    accurate). Of two points with the same cost the better one stays; two identical points both
    stay (neither beats the other). Points whose cost or value is not finite are left out.
    Ties in cost keep the input's order.
    """
    usable = [i for i, (c, v) in enumerate(points) if math.isfinite(c) and math.isfinite(v)]

    def beaten(i: int) -> bool:
        cost, value = points[i]
        return any(
            points[j][0] <= cost and points[j][1] >= value and points[j] != points[i]
            for j in usable
        )

    return sorted((i for i in usable if not beaten(i)), key=lambda i: points[i][0])


def recommend(points: Sequence[tuple[float, float]], reference: float, budget: float) -> int | None:
    """The index of the fastest (lowest-cost) point whose value is at least `reference` less
    `budget`, the more accurate of equally fast ones (then the first); None when none is.

    The fastest point within the budget is always on the front: a point that beat it would be
    within the budget too and no slower.
    """
    eligible = [
        i
        for i, (c, v) in enumerate(points)
        if math.isfinite(c) and math.isfinite(v) and within(v, reference, budget)
    ]
    return min(eligible, key=lambda i: (points[i][0], -points[i][1], i), default=None)


def within(value: float, reference: float, budget: float) -> bool:
    """Whether `value` loses at most `budget` against `reference` (a float's rounding is no
    loss)."""
    return value >= reference - budget - _EPSILON


def timed_setting(report: Report) -> tuple[int, int] | None:
    """(size, threads) the trade is timed at: 512 px where it was measured, else the largest
    size, with the most threads measured (every core where `--threads` had 0), at batch 1."""
    single = [e for e in report.latency if e.batch == 1]
    if not single:
        return None
    sizes = {e.size for e in single}
    size = SIZE if SIZE in sizes else max(sizes)
    return size, max(e.threads for e in single if e.size == size)


def pareto_of(
    report: Report,
    verified: Mapping[str, str | None],
    budget: float,
    budget_from: str,
) -> Pareto | None:
    """Dice against p50 ms of every deployable (model, engine) pair of every bundle that
    verified on this device, the front and the recommended pair; None without timings or Dice.

    Args:
        verified: variant name -> None where it passed its bundle's golden-tile check here,
            else why not (`benchmarks.verification.verify_variants`); a pair missing from it
            is left out as not checked.
        budget: the Dice a recommended pair may lose against the float model.
        budget_from: where the budget came from, said in the report.
    """
    setting = timed_setting(report)
    accuracy = report.accuracy
    if setting is None or accuracy is None:
        return None
    size, threads = setting
    score = "dice_vs_truth" if accuracy.has_labels else "dice_vs_float"
    float_dice = (
        (accuracy.float_model.overall.dice_vs_truth if accuracy.float_model else None)
        if accuracy.has_labels
        else 1.0  # the float model's mask against itself
    )
    p50 = {e.variant: e.p50_ms for e in report.latency if e.setting == (size, threads, 1)}
    points: list[ParetoPoint] = []
    left_out: list[Skipped] = []
    for variant in report.variants:
        if variant.format == "keras":
            continue  # the float reference, not a deployable pair
        scores = accuracy.variants.get(variant.name)
        dice = getattr(scores.overall, score) if scores else None
        why = verified.get(variant.name, "not checked on the golden tiles")
        if why is not None:
            left_out.append(Skipped(variant.name, why))
        elif variant.name not in p50:
            left_out.append(Skipped(variant.name, f"not timed at {size} px, {threads} threads"))
        elif dice is None or not math.isfinite(dice):
            left_out.append(Skipped(variant.name, "not scored"))
        else:
            points.append(
                ParetoPoint(variant.name, p50[variant.name], dice, variant.bundle, variant.engine)
            )
    if not points:
        return None
    xy = [(p.ms, p.dice) for p in points]
    best = recommend(xy, float_dice, budget) if float_dice is not None else None
    return Pareto(
        size=size,
        threads=threads,
        score=score,
        float_dice=float_dice,
        reference=accuracy.reference,
        budget=budget,
        budget_from=budget_from,
        points=tuple(points),
        front=tuple(points[i].variant for i in front(xy)),
        recommended=points[best].variant if best is not None else None,
        left_out=tuple(left_out),
    )
