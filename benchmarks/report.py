"""Report writers: `report.json` (every number), `report.md` (tables) and a self-contained HTML.

One list of sections feeds both the Markdown and the HTML, so the two never disagree; each
section is built in a module of its own (`benchmarks.report_latency`, `benchmarks.report_accuracy`,
...) from the tables and sections of `benchmarks.report_parts`, and the plots they show are drawn
by `benchmarks.plots`. This module assembles them in order and writes the files.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.plots import Example, draw_plots
from benchmarks.report_accuracy import accuracy_section
from benchmarks.report_cold_start import cold_start_section
from benchmarks.report_cross_cpu import cross_cpu_section
from benchmarks.report_end_to_end import end_to_end_section
from benchmarks.report_engines import engines_section
from benchmarks.report_examples import examples_section
from benchmarks.report_latency import latency_section
from benchmarks.report_objects import objects_section
from benchmarks.report_pareto import pareto_section
from benchmarks.report_parts import Section, Table
from benchmarks.report_per_image import per_image_section
from benchmarks.report_run import config_section, header_section, skipped_section
from benchmarks.report_size import size_section
from benchmarks.report_targets import targets_section
from benchmarks.report_tta import tta_section
from benchmarks.schema import CrossCpu, Report
from runtime.io import write_bytes_atomic, write_json_atomic

CROSS_CPU_FILE = "cross_cpu.json"  # `make cross-cpu`'s result, beside report.json


# --------------------------------------------------------------------------------------------
# Public API


def write_report(report: Report, examples: list[Example], out: Path) -> dict[str, Path]:
    """Writes the plots, report.md, report.html and report.json under `out`, each atomically.

    report.json is written last, so its presence means that the whole report is there.

    Returns:
        Each file's path relative to `out` (e.g. "report.md", "plots/latency.png") -> its path.
    """
    out = Path(out)
    report = with_cross_cpu(report, out)
    plots = draw_plots(report, examples)
    files = {f"plots/{name}.png": out / "plots" / f"{name}.png" for name in plots}
    for (_, data), path in zip(plots.values(), files.values(), strict=True):
        write_bytes_atomic(path, data)
    links = {name: f"plots/{name}.png" for name in plots}
    files["report.md"] = out / "report.md"
    write_bytes_atomic(files["report.md"], render_markdown(report, links).encode())
    files["report.html"] = out / "report.html"
    write_bytes_atomic(files["report.html"], _html(report, plots).encode())
    files["report.json"] = out / "report.json"
    write_json_atomic(files["report.json"], report.to_dict())
    return files


def render_markdown(report: Report, plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown tables; `plots` maps a plot's key to the path the .md links."""
    plots = plots or {}
    lines = [f"# {_title(report)}", ""]
    for section in _sections(report):
        lines += _markdown_section(section, plots)
    return "\n".join(lines).rstrip() + "\n"


def with_cross_cpu(report: Report, folder: Path) -> Report:
    """The report with `make cross-cpu`'s result when `folder` has one (cross_cpu.json)."""
    path = folder / CROSS_CPU_FILE
    if report.cross_cpu is not None or not path.is_file():
        return report
    return dataclasses.replace(report, cross_cpu=CrossCpu.from_dict(json.loads(path.read_text())))


def render_cross_cpu(result: CrossCpu) -> str:
    """`make cross-cpu`'s own Markdown: the section the benchmark report shows."""
    section = cross_cpu_section(Report(cross_cpu=result))
    assert section is not None
    return "\n".join(_markdown_section(section, {})).rstrip() + "\n"


def render_html(report: Report, examples: list[Example]) -> str:
    """One self-contained page: inline CSS, plots as base64 PNGs, no scripts or external links."""
    return _html(report, draw_plots(report, examples))


# --------------------------------------------------------------------------------------------
# Sections (shared by Markdown and HTML), in the report's order


def _title(report: Report) -> str:
    cpu = report.environment.cpu
    return f"Benchmark report: {cpu}" if cpu else "Benchmark report"


