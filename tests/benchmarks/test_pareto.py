"""The Pareto front and the recommended pair: hand-made points, the report's record, its section
and plot, and report.json files from before it."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from benchmarks.compare import compare_reports, load_report
from benchmarks.pareto import front, pareto_of, recommend, timed_setting, within
from benchmarks.plots import draw_plots
from benchmarks.report import render_html, render_markdown
from benchmarks.schema import Pareto, Report
from benchmarks.verification import DEFAULT_BUDGET, dice_budget, verify_variants

# --------------------------------------------------------------------------------------------
# front and recommend on hand-made (ms, Dice) points


def test_one_point_is_the_front_and_the_pick():
    assert front([(10.0, 0.8)]) == [0]
    assert recommend([(10.0, 0.8)], 0.8, 0.01) == 0
    assert front([]) == [] and recommend([], 0.8, 0.01) is None


def test_dominated_points_are_off_the_front_which_runs_fastest_first():
    points = [(50.0, 0.80), (20.0, 0.79), (30.0, 0.78), (10.0, 0.70), (60.0, 0.80)]
    # (30, 0.78) is slower and worse than (20, 0.79); (60, 0.80) is slower than (50, 0.80).
    assert front(points) == [3, 1, 0]


def test_ties_in_time_keep_the_more_accurate_and_identical_points_both_stay():
    assert front([(10.0, 0.78), (10.0, 0.80)]) == [1]  # as fast, more accurate
    assert front([(12.0, 0.80), (10.0, 0.80)]) == [1]  # as accurate, faster
    assert front([(10.0, 0.80), (10.0, 0.80)]) == [0, 1]  # neither beats the other
    assert front([(10.0, 0.80), (5.0, 0.7), (10.0, 0.80)]) == [1, 0, 2]


def test_unmeasured_points_are_neither_on_the_front_nor_picked():
    points = [(math.nan, 0.9), (10.0, math.nan), (20.0, 0.8), (math.inf, 0.95)]
    assert front(points) == [2]
    assert recommend(points, 0.8, 0.01) == 2


def test_the_pick_is_the_fastest_within_the_budget():
    points = [(100.0, 0.806), (40.0, 0.801), (25.0, 0.790), (10.0, 0.70)]
    assert recommend(points, 0.806, 0.01) == 1  # 0.790 loses 0.016
    assert recommend(points, 0.806, 0.02) == 2
    assert recommend(points, 0.806, 0.0) == 0  # only the float-like model
    assert recommend(points, 0.9, 0.01) is None  # nothing within


def test_the_pick_breaks_ties_in_time_by_dice_then_order():
    assert recommend([(10.0, 0.799), (10.0, 0.800)], 0.8, 0.01) == 1
    assert recommend([(10.0, 0.800), (10.0, 0.800)], 0.8, 0.01) == 0


def test_a_drop_of_exactly_the_budget_is_within_it():
    assert within(0.79, 0.8, 0.01) and not within(0.7899, 0.8, 0.01)
    assert recommend([(5.0, 0.79), (9.0, 0.8)], 0.8, 0.01) == 0


def test_the_pick_is_always_on_the_front():
    points = [(30.0, 0.80), (20.0, 0.795), (20.0, 0.790), (15.0, 0.60), (25.0, 0.795)]
    for budget in (0.0, 0.004, 0.005, 0.01, 0.3):
        assert recommend(points, 0.80, budget) in front(points)


# --------------------------------------------------------------------------------------------
# The report's record (the conftest report: at 512 px and 2 threads the p50s are 130.1 ms
# tflite fp32, 100.1 tflite int8, 97.4 tflite int8 [pruned], 139.3 onnx fp32; Dice 0.80,
# 0.798, 0.79, 0.80 against the float model's 0.80)

ALL_PASS = {
    "tflite fp32": None,
    "tflite int8": None,
    "tflite int8 [pruned]": None,
    "onnx fp32": None,
}


def _pareto(report: Report, verified=None, budget: float = 0.01) -> Pareto:
    found = pareto_of(report, ALL_PASS if verified is None else verified, budget, "a test")
    assert found is not None
    return found


def test_the_record_times_at_512_px_with_the_most_threads(report):
    assert timed_setting(report) == (512, 2)
    pareto = _pareto(report)
    assert (pareto.size, pareto.threads, pareto.score) == (512, 2, "dice_vs_truth")
    assert pareto.float_dice == 0.8 and pareto.reference is None and pareto.budget_from == "a test"
    ms = {p.variant: p.ms for p in pareto.points}
    assert ms == {
        "tflite fp32": 130.1,
        "tflite int8": 100.1,
        "tflite int8 [pruned]": 97.4,
        "onnx fp32": 139.3,
    }
    assert "keras fp32" not in ms  # the float reference is not a deployable pair
    pruned = next(p for p in pareto.points if p.variant == "tflite int8 [pruned]")
    assert pruned.bundle == "pruned" and pruned.dice == 0.79


def test_the_record_names_the_front_and_the_pick_under_the_budget(report):
    pareto = _pareto(report)
    assert pareto.front == ("tflite int8 [pruned]", "tflite int8", "tflite fp32")
    assert pareto.recommended == "tflite int8 [pruned]"  # loses exactly the 0.01 allowed
    assert _pareto(report, budget=0.005).recommended == "tflite int8"
    assert _pareto(report, budget=0.0).recommended == "tflite fp32"


def test_a_size_without_512_px_takes_the_largest(make_report):
    data = make_report()
    data["latency"] = [e for e in data["latency"] if e["size"] == 256]
    assert timed_setting(Report.from_dict(data)) == (256, 2)


def test_pairs_that_fail_verification_or_were_not_timed_are_left_out_with_why(make_report):
    data = make_report()
    data["latency"] = [e for e in data["latency"] if e["variant"] != "onnx fp32"]
    verified = dict(ALL_PASS, **{"tflite int8 [pruned]": "fails its golden tiles here: ..."})
    pareto = _pareto(Report.from_dict(data), verified)
    assert {p.variant for p in pareto.points} == {"tflite fp32", "tflite int8"}
    assert {s.name: s.reason for s in pareto.left_out} == {
        "tflite int8 [pruned]": "fails its golden tiles here: ...",
        "onnx fp32": "not timed at 512 px, 2 threads",
    }
    assert pareto.recommended == "tflite int8"
    unchecked = _pareto(Report.from_dict(data), {"tflite fp32": None})
    assert {s.reason for s in unchecked.left_out} >= {"not checked on the golden tiles"}


def test_without_labels_dice_is_against_the_float_models_masks(make_report):
    pareto = _pareto(Report.from_dict(make_report(labels=False)))
    assert pareto.score == "dice_vs_float" and pareto.float_dice == 1.0
    # dice_vs_float: 0.99, 0.983, 0.975, 0.99 (agreement - 0.01) against 1 for float itself
    assert pareto.recommended == "tflite fp32"
    assert _pareto(Report.from_dict(make_report(labels=False)), budget=0.02).recommended == (
        "tflite int8"
    )
    assert pareto.front[0] == "tflite int8 [pruned]"


def test_nothing_timed_or_scored_is_no_record(make_report):
    assert pareto_of(Report(), {}, 0.01, "") is None
    data = make_report()
    data.pop("accuracy")
    assert pareto_of(Report.from_dict(data), ALL_PASS, 0.01, "") is None
    assert pareto_of(Report.from_dict(make_report()), {}, 0.01, "") is None  # none verified


def test_the_budget_comes_from_the_manifest_else_the_default(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    manifest = {
        "golden": {"max_dice_drop": 0.003},
        "configs": {"quantize": {"max_dice_drop": 0.02}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert dice_budget(bundle) == (0.003, f"{bundle}/manifest.json: golden.max_dice_drop")
    (bundle / "manifest.json").write_text(json.dumps({"configs": manifest["configs"]}))
    assert dice_budget(bundle) == (0.02, f"{bundle}/manifest.json: configs.quantize.max_dice_drop")
    (bundle / "manifest.json").write_text(json.dumps({"configs": {}}))
    budget, said = dice_budget(bundle)
    assert budget == DEFAULT_BUDGET == 0.01 and said.startswith("the default; ")


# --------------------------------------------------------------------------------------------
# In the report


def _with_pareto(data: dict, budget: float = 0.01) -> Report:
    """The conftest report with engines named (as `python -m benchmarks` writes them) and the
    record added."""
    engines = {"tflite": "litert", "onnx": "onnx", "keras": "keras"}
    for variant in data["variants"]:
        variant["engine"] = engines[variant["format"]]
    report = Report.from_dict(data)
    return dataclasses.replace(report, pareto=_pareto(report, budget=budget))


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def test_the_section_names_the_pick_the_budget_and_every_pair(make_report):
    markdown = render_markdown(_with_pareto(make_report()), {"pareto": "plots/pareto.png"})
    section = _section(markdown, "Speed against Dice")
    assert (
        "- **Recommended**: tflite int8 [pruned] (litert, bundle pruned): 97.4 ms, Dice 0.7900, "
        "0.0100 below the float model's 0.8000" in section
    )
    assert "- **Dice budget**: 0.01 below the float model (a test)" in section
    assert "- **Timed**: p50 at 512 px, 2 threads, batch 1" in section
    assert (
        "| tflite int8 [pruned] | pruned | litert | 97.4 | 0.7900 | +0.0100 | yes | yes, recommended |"
        in section
    )
    assert "| onnx fp32 | main | onnx | 139.3 | 0.8000 | +0.0000 | yes | no |" in section
    assert "![pareto](plots/pareto.png)" in section
    # after the targets, before the latency tables
    assert markdown.index("## Targets") < markdown.index("## Speed against Dice")
    assert markdown.index("## Speed against Dice") < markdown.index("## Latency")


def test_no_pair_within_the_budget_says_so(make_report):
    data = make_report()
    data["accuracy"]["float"]["overall"]["dice_vs_truth"] = 0.9
    section = _section(render_markdown(_with_pareto(data)), "Speed against Dice")
    assert (
        "- **Recommended**: none: no verified pair is within 0.01 of the float model's Dice "
        "0.9000 (the most accurate, tflite fp32, has 0.8000)" in section
    )


def test_the_plot_is_drawn_and_shown_in_the_page(make_report):
    report = _with_pareto(make_report())
    plots = draw_plots(report, [])
    caption, png = plots["pareto"]
    assert png.startswith(b"\x89PNG") and "Pareto front" in caption
    page = render_html(report, [])
    assert "<h2>Speed against Dice</h2>" in page and caption.split(";")[0] in page


def test_a_report_from_before_the_record_renders_and_compares(tmp_path, make_report):
    older = make_report()  # no "pareto": a report.json written before it
    assert "pareto" not in older
    path = tmp_path / "old.json"
    path.write_text(json.dumps(older))
    old = load_report(path)
    assert old.pareto is None and "Speed against Dice" not in render_markdown(old)
    assert "pareto" not in draw_plots(old, [])
    new = _with_pareto(make_report())
    (tmp_path / "new.json").write_text(json.dumps(new.to_dict()))
    assert load_report(tmp_path / "new.json") == new  # the record round-trips
    assert compare_reports(old, new) == [] and compare_reports(new, old) == []


@pytest.mark.parametrize("labels", [True, False])
def test_the_record_round_trips_through_report_json(make_report, labels):
    report = _with_pareto(make_report(labels=labels))
    assert Report.from_dict(json.loads(json.dumps(report.to_dict()))) == report


# --------------------------------------------------------------------------------------------
# Verification on this device (the tiny bundle of tests/conftest.py)


def _copy_with(bundle: Path, folder: Path, edit) -> Path:
    copy = folder / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_every_pair_of_a_sound_bundle_verifies_and_the_keras_model_is_no_pair(tiny_bundle):
    from benchmarks.variants import bundle_variants, keras_variant

    variants = bundle_variants("main", tiny_bundle)
    keras, _ = keras_variant(variants, None)
    found = verify_variants([keras, *variants], 1)
    assert found == {v.name: None for v in variants}
    assert dice_budget(tiny_bundle)[1].endswith("manifest.json: golden.max_dice_drop")


def test_a_pair_worse_here_than_at_the_build_or_without_golden_tiles_is_named(
    tiny_bundle, tmp_path
):
    from benchmarks.variants import bundle_variants

    def worse(manifest: dict) -> None:  # the build machine "measured" a perfect int8 model
        manifest["golden"]["models"]["model_int8.tflite"]["dice_vs_float"] = 2.0

    found = verify_variants(bundle_variants("main", _copy_with(tiny_bundle, tmp_path, worse)), 1)
    assert found["tflite int8"].startswith("fails its golden tiles here: model_int8.tflite on")
    assert found["tflite fp32"] is None

    older = _copy_with(tiny_bundle, tmp_path / "older", lambda m: m.pop("golden"))
    found = verify_variants(bundle_variants("main", older), 1)
    assert set(found.values()) == {
        "its bundle has no golden tiles to verify it with (made before bundles had them)"
    }


@pytest.mark.slow
def test_a_run_over_two_bundles_draws_every_verified_pair_of_both(tiny_bundle, tmp_path):
    from benchmarks.cli import main, parse_args

    out = tmp_path / "report"
    argv = ["--bundle", str(tiny_bundle), "--bundle", f"copy={tiny_bundle}", "--out", str(out)]
    argv += ["--sizes", "64", "--threads", "1", "--min-runs", "3", "--seconds", "0"]
    argv += ["--images", "2", "--batch", "0", "--end-to-end-sizes", "", "--folder-images", "0"]
    assert main(parse_args([*argv, "--no-cold-start", "--no-tta", "--no-fail-on-target"])) == 0
    report = load_report(out)
    pareto = report.pareto
    assert pareto is not None and (pareto.size, pareto.threads) == (64, 1)
    pairs = {v.name: v.bundle for v in report.variants if v.format != "keras"}
    assert {p.variant: p.bundle for p in pareto.points} == pairs and not pareto.left_out
    assert {"main", "copy"} == set(pairs.values())
    assert pareto.recommended in pareto.front and set(pareto.front) <= set(pairs)
    assert pareto.budget == 0.01 and pareto.budget_from.endswith(
        "manifest.json: golden.max_dice_drop"
    )
    assert pareto.reference == "keras fp32" and pareto.score == "dice_vs_truth"
    assert (out / "plots" / "pareto.png").is_file()
    section = (out / "report.md").read_text().split("## Speed against Dice\n")[1]
    assert f"- **Recommended**: {pareto.recommended} (" in section
