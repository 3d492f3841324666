"""`compare` flags planted regressions, stays quiet on equal reports, and exits 1 / 0 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.compare import Finding, main, parse_args
from benchmarks.compare import compare_reports as compare_typed
from benchmarks.schema import Report


def _entry(report: dict, variant: str, size: int, threads: int, batch: int) -> dict:
    return next(
        e
        for e in report["latency"]
        if (e["variant"], e["size"], e["threads"], e["batch"]) == (variant, size, threads, batch)
    )


def _variant(report: dict, name: str) -> dict:
    return next(v for v in report["variants"] if v["name"] == name)


def _plant_regressions(report: dict) -> dict:
    """30 % slower int8 at 512 px / 2 threads / batch 1, a 10 % larger file, Dice down 0.03."""
    _entry(report, "tflite int8", 512, 2, 1)["p50_ms"] *= 1.3
    _entry(report, "tflite fp32", 256, 1, 4)["p50_ms"] *= 1.05  # within the 10 % tolerance
    _variant(report, "tflite int8 [pruned]")["size_bytes"] = 2_189_000
    report["accuracy"]["variants"]["tflite int8"]["overall"]["dice_vs_truth"] -= 0.03
    return report


def compare_reports(old: dict, new: dict) -> list[Finding]:
    """The planted changes are made in report.json's form; compare reads them typed."""
    return compare_typed(Report.from_dict(old), Report.from_dict(new))


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(parse_args(list(argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_identical_reports_have_no_regressions(make_report):
    assert compare_reports(make_report(), make_report()) == []


def test_planted_slowdown_growth_and_dice_drop_are_flagged(make_report):
    findings = compare_reports(make_report(), _plant_regressions(make_report()))
    by_kind = {f.kind: f for f in findings}
    assert len(findings) == 3 and set(by_kind) == {"slower", "larger", "less accurate"}
    slower = by_kind["slower"]
    assert slower.what == "tflite int8: p50 at 512 px, 2 threads, batch 1"
    assert slower.old == pytest.approx(100.1) and slower.new == pytest.approx(130.13)
    assert slower.change == "+30.0 %" and slower.unit == "ms"
    assert by_kind["larger"] == Finding(
        "larger", "tflite int8 [pruned]: file size", 1_990_000, 2_189_000, "+10.0 %", "bytes"
    )
    drop = by_kind["less accurate"]
    assert drop.what == "tflite int8: Dice vs truth" and drop.change == "-0.0300"


def test_improvements_are_not_findings(make_report):
    new = make_report()
    for entry in new["latency"]:
        entry["p50_ms"] *= 0.5
    _variant(new, "tflite int8")["size_bytes"] //= 2
    assert compare_reports(make_report(), new) == []


def test_a_vanished_variant_is_missing_with_the_reason(make_report):
    new = make_report()
    new["variants"] = [v for v in new["variants"] if v["name"] != "onnx fp32"]
    new["latency"] = [e for e in new["latency"] if e["variant"] != "onnx fp32"]
    del new["accuracy"]["variants"]["onnx fp32"]
    new["skipped"].append({"name": "onnx fp32", "reason": "onnxruntime is not installed"})
    assert compare_reports(make_report(), new) == [
        Finding("missing", "onnx fp32", None, None, "skipped: onnxruntime is not installed")
    ]


def test_without_labels_agreement_with_float_is_compared(make_report):
    old, new = make_report(labels=False), make_report(labels=False)
    new["accuracy"]["variants"]["tflite int8"]["overall"]["agreement_with_float"] = 0.95
    [finding] = compare_reports(old, new)
    assert finding.kind == "less accurate"
    assert finding.what == "tflite int8: agreement with float" and finding.new == 0.95


def test_cold_start_time_and_memory_are_compared(make_report):
    new = make_report()
    new["cold_start"][0] |= {"seconds": 0.60, "peak_rss_mb": 120.0}
    assert [(f.kind, f.what) for f in compare_reports(make_report(), new)] == [
        ("slower", "tflite int8: cold start"),
        ("larger", "tflite int8: peak RSS"),
    ]


def test_cli_exits_1_and_prints_the_table_on_regressions(tmp_path, capsys, make_report):
    old = _write(tmp_path / "old.json", make_report())
    new = _write(tmp_path / "new.json", _plant_regressions(make_report()))
    code, out, err = _run(capsys, str(old), str(new))
    assert code == 1 and err == ""
    assert "3 regression(s)" in out
    for text in ("slower", "larger", "less accurate", "100.1 ms", "130.1 ms", "+30.0 %"):
        assert text in out, text


def test_cli_tolerance_flag_lets_a_slowdown_pass(tmp_path, capsys, make_report):
    new = make_report()
    _entry(new, "tflite int8", 512, 2, 1)["p50_ms"] *= 1.3
    old, new = _write(tmp_path / "old.json", make_report()), _write(tmp_path / "new.json", new)
    assert _run(capsys, str(old), str(new))[0] == 1
    code, out, _ = _run(capsys, str(old), str(new), "--latency-tolerance", "0.5")
    assert code == 0 and out.startswith("no regressions")


def test_cli_exits_0_for_identical_reports_and_accepts_folders(tmp_path, capsys, make_report):
    (tmp_path / "a").mkdir()
    _write(tmp_path / "a" / "report.json", make_report())
    new = _write(tmp_path / "new.json", make_report())
    code, out, err = _run(capsys, str(tmp_path / "a"), str(new))
    assert code == 0 and out.startswith("no regressions") and err == ""


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON (line 1"),
        ("[1, 2]", "is not a benchmark report"),
        ('{"variants": []}', "is not a benchmark report"),
        ('{"schema": 2}', "has report schema 2"),
        ('{"schema": 1, "latency": {}}', "(report.latency is dict, not a list)"),
        ('{"schema": 1, "latency": [{"variant": "a"}]}', "report.latency[0] has no 'size'"),
        ('{"schema": 1, "variants": [{"name": "a", "size_bytes": "1"}]}', "str, not an integer"),
    ],
)
def test_cli_exits_2_with_one_line_for_a_bad_file(tmp_path, capsys, make_report, content, says):
    good = _write(tmp_path / "good.json", make_report())
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, out, err = _run(capsys, str(good), str(bad))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert str(bad) in err


def test_cli_rejects_a_negative_tolerance(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["a.json", "b.json", "--size-tolerance", "-1"])
    assert exit_info.value.code == 2 and "is not a number >= 0" in capsys.readouterr().err


def test_reports_with_and_without_tta_compare_either_way(make_report):
    assert compare_reports(make_report(), make_report(tta=True)) == []
    assert compare_reports(make_report(tta=True), make_report()) == []
    assert compare_reports(make_report(tta=True), make_report(tta=True)) == []
    assert compare_reports(make_report(labels=False, tta=True), make_report(labels=False)) == []


def test_a_shrunken_d4_dice_gain_is_flagged(make_report):
    new = make_report(tta=True)
    new["tta"]["scores"]["tflite int8"]["d4"]["dice_vs_truth"] = 0.794  # gain 0.0041 -> -0.004
    new["tta"]["scores"]["onnx fp32"]["d4"]["dice_vs_truth"] = 0.8025  # -0.002: within 0.005
    for entry in new["tta"]["latency"]:
        entry["p50_ms"] *= 2  # TTA timings are not compared
    [finding] = compare_reports(make_report(tta=True), new)
    assert finding.kind == "less accurate"
    assert finding.what == "tflite int8: Dice gain of d4 TTA"
    assert finding.old == pytest.approx(0.0041) and finding.new == pytest.approx(-0.004)
    assert finding.change == "-0.0081"


def test_cli_compares_an_older_report_with_a_newer_one(tmp_path, capsys, make_report):
    old = _write(tmp_path / "old.json", make_report())
    new = _write(tmp_path / "new.json", make_report(tta=True))
    code, out, err = _run(capsys, str(old), str(new))
    assert code == 0 and out.startswith("no regressions") and err == ""