def _sections(report: Report) -> list[Section]:
    builders: list[Callable[[Report], Section | None]] = [
        header_section,
        targets_section,
        pareto_section,
        latency_section,
        engines_section,
        size_section,
        accuracy_section,
        objects_section,
        tta_section,
        per_image_section,
        examples_section,
        end_to_end_section,
        cross_cpu_section,
        cold_start_section,
        skipped_section,
        config_section,
    ]
    return [s for s in (build(report) for build in builders) if s is not None]


# --------------------------------------------------------------------------------------------
# Markdown


def _markdown_section(section: Section, plots: Mapping[str, str]) -> list[str]:
    if section.only_with_plots and not _expand(section.plots, plots):
        return []
    lines = [f"## {section.title}", ""]
    if section.facts:
        lines += [f"- **{key}**: {_md_text(value)}" for key, value in section.facts] + [""]
    for table in section.tables:
        lines += _markdown_table(table)
    for note in section.notes:
        lines += [_md_text(note), ""]
    for key in _expand(section.plots, plots):
        lines += [f"![{key}]({plots[key]})", ""]
    return lines


def _markdown_table(table: Table) -> list[str]:
    lines = [f"### {table.caption}", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in table.align) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_text(text: str) -> str:
    return str(text).replace("\n", " ")


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; margin-bottom: 0.3rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td.met { color: #176f2c; font-weight: 600; } td.missed { color: #b00020; font-weight: 600; }
ul.facts { list-style: none; padding: 0; } ul.facts li { margin: 0.15rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
p.note { font-size: 0.9rem; color: #444; }
"""


def _html(report: Report, plots: Mapping[str, tuple[str, bytes]]) -> str:
    title = _h(_title(report))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{title}</h1>",
    ]
    for section in _sections(report):
        parts += _html_section(section, plots)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _html_section(section: Section, plots: Mapping[str, tuple[str, bytes]]) -> list[str]:
    figures = _expand(section.plots, plots)
    if section.only_with_plots and not figures:
        return []
    parts = ["<section>", f"<h2>{_h(section.title)}</h2>"]
    if section.facts:
        items = (f"<li><strong>{_h(k)}</strong>: {_h(v)}</li>" for k, v in section.facts)
        parts += ['<ul class="facts">', *items, "</ul>"]
    for table in section.tables:
        parts += _html_table(table)
    parts += [f'<p class="note">{_h(note)}</p>' for note in section.notes]
    for key in figures:
        caption, data = plots[key]
        encoded = base64.b64encode(data).decode("ascii")
        parts += [
            "<figure>",
            f'<img src="data:image/png;base64,{encoded}" alt="{_h(caption)}">',
            f"<figcaption>{_h(caption)}</figcaption>",
            "</figure>",
        ]
    return [*parts, "</section>"]


def _html_table(table: Table) -> list[str]:
    head = "".join(
        f'<th class="{a}">{_h(h)}</th>' for h, a in zip(table.headers, table.align, strict=True)
    )
    body = [
        "<tr>" + "".join(_html_cell(c, a) for c, a in zip(row, table.align, strict=True)) + "</tr>"
        for row in table.rows
    ]
    parts = [f"<h3>{_h(table.caption)}</h3>"] if table.caption and not table.collapsed else []
    parts += [
        "<table>",
        f"<thead><tr>{head}</tr></thead>",
        "<tbody>",
        *body,
        "</tbody>",
        "</table>",
    ]
    if table.collapsed:
        summary = _h(table.caption or "details")
        parts = [f"<details><summary>{summary}</summary>", *parts, "</details>"]
    return parts


def _html_cell(text: str, align: str) -> str:
    css = text if text in ("met", "missed") else align
    return f'<td class="{css}">{_h(text)}</td>'


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _expand(keys: Iterable[str], plots: Mapping[str, Any]) -> list[str]:
    """Plot keys, with a trailing '*' matching every plot whose key starts with the rest."""
    found: list[str] = []
    for key in keys:
        if key.endswith("*"):
            found += [k for k in plots if k.startswith(key[:-1])]
        elif key in plots:
            found.append(key)
    return found
