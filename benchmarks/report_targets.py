"""The report's "Targets" section: each claim, its target, what was measured, met or not."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num
from benchmarks.schema import Report


def _digits(target: float) -> int:
    """Speed-ups read well with 2 decimals; Dice budgets (0.01) need 4."""
    return 4 if abs(target) < 0.1 else 2


def targets_section(report: Report) -> Section | None:
    targets = report.targets
    if not targets:
        return None
    rows = [
        (
            t.claim,
            num(t.target, _digits(t.target)),
            num(t.measured, _digits(t.target)),
            "met" if t.met else t.not_judged or "missed",
        )
        for t in targets
    ]
    met = sum(1 for t in targets if t.met)
    busy = sum(1 for t in targets if not t.met and t.not_judged)
    unjudged = f" {busy} not judged: the machine was too busy to measure them." if busy else ""
    note = report.targets_note
    return Section(
        "Targets",
        tables=[Table(("claim", "target", "measured", "result"), rows, "lrrl")],
        notes=[f"{met} of {len(targets)} targets met.{unjudged}", *([note] if note else [])],
    )
