"""The report writers: every file is written, the HTML stands alone, and the tables say it all."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.plots import _pareto
from benchmarks.report import render_html, render_markdown, write_report
from benchmarks.schema import Report

PNG_PREFIX = "data:image/png;base64,"


class _Page(HTMLParser):
    """Collects what the checks need: headings, tables, images, and any outside reference."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.open: list[str] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.outside: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in ("meta", "img", "br", "link"):
            self.open.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag in ("script", "link", "iframe", "object", "embed"):
            self.outside.append(tag)
        elif values.get("href") or values.get("src"):
            self.outside.append(f"{tag} {values.get('href') or values.get('src')}")
        if tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert not parser.open, f"unclosed tags: {parser.open}"
    return parser


def _assert_png(src: str) -> None:
    assert src.startswith(PNG_PREFIX), src[:60]
    data = base64.b64decode(src[len(PNG_PREFIX) :], validate=True)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        assert image.format == "PNG"


@pytest.fixture(scope="module")
def written(tmp_path_factory, make_report, make_examples) -> tuple[Report, dict[str, Path], Path]:
    """One report written once for the module: plots are the slow part."""
    report, out = Report.from_dict(make_report()), tmp_path_factory.mktemp("report")
    return report, write_report(report, make_examples(), out), out


def test_write_report_writes_every_file_and_the_json_round_trips(written):
    report, files, out = written
    assert {"report.json", "report.md", "report.html"} <= set(files)
    plots = {name for name in files if name.startswith("plots/")}
    assert {"plots/latency.png", "plots/size_vs_dice.png", "plots/parity.png"} <= plots
    assert len([p for p in plots if p.startswith("plots/overlay_")]) == 2
    for name, path in files.items():
        assert path == out / name and path.is_file() and path.stat().st_size > 0
    for name in plots:
        with Image.open(files[name]) as image:
            assert image.format == "PNG"
    assert Report.from_dict(json.loads(files["report.json"].read_text())) == report
    assert not [p.name for p in out.rglob(".*")], "a temporary file was left behind"


def test_markdown_links_the_written_plots(written):
    _, files, out = written
    markdown = files["report.md"].read_text()
    for name in (n for n in files if n.startswith("plots/")):
        assert f"]({name})" in markdown and (out / name).is_file()


def test_html_parses_has_the_tables_and_embeds_every_image(written):
    _, files, _ = written
    page = _parse(files["report.html"].read_text())
    assert page.headings[0].startswith("Benchmark report")
    for heading in ("Targets", "Latency", "Size", "Accuracy", "Examples", "Cold start and memory"):
        assert heading in page.headings, heading
    assert "512 px, 2 threads, batch 1" in page.headings
    assert page.tags.count("table") >= 10
    assert len(page.images) == 5  # latency, size vs Dice, parity and two overlays
    for src in page.images:
        _assert_png(src)
    assert not page.outside, f"the page reaches outside itself: {page.outside}"


def test_markdown_has_the_machine_the_variants_and_their_numbers(report):
    markdown = render_markdown(report)
    assert "AMD EPYC 7B13 (x86_64), 2 cores" in markdown and "avx2, fma" in markdown
    assert "dc7f829abc" in markdown
    for variant in report.variants:
        assert f"| {variant.name} |" in markdown
    # 512 px, 1 thread, batch 1: int8 at 180.1 ms against the fp32 baseline's 234.1 ms
    assert (
        "| tflite int8 | 180.1 | 185.5 | 190.9 | 180.1 | 5.55 | 1.30x | 75.9 | 50 % | 1 | 12 |"
        in markdown
    )
    assert "| tflite fp32 | 234.1 |" in markdown and "baseline" in markdown
    assert "| tflite int8 | tflite | int8 | model_int8.tflite | 2.01 | 1.81 | 25.8 % |" in markdown
    assert "| 0.7980 |" in markdown and "99.30 %" in markdown  # Dice vs truth, agreement
    assert "| missed |" in markdown and "1 of 2 targets met." in markdown
    assert "| tflite int8 | 0.410 | 0.100 | 0.050 | 0.200 | 93.5 |" in markdown
    assert "| tflite int8 [thin] | no --bundle thin=... given |" in markdown
    assert "No latency measured for: keras fp32." in markdown


def test_markdown_names_the_int8_capability_and_the_automatic_choice(make_report):
    report = make_report()
    report["environment"] |= {"int8_capability": "AVX2 only (no VNNI)", "microarchitecture": "zen3"}
    report["choice"] = {
        "file": "model_fp32.onnx",
        "precision": "fp32",
        "backend": "onnx",
        "ms_per_tile": 20.5,
        "reason": "fastest of 5",
        "verified_ms": {"model_fp32.onnx": 20.5},
    }
    report["targets_note"] = "This CPU has no int8 dot product (AVX2 only (no VNNI)): why ~1.1x"
    markdown = render_markdown(Report.from_dict(report))
    assert "AVX2 only (no VNNI) (zen3)" in markdown
    assert "model_fp32.onnx on onnx: fastest of 5" in markdown
    assert "This CPU has no int8 dot product" in markdown


