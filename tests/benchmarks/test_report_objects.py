"""The report's Objects section (`benchmarks.report_objects`): per variant, object recall, false
components per image and recall per size bin beside pixel Dice; absent without object scores."""

from __future__ import annotations

import numpy as np

from benchmarks.compare import compare_reports
from benchmarks.objects import object_counts, summarize
from benchmarks.report import render_html, render_markdown
from benchmarks.schema import Report


def _summary(found_small: bool, false_blobs: int) -> dict:
    """Two images: one with a 2x2 defect (found or not) and a 10x10 one (found); one with
    nothing labelled and `false_blobs` false blobs."""
    pred, true = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    true[1:3, 1:3] = 1
    true[10:20, 10:20] = 1
    pred[10:20, 10:15] = 1  # half the large one: Dice 2 * 50 / 150
    if found_small:
        pred[1:3, 1:3] = 1
    other_pred, other_true = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    for k in range(false_blobs):
        other_pred[2 + 4 * k, 2] = 1
    return summarize([object_counts(pred, true), object_counts(other_pred, other_true)])


def _with_objects(report: dict) -> dict:
    accuracy = report["accuracy"]
    accuracy["float"]["objects"] = _summary(True, 0)
    accuracy["variants"]["tflite fp32"]["objects"] = _summary(True, 1)
    accuracy["variants"]["tflite int8"]["objects"] = _summary(False, 3)
    return report


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def test_the_objects_section_shows_recall_false_blobs_and_sizes_beside_dice(make_report):
    report = Report.from_dict(_with_objects(make_report(tta=True)))
    markdown = render_markdown(report)
    section = _section(markdown, "Objects")
    assert markdown.index("## Accuracy") < markdown.index("## Objects")
    assert "- **Labels**: 2 labelled objects in 1 of 2 images" in section
    header = (
        "| variant | Dice (pixels) | found | object recall | false / image | blank images "
        "| recall <4 px (1) | recall 8-16 px (1) |"
    )
    assert header in section
    assert "| float (Keras) | 0.8000 | 2 / 2 | 100.0 % | 0.00 | 0 | 100.0 % | 100.0 % |" in section
    assert "| tflite fp32 | 0.8000 | 2 / 2 | 100.0 % | 0.50 | 0 | 100.0 % | 100.0 % |" in section
    assert "| tflite int8 | 0.7980 | 1 / 2 | 50.0 % | 1.50 | 0 | 0.0 % | 100.0 % |" in section
    # The mean object Dice per size: the large one half covered, 2 * 50 / 150
    assert "| tflite int8 | 0.000 | 0.667 |" in section
    assert "| onnx fp32 |" not in section  # no object scores: not listed
    assert "Objects" in _parse_headings(render_html(report, []))


def test_a_report_without_object_scores_has_no_objects_section(make_report, report):
    assert "## Objects" not in render_markdown(report)
    assert "## Objects" not in render_markdown(Report.from_dict(make_report(labels=False)))


def test_object_scores_read_back_and_compare_as_before(make_report):
    report = Report.from_dict(_with_objects(make_report()))
    assert report.accuracy.variants["tflite int8"].objects.recall == 0.5
    assert Report.from_dict(report.to_dict()) == report
    assert compare_reports(report, report) == []


def _parse_headings(page: str) -> str:
    return " ".join(line for line in page.splitlines() if "<h2" in line)
