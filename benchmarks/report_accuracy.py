"""The report's "Accuracy" section: every variant's pooled scores against the labels and the
float model, the threshold each bundle's masks are made at, and the int8 method kept."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num, pct, signed, text
from benchmarks.schema import MAIN, Accuracy, Int8Choice, Report, Scores, Threshold, plural

_ACCURACY_COLUMNS = (  # Scores field, header, formatter
    ("dice_vs_truth", "Dice vs truth", lambda v: num(v, 4)),
    ("iou_vs_truth", "IoU vs truth", lambda v: num(v, 4)),
    ("accuracy_vs_truth", "pixel accuracy", lambda v: pct(v, 2)),
    ("dice_drop", "Dice drop", lambda v: signed(v, 4)),
    ("agreement_with_float", "agreement with float", lambda v: pct(v, 2)),
    ("dice_vs_float", "Dice vs float", lambda v: num(v, 4)),
    ("max_abs_error", "max abs prob. error", lambda v: num(v, 3)),
    ("mean_abs_error", "mean abs prob. error", lambda v: num(v, 4)),
)


def accuracy_section(report: Report) -> Section | None:
    accuracy = report.accuracy
    if accuracy is None or not (accuracy.float_model or accuracy.variants):
        return None
    rows: list[tuple[str, Scores]] = []
    if accuracy.float_model is not None:
        rows.append(("float (Keras)", accuracy.float_model.overall))
    rows += [(name, result.overall) for name, result in accuracy.variants.items()]
    columns = [c for c in _ACCURACY_COLUMNS if any(getattr(r, c[0]) is not None for _, r in rows)]
    table = Table(
        ("variant", *(header for _, header, _ in columns)),
        [(name, *(fmt(getattr(r, key)) for key, _, fmt in columns)) for name, r in rows],
        "l" + "r" * len(columns),
    )
    notes = [
        "Agreement with float: the share of pixels whose class matches the float model's mask."
    ]
    if accuracy.has_labels:
        notes.append(
            "Dice drop: the float model's Dice vs truth minus the variant's (above 0 is worse)."
        )
    else:
        notes.append("The data has no labels: variants are judged by agreement with float.")
    return Section("Accuracy", facts=_accuracy_facts(accuracy), tables=[table], notes=notes)


def _accuracy_facts(accuracy: Accuracy) -> list[tuple[str, str]]:
    """The threshold each bundle's masks are made at, and which int8 method the main one took
    (reports made before these were recorded show neither)."""
    facts = [
        ("Masks" if label == MAIN else f"Masks [{label}]", threshold_fact(threshold))
        for label, threshold in sorted(accuracy.thresholds.items(), key=lambda i: i[0] != MAIN)
    ]
    if accuracy.int8_choice is not None:
        facts.append(("int8 model", _int8_choice_fact(accuracy.int8_choice)))
    return facts


def threshold_fact(threshold: Threshold) -> str:
    """'threshold 0.45 (calibrated on 5 validation images: float Dice 0.8123 there, 0.8050 at
    0.5)', or 'threshold 0.5' for a bundle that did not calibrate."""
    if threshold.threshold is None:
        return "the argmax of the softmax (no threshold)"
    said = f"threshold {threshold.threshold:g}"
    if threshold.images is None:
        return said
    return (
        f"{said} (calibrated on {plural(threshold.images, 'validation image')}: float Dice "
        f"{num(threshold.dice, 4)} there, {num(threshold.dice_at_default, 4)} at 0.5)"
    )


_METHODS = {"qat": "QAT", "ptq": "post-training"}


def _int8_choice_fact(choice: Int8Choice) -> str:
    """'QAT, by Dice against the labels (QAT: Dice 0.8123, agreement 99.10 %; ...)'."""
    figures = "; ".join(
        f"{_METHODS[key]}: Dice {num(scores.dice_vs_truth, 4)}, agreement with float "
        f"{pct(scores.agreement_with_float, 2)}"
        for key, scores in (("qat", choice.qat), ("ptq", choice.ptq))
        if scores is not None
    )
    chosen = _METHODS.get(choice.chosen or "", text(choice.chosen))
    return f"{chosen}, by {text(choice.by)}" + (f" ({figures})" if figures else "")
