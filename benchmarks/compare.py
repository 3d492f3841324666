"""`python -m benchmarks compare OLD.json NEW.json`: what got slower, larger or less accurate.

Latency is matched by (variant, size, threads, batch) on p50, sizes by variant name, accuracy
by Dice vs truth (agreement with float where either report has no labels), cold start by
seconds and peak RSS. Only regressions beyond the tolerances are findings; improvements are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.errors import UserError
from runtime.log import add_verbosity, configure

SCHEMA = 1
KINDS = ("slower", "larger", "less accurate", "missing")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One regression. `old` and `new` are raw numbers in `unit`; None for a missing variant."""

    kind: str  # one of KINDS
    what: str
    old: float | None
    new: float | None
    change: str
    unit: str = ""  # "ms", "s", "bytes", "MB", or "" for scores


# --------------------------------------------------------------------------------------------
# Comparing


def compare_reports(
    old: dict,
    new: dict,
    latency_tolerance: float = 0.10,
    size_tolerance: float = 0.005,
    dice_tolerance: float = 0.005,
    memory_tolerance: float = 0.05,
) -> list[Finding]:
    """Regressions of `new` against `old`.

    Args:
        latency_tolerance: relative growth of p50 latency and cold-start seconds that is noise.
        size_tolerance: relative growth of a model file that is allowed.
        dice_tolerance: absolute drop of Dice (or agreement with float) that is allowed.
        memory_tolerance: relative growth of cold-start peak RSS that is noise.
    """
    gone = _missing_variants(old, new)
    findings = [Finding("missing", name, None, None, reason) for name, reason in gone.items()]
    # A missing variant has no new numbers, so the comparisons below skip it by themselves.
    findings += _latency(old, new, latency_tolerance)
    findings += _sizes(old, new, size_tolerance)
    findings += _accuracy(old, new, dice_tolerance)
    findings += _cold_start(old, new, latency_tolerance, memory_tolerance)
    return findings


def _missing_variants(old: dict, new: dict) -> dict[str, str]:
    """Variants of `old` that `new` lacks -> why (the new report's skip reason when it gave one)."""
    present = _variant_names(new)
    reasons = {s.get("name"): s.get("reason") for s in _entries(new, "skipped")}
    return {
        name: f"skipped: {reasons[name]}" if reasons.get(name) else "not in the new report"
        for name in _variant_names(old)
        if name not in present
    }


def _variant_names(report: dict) -> list[str]:
    names = [v["name"] for v in _entries(report, "variants") if "name" in v]
    for entry in [*_entries(report, "latency"), *_entries(report, "cold_start")]:
        if entry.get("variant") is not None and entry["variant"] not in names:
            names.append(entry["variant"])
    names += [n for n in _accuracy_of(report) if n not in names]
    return names


def _latency(old: dict, new: dict, tolerance: float) -> Iterator[Finding]:
    new_p50 = {_latency_key(e): e.get("p50_ms") for e in _entries(new, "latency")}
    for entry in _entries(old, "latency"):
        key = _latency_key(entry)
        variant, size, threads, batch = key
        what = f"{variant}: p50 at {size} px, {_plural(threads, 'thread')}, batch {batch}"
        finding = _grown("slower", what, entry.get("p50_ms"), new_p50.get(key), tolerance, "ms")
        if finding:
            yield finding


def _latency_key(entry: dict) -> tuple[Any, Any, Any, Any]:
    return (entry.get("variant"), entry.get("size"), entry.get("threads"), entry.get("batch", 1))


def _sizes(old: dict, new: dict, tolerance: float) -> Iterator[Finding]:
    new_sizes = {v.get("name"): v.get("size_bytes") for v in _entries(new, "variants")}
    for variant in _entries(old, "variants"):
        name = variant.get("name")
        finding = _grown(
            "larger",
            f"{name}: file size",
            variant.get("size_bytes"),
            new_sizes.get(name),
            tolerance,
            "bytes",
        )
        if finding:
            yield finding


def _accuracy(old: dict, new: dict, tolerance: float) -> list[Finding]:
    old_acc, new_acc = _accuracy_of(old), _accuracy_of(new)
    old_float, new_float = _float_overall(old), _float_overall(new)
    findings = []
    if "dice_vs_truth" in old_float and "dice_vs_truth" in new_float:
        old_acc = {"float (Keras)": old_float, **old_acc}
        new_acc = {"float (Keras)": new_float, **new_acc}
    for name, before in old_acc.items():
        after = new_acc.get(name)
        if after is None:
            continue
        key = (
            "dice_vs_truth"
            if _both_numbers(before, after, "dice_vs_truth")
            else "agreement_with_float"
        )
        finding = _dropped(name, key, before.get(key), after.get(key), tolerance)
        if finding:
            findings.append(finding)
    return findings


def _dropped(name: str, key: str, old: Any, new: Any, tolerance: float) -> Finding | None:
    if not (_is_number(old) and _is_number(new)) or old - new <= tolerance:
        return None
    label = "Dice vs truth" if key == "dice_vs_truth" else "agreement with float"
    return Finding("less accurate", f"{name}: {label}", float(old), float(new), f"{new - old:+.4f}")


def _cold_start(
    old: dict, new: dict, time_tolerance: float, memory_tolerance: float
) -> Iterator[Finding]:
    after = {e.get("variant"): e for e in _entries(new, "cold_start")}
    for before in _entries(old, "cold_start"):
        name = before.get("variant")
        if name not in after:
            continue
        for finding in (
            _grown(
                "slower",
                f"{name}: cold start",
                before.get("seconds"),
                after[name].get("seconds"),
                time_tolerance,
                "s",
            ),
            _grown(
                "larger",
                f"{name}: peak RSS",
                before.get("peak_rss_mb"),
                after[name].get("peak_rss_mb"),
                memory_tolerance,
                "MB",
            ),
        ):
            if finding:
                yield finding


