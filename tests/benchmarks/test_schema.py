"""The report schema: report.json reads into typed fields and writes back the same JSON."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.schema import Latency, Report
from runtime.typed_json import SchemaError, from_json, to_json


def test_a_report_round_trips_through_json(make_report):
    report = Report.from_dict(make_report())
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert report.variants[1].macs == {256: 3_420_000_000, 512: 13_670_000_000}
    assert report.to_dict()["variants"][1]["macs"] == {"256": 3_420_000_000, "512": 13_670_000_000}
    overall = report.accuracy.variants["tflite int8"].overall
    assert (
        overall.dice_vs_truth == 0.798 and report.accuracy.float_model.overall.iou_vs_truth == 0.67
    )


def test_unset_optional_fields_are_left_out_and_nan_is_null():
    entry = Latency("tflite int8", size=256, threads=1, p50_ms=2.0, p90_ms=math.nan)
    written = to_json(entry)
    assert written["p90_ms"] is None and "of_ceiling" not in written and "runs" not in written
    assert written["batch"] == 1  # a field with a default other than None is always written


def test_keys_a_reader_does_not_know_are_ignored(make_report):
    newer = make_report()
    newer["latency"][0]["energy_mj"] = 3.2
    newer["power"] = {"watts": 4}
    assert Report.from_dict(newer) == Report.from_dict(make_report())


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda r: r["accuracy"]["variants"]["tflite int8"]["overall"].update(dice_drop="0.1"),
            "report.accuracy.variants.tflite int8.overall.dice_drop is str, not a number",
        ),
        (lambda r: r["latency"][3].pop("p50_ms"), "report.latency[3] has no 'p50_ms'"),
        (lambda r: r["latency"][0].update(size=True), "report.latency[0].size is bool"),
        (lambda r: r["variants"][0]["macs"].update(big=1), "report.variants[0].macs has key 'big'"),
        (lambda r: r.update(environment=[]), "report.environment is list, not an object"),
    ],
)
def test_a_field_that_does_not_fit_is_named(make_report, change, says):
    report = make_report()
    change(report)
    with pytest.raises(SchemaError) as error:
        Report.from_dict(report)
    assert str(error.value).startswith(says), error.value


def test_tuples_keep_their_length():
    assert from_json(tuple[int, int], [3, 4], "tile") == (3, 4)
    with pytest.raises(SchemaError, match="has 3 items, not 2"):
        from_json(tuple[int, int], [3, 4, 5], "tile")


def test_tta_and_thresholds_round_trip_and_an_older_report_reads_without_them(make_report):
    newer = Report.from_dict(make_report(tta=True))
    assert Report.from_dict(json.loads(json.dumps(newer.to_dict()))) == newer
    assert newer.tta.kinds == ("none", "flips", "d4")
    assert newer.tta.scores["tflite int8"]["d4"].dice_vs_truth == 0.8021
    assert {(e.variant, e.size) for e in newer.tta.latency if e.tta == "d4"} == {
        (n, s) for n in ("tflite fp32", "tflite int8", "onnx fp32") for s in (256, 512)
    }
    assert newer.accuracy.thresholds["main"].threshold == 0.45
    assert newer.accuracy.thresholds["pruned"].images is None
    assert newer.accuracy.int8_choice.chosen == "ptq"
    older = Report.from_dict(make_report())
    assert older.tta is None and older.accuracy.thresholds == {}
    assert older.accuracy.int8_choice is None
    assert "tta" not in older.to_dict()  # what an older reader would not know stays out
