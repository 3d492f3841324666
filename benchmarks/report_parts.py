"""What the report's sections are made of: tables, sections and the number formats they share.

`benchmarks.report` renders a list of `Section`s as Markdown and as HTML; each section is built
in a module of its own (`benchmarks.report_latency`, `benchmarks.report_objects`, ...) of these,
so it needs nothing of the writer's.
"""

from __future__ import annotations

import dataclasses
import math

DASH = "—"  # a value that was not measured


@dataclasses.dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    align: str  # one "l" or "r" per column
    caption: str = ""
    collapsed: bool = False  # the HTML folds long tables away under <details>


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    facts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)  # keys of the plots shown here
    only_with_plots: bool = False  # a section that is nothing but its plots


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def num(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if finite(value) else DASH


def pct(fraction: float | None, digits: int) -> str:
    return f"{fraction * 100:.{digits}f} %" if finite(fraction) else DASH


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if finite(a) and finite(b) and b > 0 else None


def scaled(value: float | None, factor: float) -> float | None:
    return value * factor if finite(value) else None


def signed(value: float | None, digits: int) -> str:
    return f"{value:+.{digits}f}" if finite(value) else DASH


def pp(fraction: float | None) -> str:
    """A change of a share, in percentage points."""
    return f"{fraction * 100:+.2f} pp" if finite(fraction) else DASH


def times(value: float | None) -> str:
    return f"{value:.2f}x" if finite(value) else DASH


def text(value: object) -> str:
    return DASH if value is None else str(value)