def _grown(kind: str, what: str, old: Any, new: Any, tolerance: float, unit: str) -> Finding | None:
    """A finding when `new` exceeds `old` by more than the relative `tolerance`."""
    if not (_is_number(old) and _is_number(new)) or old <= 0 or new <= old * (1 + tolerance):
        return None
    return Finding(kind, what, float(old), float(new), f"{(new / old - 1) * 100:+.1f} %", unit)


def _entries(report: dict, key: str) -> list[dict]:
    value = report.get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _accuracy_of(report: dict) -> dict[str, dict]:
    """Variant name -> its overall accuracy."""
    variants = _dict(_dict(report.get("accuracy")).get("variants"))
    return {
        name: result["overall"]
        for name, result in variants.items()
        if isinstance(result, dict) and isinstance(result.get("overall"), dict)
    }


def _float_overall(report: dict) -> dict:
    return _dict(_dict(_dict(report.get("accuracy")).get("float")).get("overall"))


def _dict(value: Any) -> dict:
    """`value` when it is a dict, else an empty one: a hand-edited report must not crash us."""
    return value if isinstance(value, dict) else {}


def _both_numbers(a: dict, b: dict, key: str) -> bool:
    return _is_number(a.get(key)) and _is_number(b.get(key))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plural(count: Any, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


# --------------------------------------------------------------------------------------------
# Reading reports and printing


def load_report(path: Path) -> dict:
    """A report.json (or a folder that holds one); a UserError names what is wrong with it."""
    hint = "give report.json files written by python -m benchmarks"
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: {hint}")
    if path.is_dir():
        raise UserError(f"{path} is a folder without report.json: {hint}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error}): {hint}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = (
            f"line {error.lineno}: {error.msg}"
            if isinstance(error, json.JSONDecodeError)
            else "not text"
        )
        raise UserError(f"{path} is not JSON ({reason}): {hint}") from None
    _check_report(report, path, hint)
    return report


def _check_report(report: Any, path: Path, hint: str) -> None:
    if not isinstance(report, dict) or "schema" not in report:
        raise UserError(f'{path} is not a benchmark report (no "schema" key): {hint}')
    if report["schema"] != SCHEMA:
        raise UserError(
            f"{path} has report schema {report['schema']!r}; this compare reads schema {SCHEMA}"
        )
    for key, kind in (
        ("variants", list),
        ("latency", list),
        ("cold_start", list),
        ("skipped", list),
        ("accuracy", dict),
    ):
        if key in report and not isinstance(report[key], kind | None):
            raise UserError(
                f'{path} is not a well-formed report ("{key}" is not a {kind.__name__}): {hint}'
            )


def format_findings(findings: list[Finding]) -> str:
    """An aligned plain-text table, one finding per line."""
    rows = [("kind", "what", "old", "new", "change")]
    rows += [
        (f.kind, f.what, _value(f.old, f.unit), _value(f.new, f.unit), f.change) for f in findings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 1e6:.3f} MB"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.4f}"


def _notes(old: dict, new: dict) -> list[str]:
    """Why numbers may differ without any regression: another machine, other data."""
    notes = []
    cpus = [_dict(r.get("environment")).get("cpu") for r in (old, new)]
    if cpus[0] != cpus[1]:
        notes.append(f"note: the reports come from different CPUs ({cpus[0]} vs {cpus[1]})")
    data = [_dict(r.get("accuracy")).get("data") for r in (old, new)]
    images = [len(_dict(r.get("accuracy")).get("images") or []) for r in (old, new)]
    if data[0] != data[1] or images[0] != images[1]:
        notes.append(
            f"note: accuracy was measured on different data ({data[0]}, {images[0]} images "
            f"vs {data[1]}, {images[1]} images)"
        )
    return notes


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0 (e.g. 0.1 for 10 %)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks compare",
        description=(
            "Compare two benchmark reports and print what got slower, larger or less accurate. "
            "Exits 1 when anything regressed, 0 when nothing did, 2 when a report cannot be read."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("old", type=Path, help="the earlier report.json (or its folder)")
    parser.add_argument("new", type=Path, help="the later report.json (or its folder)")
    parser.add_argument(
        "--latency-tolerance",
        type=_fraction,
        default=0.10,
        help="relative growth of p50 latency and cold-start time taken as noise (0.1 = 10 %%)",
    )
    parser.add_argument(
        "--size-tolerance",
        type=_fraction,
        default=0.005,
        help="relative growth of a model file that is allowed",
    )
    parser.add_argument(
        "--dice-tolerance",
        type=_fraction,
        default=0.005,
        help="absolute drop of Dice (agreement with float without labels) that is allowed",
    )
    parser.add_argument(
        "--memory-tolerance",
        type=_fraction,
        default=0.05,
        help="relative growth of cold-start peak RSS taken as noise",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        old, new = load_report(args.old), load_report(args.new)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    findings = compare_reports(
        old,
        new,
        latency_tolerance=args.latency_tolerance,
        size_tolerance=args.size_tolerance,
        dice_tolerance=args.dice_tolerance,
        memory_tolerance=args.memory_tolerance,
    )
    for note in _notes(old, new):
        print(note)
    if not findings:
        print(
            f"no regressions: nothing got slower (> {args.latency_tolerance:.1%}), larger "
            f"(> {args.size_tolerance:.1%}) or less accurate (> {args.dice_tolerance}) "
            f"from {args.old} to {args.new}"
        )
        return 0
    print(f"{len(findings)} regression(s) from {args.old} to {args.new}:")
    print(format_findings(findings))
    return 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
