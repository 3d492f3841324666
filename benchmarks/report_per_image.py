"""The report's "Accuracy per image" section: agreement with float and Dice per held-out
image, folded away in the HTML, with the parity plot."""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num, pct
from benchmarks.schema import Accuracy, Report, VariantScores


def per_image_section(report: Report) -> Section | None:
    tables = _per_image_tables(report.accuracy) if report.accuracy else []
    return Section("Accuracy per image", tables=tables, plots=["parity"]) if tables else None


def _per_image_tables(accuracy: Accuracy) -> list[Table]:
    variants, images = accuracy.variants, accuracy.images
    if not images or not variants:
        return []
    names = list(variants)

    def value(scores: VariantScores | None, image: str, key: str) -> float | None:
        found = scores.per_image.get(image) if scores else None
        return getattr(found, key) if found else None

    tables = [
        Table(
            ("image", *names),
            [
                (i, *(pct(value(variants[n], i, "agreement_with_float"), 2) for n in names))
                for i in images
            ],
            "l" + "r" * len(names),
            caption="Agreement with float per image",
            collapsed=True,
        )
    ]
    if accuracy.has_labels:
        rows = [
            (
                i,
                num(value(accuracy.float_model, i, "dice_vs_truth"), 4),
                *(num(value(variants[n], i, "dice_vs_truth"), 4) for n in names),
            )
            for i in images
        ]
        headers = ("image", "float (Keras)", *names)
        tables.append(
            Table(headers, rows, "l" + "r" * (len(headers) - 1), "Dice vs truth per image", True)
        )
    return tables