def test_renders_without_labels_targets_skips_or_cold_start(make_report, make_examples):
    report = make_report(labels=False)
    for key in ("targets", "skipped", "cold_start", "ceiling"):
        report[key] = []
    report["latency"] = [e for e in report["latency"] if e["variant"] != "onnx fp32"]
    report = Report.from_dict(report)
    markdown = render_markdown(report)
    assert "no labels" in markdown and "agreement with float" in markdown
    assert "Dice" not in markdown.replace("Dice vs float", "") and "## Targets" not in markdown
    assert "No latency measured for: keras fp32, onnx fp32." in markdown
    page = _parse(render_html(report, make_examples(labels=False)[:1]))
    assert "Targets" not in page.headings and "Skipped variants" not in page.headings
    assert len(page.images) == 4
    for src in page.images:
        _assert_png(src)


def test_renders_a_report_with_nothing_measured():
    report = Report.from_dict(
        {"schema": 1, "variants": [], "latency": [], "accuracy": {}, "targets": []}
    )
    assert render_markdown(report).startswith("# Benchmark report\n")
    assert "## Accuracy" not in render_markdown(report)
    page = _parse(render_html(report, []))
    assert page.images == [] and page.headings[0] == "Benchmark report"


def test_html_escapes_names():
    skipped = [{"name": "a<b", "reason": "<i>"}]
    report = Report.from_dict(
        {"schema": 1, "environment": {"cpu": "<b>cpu</b>"}, "skipped": skipped}
    )
    page = render_html(report, [])
    assert "&lt;b&gt;cpu&lt;/b&gt;" in page and "<b>cpu" not in page


def test_pareto_frontier_keeps_what_nothing_smaller_matches():
    points = [("big", 8.0, 0.80), ("copy", 8.1, 0.80), ("small", 2.0, 0.79), ("bad", 3.0, 0.70)]
    assert [p[0] for p in _pareto(points)] == ["small", "big"]


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def test_the_tta_section_gives_each_models_dice_gain_and_cost(make_report):
    markdown = render_markdown(Report.from_dict(make_report(tta=True)))
    section = _section(markdown, "Test-time augmentation")
    assert "### Dice vs truth on the 2 held-out images" in section
    assert "| variant | Dice none | Dice flips | Dice d4 | d4 gain |" in section
    assert "| tflite int8 | 0.7980 | 0.8000 | 0.8021 | +0.0041 | 99.90 % |" in section
    for size in (256, 512):
        assert f"### ms per image, {size} px, 2 threads, p50" in section
    # 512 px: d4 at 7.8x none's 180.1 ms
    assert "| tflite int8 | 180.1 | 702.4 | 1404.8 | 3.90x | 7.80x | 3 |" in section
    for name in ("tflite fp32", "tflite int8", "onnx fp32"):  # scores and both sizes
        assert sum(line.startswith(f"| {name} |") for line in section.splitlines()) == 3
    assert "61 s" in section
    page = _parse(render_html(Report.from_dict(make_report(tta=True)), []))
    assert "Test-time augmentation" in page.headings


def test_without_labels_tta_is_judged_by_agreement_in_points(make_report):
    section = _section(
        render_markdown(Report.from_dict(make_report(labels=False, tta=True))),
        "Test-time augmentation",
    )
    assert "Dice" not in section.split("Scored on")[0]
    assert "| tflite int8 | 99.90 % | 99.50 % | 99.10 % | -0.80 pp |" in section


def test_the_accuracy_section_states_each_bundles_threshold_and_the_int8_method(make_report):
    accuracy = _section(render_markdown(Report.from_dict(make_report(tta=True))), "Accuracy")
    assert (
        "- **Masks**: threshold 0.45 (calibrated on 5 validation images: float Dice 0.8123 "
        "there, 0.8050 at 0.5)" in accuracy
    )
    assert "- **Masks [pruned]**: threshold 0.5\n" in accuracy  # an older bundle: no calibration
    assert (
        "- **int8 model**: post-training, by Dice against the labels (QAT: Dice 0.7900, "
        "agreement with float 98.10 %; post-training: Dice 0.7980" in accuracy
    )


def test_a_report_from_before_tta_and_thresholds_renders_without_them(report):
    markdown = render_markdown(report)
    assert report.tta is None and "## Test-time augmentation" not in markdown
    assert "**Masks**" not in markdown and "**int8 model**" not in markdown
