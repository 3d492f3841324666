"""The report's "Objects" section: per variant, the labelled objects it found and the false ones
it marked, beside its pixel Dice, and recall per object size (`benchmarks.objects`).
"""

from __future__ import annotations

from benchmarks.report_parts import Section, Table, num, pct
from benchmarks.schema import ObjectScores, Report, SizeBin, plural

NOTE = (
    "Objects are the 8-connected components of the labels' foreground (of each foreground class "
    "on its own, pooled). A labelled object is found when the variant's mask covers at least "
    "one of its pixels: a production line needs the defect flagged, and the pixel Dice already "
    "scores its outline. False: predicted components that touch no labelled pixel. Recall is "
    "pooled over all images; sizes are equivalent diameters sqrt(4 * area / pi) in px. An "
    "object's Dice is against the union of the predicted components that overlap it (0 when "
    "missed). Blank images: images with labelled objects on which the variant marked no "
    "foreground at all."
)


def objects_section(report: Report) -> Section | None:
    """None for a report without per-object scores (no labels, or made before them)."""
    accuracy = report.accuracy
    if accuracy is None:
        return None
    rows: list[tuple[str, float | None, ObjectScores]] = []
    if accuracy.float_model is not None and accuracy.float_model.objects is not None:
        rows.append(
            (
                "float (Keras)",
                accuracy.float_model.overall.dice_vs_truth,
                accuracy.float_model.objects,
            )
        )
    rows += [
        (name, scores.overall.dice_vs_truth, scores.objects)
        for name, scores in accuracy.variants.items()
        if scores.objects is not None
    ]
    if not rows:
        return None
    first = rows[0][2]
    bins = _bins([objects for _, _, objects in rows])
    tables = [_recall_table(rows, bins), _dice_table(rows, bins)] if bins else []
    fact = (
        f"{plural(first.labelled, 'labelled object')} in {first.labelled_images} of "
        f"{plural(first.images, 'image')}"
    )
    return Section("Objects", facts=[("Labels", fact)], tables=tables, notes=[NOTE])


def _bins(scores: list[ObjectScores]) -> dict[str, int]:
    """Bin name -> its labelled objects, smallest first (every variant has the same labels)."""
    found: dict[str, int] = {}
    for objects in scores:
        for b in objects.bins:
            found.setdefault(b.bin, b.count)
    return found


def _bin(objects: ObjectScores, name: str) -> SizeBin | None:
    return next((b for b in objects.bins if b.bin == name), None)


def _recall_table(
    rows: list[tuple[str, float | None, ObjectScores]], bins: dict[str, int]
) -> Table:
    headers = (
        "variant",
        "Dice (pixels)",
        "found",
        "object recall",
        "false / image",
        "blank images",
        *(f"recall {name} px ({count})" for name, count in bins.items()),
    )
    body = [
        (
            name,
            num(dice, 4),
            f"{o.found} / {o.labelled}",
            pct(o.recall, 1),
            num(o.false_per_image, 2),
            str(o.blank_images),
            *(pct(b.recall if (b := _bin(o, n)) else None, 1) for n in bins),
        )
        for name, dice, o in rows
    ]
    caption = "Labelled objects found, and false components, per variant"
    return Table(headers, body, "l" + "r" * (len(headers) - 1), caption=caption)


def _dice_table(rows: list[tuple[str, float | None, ObjectScores]], bins: dict[str, int]) -> Table:
    headers = ("variant", *(f"{name} px ({count})" for name, count in bins.items()))
    body = [
        (name, *(num(b.mean_dice if (b := _bin(o, n)) else None, 3) for n in bins))
        for name, _, o in rows
    ]
    caption = "Mean object Dice per size (equivalent diameter)"
    return Table(headers, body, "l" + "r" * len(bins), caption=caption)
