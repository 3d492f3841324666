"""`python -m benchmarks compare OLD.json NEW.json`: what got slower, larger or less accurate.

Latency is matched by (variant, size, threads, batch) on p50, sizes by variant name, accuracy
by Dice vs truth (agreement with float where either report has no labels), cold start by
seconds and peak RSS, test-time augmentation by the Dice that d4 adds (where both reports
measured it with labels). Only regressions beyond the tolerances are findings; improvements are
not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmarks.schema import SCHEMA, Report, Scores, plural
from runtime.errors import UserError
from runtime.log import add_verbosity, configure
from runtime.typed_json import SchemaError

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
    old: Report,
    new: Report,
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
    findings += _tta_gain(old, new, dice_tolerance)
    findings += _cold_start(old, new, latency_tolerance, memory_tolerance)
    return findings


def _missing_variants(old: Report, new: Report) -> dict[str, str]:
    """Variants of `old` that `new` lacks -> why (the new report's skip reason when it gave one)."""
    present = new.variant_names()
    reasons = {s.name: s.reason for s in new.skipped}
    return {
        name: f"skipped: {reasons[name]}" if reasons.get(name) else "not in the new report"
        for name in old.variant_names()
        if name not in present
    }


def _latency(old: Report, new: Report, tolerance: float) -> Iterator[Finding]:
    new_p50 = {(e.variant, e.setting): e.p50_ms for e in new.latency}
    for entry in old.latency:
        size, threads, batch = entry.setting
        what = f"{entry.variant}: p50 at {size} px, {plural(threads, 'thread')}, batch {batch}"
        after = new_p50.get((entry.variant, entry.setting))
        finding = _grown("slower", what, entry.p50_ms, after, tolerance, "ms")
        if finding:
            yield finding


def _sizes(old: Report, new: Report, tolerance: float) -> Iterator[Finding]:
    new_sizes = {v.name: v.size_bytes for v in new.variants}
    for v in old.variants:
        finding = _grown(
            "larger",
            f"{v.name}: file size",
            v.size_bytes,
            new_sizes.get(v.name),
            tolerance,
            "bytes",
        )
        if finding:
            yield finding


def _accuracy(old: Report, new: Report, tolerance: float) -> list[Finding]:
    old_acc, new_acc = _scored(old), _scored(new)
    findings = []
    for name, before in old_acc.items():
        after = new_acc.get(name)
        if after is None:
            continue
        with_truth = before.dice_vs_truth is not None and after.dice_vs_truth is not None
        key = "dice_vs_truth" if with_truth else "agreement_with_float"
        finding = _dropped(name, key, getattr(before, key), getattr(after, key), tolerance)
        if finding:
            findings.append(finding)
    return findings


def _scored(report: Report) -> dict[str, Scores]:
    """Variant name -> its overall scores; the float model's too where it has Dice vs truth."""
    accuracy = report.accuracy
    if accuracy is None:
        return {}
    scored = {name: result.overall for name, result in accuracy.variants.items()}
    reference = accuracy.float_model
    if reference is not None and reference.overall.dice_vs_truth is not None:
        scored = {"float (Keras)": reference.overall, **scored}
    return scored


def _dropped(
    name: str, key: str, old: float | None, new: float | None, tolerance: float
) -> Finding | None:
    if old is None or new is None or old - new <= tolerance:
        return None
    label = "Dice vs truth" if key == "dice_vs_truth" else "agreement with float"
    return Finding("less accurate", f"{name}: {label}", old, new, f"{new - old:+.4f}")


TTA_KIND = "d4"  # the augmentation whose Dice gain is compared


def _tta_gains(report: Report) -> dict[str, float]:
    """Variant -> Dice vs truth with d4 minus without; empty for a report without TTA."""
    if report.tta is None:
        return {}
    gains = {}
    for name, kinds in report.tta.scores.items():
        before, after = kinds.get("none"), kinds.get(TTA_KIND)
        if before is None or after is None:
            continue
        if before.dice_vs_truth is not None and after.dice_vs_truth is not None:
            gains[name] = after.dice_vs_truth - before.dice_vs_truth
    return gains


def _tta_gain(old: Report, new: Report, tolerance: float) -> list[Finding]:
    """A d4 Dice gain that shrank by more than `tolerance` (its own Dice is `_accuracy`'s)."""
    after = _tta_gains(new)
    return [
        Finding(
            "less accurate",
            f"{name}: Dice gain of {TTA_KIND} TTA",
            gain,
            after[name],
            f"{after[name] - gain:+.4f}",
        )
        for name, gain in _tta_gains(old).items()
        if name in after and gain - after[name] > tolerance
    ]


def _cold_start(
    old: Report, new: Report, time_tolerance: float, memory_tolerance: float
) -> Iterator[Finding]:
    after = {e.variant: e for e in new.cold_start}
    for before in old.cold_start:
        now = after.get(before.variant)
        if now is None:
            continue
        name = before.variant
        for finding in (
            _grown(
                "slower", f"{name}: cold start", before.seconds, now.seconds, time_tolerance, "s"
            ),
            _grown(
                "larger",
                f"{name}: peak RSS",
                before.peak_rss_mb,
                now.peak_rss_mb,
                memory_tolerance,
                "MB",
            ),
        ):
            if finding:
                yield finding


def _grown(
    kind: str, what: str, old: float | None, new: float | None, tolerance: float, unit: str
) -> Finding | None:
    """A finding when `new` exceeds `old` by more than the relative `tolerance`."""
    if old is None or new is None or old <= 0 or new <= old * (1 + tolerance):
        return None
    return Finding(kind, what, old, new, f"{(new / old - 1) * 100:+.1f} %", unit)


# --------------------------------------------------------------------------------------------
# Reading reports and printing


def load_report(path: Path) -> Report:
    """A report.json (or a folder that holds one); a UserError names what is wrong with it."""
    hint = "give report.json files written by python -m benchmarks"
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: {hint}")
    if path.is_dir():
        raise UserError(f"{path} is a folder without report.json: {hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error}): {hint}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = (
            f"line {error.lineno}: {error.msg}"
            if isinstance(error, json.JSONDecodeError)
            else "not text"
        )
        raise UserError(f"{path} is not JSON ({reason}): {hint}") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise UserError(f'{path} is not a benchmark report (no "schema" key): {hint}')
    if data["schema"] != SCHEMA:
        raise UserError(
            f"{path} has report schema {data['schema']!r}; this compare reads schema {SCHEMA}"
        )
    try:
        return Report.from_dict(data)
    except SchemaError as error:
        raise UserError(f"{path} is not a well-formed report ({error}): {hint}") from None


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


def _notes(old: Report, new: Report) -> list[str]:
    """Why numbers may differ without any regression: another machine, other data."""
    notes = []
    cpus = [r.environment.cpu for r in (old, new)]
    if cpus[0] != cpus[1]:
        notes.append(f"note: the reports come from different CPUs ({cpus[0]} vs {cpus[1]})")
    data = [r.accuracy.data if r.accuracy else None for r in (old, new)]
    images = [len(r.accuracy.images) if r.accuracy else 0 for r in (old, new)]
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
