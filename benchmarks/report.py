"""Report writers: `report.json` (every number), `report.md` (tables) and a self-contained HTML.

One list of sections feeds both the Markdown and the HTML, so the two never disagree. Plots are
drawn with matplotlib's object API (no pyplot): no global backend is switched and no figure
outlives its function, which matters inside a harness that also measures memory.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io import write_bytes_atomic, write_json_atomic

DASH = "—"  # a value that was not measured
DPI = 100


@dataclasses.dataclass(frozen=True)
class Example:
    """One image's masks, drawn as an overlay row: input, truth, float, variant, difference."""

    name: str
    image: np.ndarray
    truth: np.ndarray | None
    float_mask: np.ndarray
    mask: np.ndarray
    variant: str


@dataclasses.dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    align: str  # one "l" or "r" per column
    caption: str = ""
    collapsed: bool = False  # the HTML folds long tables away under <details>


@dataclasses.dataclass(frozen=True)
class _Section:
    title: str
    facts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    tables: list[_Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)  # keys of the plots shown here
    only_with_plots: bool = False  # a section that is nothing but its plots


# --------------------------------------------------------------------------------------------
# Public API


def write_report(report: dict, examples: list[Example], out: Path) -> dict[str, Path]:
    """Writes the plots, report.md, report.html and report.json under `out`, each atomically.

    report.json is written last, so its presence means that the whole report is there.

    Returns:
        Each file's path relative to `out` (e.g. "report.md", "plots/latency.png") -> its path.
    """
    out = Path(out)
    report = _jsonable(report)
    plots = _draw_plots(report, examples)
    files = {f"plots/{name}.png": out / "plots" / f"{name}.png" for name in plots}
    for (_, data), path in zip(plots.values(), files.values(), strict=True):
        write_bytes_atomic(path, data)
    links = {name: f"plots/{name}.png" for name in plots}
    files["report.md"] = out / "report.md"
    write_bytes_atomic(files["report.md"], render_markdown(report, links).encode())
    files["report.html"] = out / "report.html"
    write_bytes_atomic(files["report.html"], _html(report, plots).encode())
    files["report.json"] = out / "report.json"
    write_json_atomic(files["report.json"], report)
    return files


def render_markdown(report: dict, plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown tables; `plots` maps a plot's key to the path the .md links."""
    plots, report = plots or {}, _jsonable(report)
    lines = [f"# {_title(report)}", ""]
    for section in _sections(report):
        lines += _markdown_section(section, plots)
    return "\n".join(lines).rstrip() + "\n"


def render_html(report: dict, examples: list[Example]) -> str:
    """One self-contained page: inline CSS, plots as base64 PNGs, no scripts or external links."""
    report = _jsonable(report)
    return _html(report, _draw_plots(report, examples))


# --------------------------------------------------------------------------------------------
# Reading the report


def _variants(report: dict) -> list[dict]:
    return [v for v in report.get("variants") or [] if isinstance(v, dict) and "name" in v]


def _variant_order(report: dict) -> list[str]:
    """Variant names in the report's order, then names that appear only in measurements."""
    names = [v["name"] for v in _variants(report)]
    for entry in [*_latency(report), *(report.get("cold_start") or [])]:
        if entry.get("variant") not in names:
            names.append(entry.get("variant"))
    return names


def _latency(report: dict) -> list[dict]:
    return [e for e in report.get("latency") or [] if isinstance(e, dict)]


def _accuracy(report: dict) -> dict:
    return report.get("accuracy") or {}


def _has_labels(report: dict) -> bool:
    return bool(_accuracy(report).get("has_labels"))


def _quality(report: dict) -> tuple[str, str]:
    """The accuracy that ranks variants: Dice vs truth with labels, else agreement with float."""
    if _has_labels(report):
        return "dice_vs_truth", "Dice vs truth"
    return "agreement_with_float", "agreement with float"


def _overall(report: dict, variant: dict) -> dict | None:
    """A variant's overall accuracy; the Keras model is the float reference itself."""
    accuracy = _accuracy(report)
    found = (accuracy.get("variants") or {}).get(variant["name"])
    if found:
        return found.get("overall") or {}
    if variant.get("format") == "keras" and accuracy.get("float"):
        return {**(accuracy["float"].get("overall") or {}), "agreement_with_float": 1.0}
    return None


def _size_reference(report: dict) -> dict | None:
    """The fp32 TFLite that sizes are compared with (the baseline if there is none)."""
    variants = _variants(report)
    fp32 = [v for v in variants if v.get("format") == "tflite" and v.get("precision") == "fp32"]
    main = [v for v in fp32 if v.get("bundle") == "main"]
    baseline = [v for v in variants if v["name"] == report.get("baseline")]
    return (main or fp32 or baseline or [None])[0]


def _latency_groups(report: dict) -> dict[tuple[int, int, int], list[dict]]:
    """Latency entries by (size, threads, batch), in ascending order, variants in report order."""
    order = {name: i for i, name in enumerate(_variant_order(report))}
    groups: dict[tuple[int, int, int], list[dict]] = {}
    for entry in _latency(report):
        key = (entry.get("size", 0), entry.get("threads", 0), entry.get("batch", 1))
        groups.setdefault(key, []).append(entry)
    return {
        key: sorted(groups[key], key=lambda e: order.get(e.get("variant"), len(order)))
        for key in sorted(groups)
    }


def _speedup(entry: dict, group: list[dict], baseline: str | None) -> float | None:
    """The baseline's p50 over this entry's p50 at the same size, threads and batch."""
    base = next((e for e in group if e.get("variant") == baseline), None)
    if base is None or not _positive(base.get("p50_ms")) or not _positive(entry.get("p50_ms")):
        return None
    return base["p50_ms"] / entry["p50_ms"]


# --------------------------------------------------------------------------------------------
# Sections (shared by Markdown and HTML)


def _title(report: dict) -> str:
    cpu = (report.get("environment") or {}).get("cpu")
    return f"Benchmark report: {cpu}" if cpu else "Benchmark report"


def _sections(report: dict) -> list[_Section]:
    builders: list[Callable[[dict], _Section | None]] = [
        _header_section,
        _targets_section,
        _latency_section,
        _size_section,
        _accuracy_section,
        _per_image_section,
        _examples_section,
        _end_to_end_section,
        _cold_start_section,
        _skipped_section,
        _config_section,
    ]
    return [s for s in (build(report) for build in builders) if s is not None]


def _header_section(report: dict) -> _Section:
    env = report.get("environment") or {}
    checked = env.get("flags") or {}
    flags = ", ".join(name for name, on in checked.items() if on)
    if checked and not flags:
        flags = f"none of {', '.join(checked)}"
    machine = str(env.get("cpu") or DASH) + (f" ({env['machine']})" if env.get("machine") else "")
    git = env.get("git") or {}
    revision = str(git.get("revision") or DASH) + (
        " (uncommitted changes)" if git.get("dirty") else ""
    )
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
    accuracy = _accuracy(report)
    facts = [
        ("Machine", f"{machine}, {env.get('cores', DASH)} cores"),
        ("int8 dot product", _capability(env)),
        ("CPU flags", flags or DASH),
        ('precision="auto"', _choice_fact(report.get("choice"))),
        ("OS", str(env.get("os", DASH))),
        ("Python", f"{env.get('python', DASH)}" + (f"; {packages}" if packages else "")),
        ("Git revision", revision),
        ("Data", _data_fact(accuracy, report)),
        ("Baseline for speedups", str(report.get("baseline") or DASH)),
        ("Created", f"{report.get('created', DASH)} in {_num(report.get('wall_seconds'), 0)} s"),
    ]
    return _Section("Machine and run", facts=facts)


def _capability(env: dict) -> str:
    capability = env.get("int8_capability") or DASH
    arch = env.get("microarchitecture")
    return f"{capability} ({arch})" if arch and arch != "unknown" else capability


def _choice_fact(choice: dict | None) -> str:
    """What the runtime picks on this machine (`runtime.choice`), and why."""
    if not choice:
        return "not measured (the bundle has no golden tiles)"
    return (
        f"{choice.get('file', DASH)} on {choice.get('backend', DASH)}: {choice.get('reason', '')}"
    )


def _data_fact(accuracy: dict, report: dict) -> str:
    data = accuracy.get("data") or (report.get("config") or {}).get("data") or DASH
    images = accuracy.get("images") or []
    labels = "with labels" if accuracy.get("has_labels") else "no labels"
    return f"{data}, {len(images)} images, {labels}" if accuracy else str(data)


def _digits(target: Any) -> int:
    """Speed-ups read well with 2 decimals; Dice budgets (0.01) need 4."""
    return 4 if isinstance(target, int | float) and abs(target) < 0.1 else 2


def _targets_section(report: dict) -> _Section | None:
    targets = report.get("targets") or []
    if not targets:
        return None
    rows = [
        (
            str(t.get("claim", DASH)),
            _num(t.get("target"), _digits(t.get("target"))),
            _num(t.get("measured"), _digits(t.get("target"))),
            "met" if t.get("met") else "missed",
        )
        for t in targets
    ]
    met = sum(1 for t in targets if t.get("met"))
    note = report.get("targets_note")
    return _Section(
        "Targets",
        tables=[_Table(("claim", "target", "measured", "result"), rows, "lrrl")],
        notes=[f"{met} of {len(targets)} targets met.", *([note] if note else [])],
    )


_LATENCY_HEADERS = (
    "variant",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "ms / image",
    "images / s",
    "speedup",
    "GMAC/s",
    "% of ceiling",
    "tiles / image",
    "runs",
)


def _latency_section(report: dict) -> _Section | None:
    groups = _latency_groups(report)
    if not groups:
        return None
    baseline = report.get("baseline")
    tables = [
        _Table(
            _LATENCY_HEADERS,
            [_latency_row(e, entries, baseline) for e in entries],
            "l" + "r" * (len(_LATENCY_HEADERS) - 1),
            caption=f"{size} px, {_plural(threads, 'thread')}, batch {batch}",
        )
        for (size, threads, batch), entries in groups.items()
    ]
    ceiling = report.get("ceiling") or []
    if ceiling:
        rows = [(str(c.get("threads", DASH)), _num(c.get("gmacs_per_s"), 1)) for c in ceiling]
        tables.append(_Table(("threads", "GMAC/s"), rows, "rr", caption="Compute ceiling"))
    notes = [
        f"Speedup: the p50 of {baseline} over the variant's p50 at the same size, threads and "
        "batch (above 1 is faster). % of ceiling: the model's GMAC/s over the float32 GEMM "
        "peak measured at that thread count; int8 kernels can pass it (more MACs per "
        "instruction). Timed is the interpreter's work on what the runtime runs for an image "
        "of that size: the whole image in one run where it fits the memory budget, else its "
        "tiles (a model with a fixed tile: its tiles); a batch runs as one call where the "
        "model takes a batch, else tile by tile."
    ]
    measured = {e.get("variant") for e in _latency(report)}
    unmeasured = [v["name"] for v in _variants(report) if v["name"] not in measured]
    if unmeasured:
        notes.append(f"No latency measured for: {', '.join(unmeasured)}.")
    return _Section("Latency", tables=tables, notes=notes, plots=["latency"])


def _latency_row(entry: dict, group: list[dict], baseline: str | None) -> tuple:
    speedup = _speedup(entry, group, baseline)
    is_baseline = entry.get("variant") == baseline
    return (
        str(entry.get("variant", DASH)),
        _num(entry.get("p50_ms"), 1),
        _num(entry.get("p90_ms"), 1),
        _num(entry.get("p99_ms"), 1),
        _num(entry.get("ms_per_image"), 1),
        _num(entry.get("images_per_s"), 2),
        "baseline" if is_baseline else _times(speedup),
        _num(entry.get("gmacs_per_s"), 1),
        _pct(entry.get("of_ceiling"), 0),  # measured against the same process's GEMM
        str(entry.get("tiles", DASH)) + _one_by_one(entry),
        str(entry.get("runs", DASH)),
    )


def _one_by_one(entry: dict) -> str:
    """Marks a batch that ran tile by tile because the model takes no batch (ONNX, batch 1)."""
    return " (one by one)" if entry.get("batch", 1) > 1 and not entry.get("batched", True) else ""


def _size_section(report: dict) -> _Section | None:
    variants = _variants(report)
    if not variants:
        return None
    reference = _size_reference(report)
    mac_sizes = sorted({int(s) for v in variants for s in (v.get("macs") or {})})
    ref_name = reference["name"] if reference else DASH
    headers = (
        "variant",
        "format",
        "precision",
        "file",
        "MB",
        "gzip MB",
        f"% of {ref_name}",
        *(f"GMAC @ {s} px" for s in mac_sizes),
    )
    rows = [_size_row(v, reference, mac_sizes) for v in variants]
    return _Section(
        "Size",
        tables=[_Table(headers, rows, "llll" + "r" * (len(headers) - 4))],
        notes=["MB are 10^6 bytes; gzip MB is the file compressed with gzip (a download's size)."],
        plots=["size_vs_dice"],
    )


def _size_row(variant: dict, reference: dict | None, mac_sizes: list[int]) -> tuple:
    size, ref = variant.get("size_bytes"), (reference or {}).get("size_bytes")
    share = size / ref if _is_number(size) and _positive(ref) else None
    macs = variant.get("macs") or {}
    return (
        variant["name"],
        str(variant.get("format", DASH)),
        str(variant.get("precision", DASH)),
        str(variant.get("file", DASH)),
        _num(_scale(size, 1e-6), 2),
        _num(_scale(variant.get("gzip_bytes"), 1e-6), 2),
        _pct(share, 1),
        *(_num(_scale(macs.get(str(s), macs.get(s)), 1e-9), 2) for s in mac_sizes),
    )


_ACCURACY_COLUMNS = (  # key, header, formatter
    ("dice_vs_truth", "Dice vs truth", lambda v: _num(v, 4)),
    ("iou_vs_truth", "IoU vs truth", lambda v: _num(v, 4)),
    ("accuracy_vs_truth", "pixel accuracy", lambda v: _pct(v, 2)),
    ("dice_drop", "Dice drop", lambda v: _signed(v, 4)),
    ("agreement_with_float", "agreement with float", lambda v: _pct(v, 2)),
    ("dice_vs_float", "Dice vs float", lambda v: _num(v, 4)),
    ("max_abs_error", "max abs prob. error", lambda v: _num(v, 3)),
    ("mean_abs_error", "mean abs prob. error", lambda v: _num(v, 4)),
)


def _accuracy_section(report: dict) -> _Section | None:
    accuracy = _accuracy(report)
    if not accuracy:
        return None
    rows: list[tuple[str, dict]] = []
    if accuracy.get("float"):
        rows.append(("float (Keras)", accuracy["float"].get("overall") or {}))
    for name, result in (accuracy.get("variants") or {}).items():
        rows.append((name, (result or {}).get("overall") or {}))
    columns = [c for c in _ACCURACY_COLUMNS if any(_is_number(r.get(c[0])) for _, r in rows)]
    table = _Table(
        ("variant", *(header for _, header, _ in columns)),
        [(name, *(fmt(r.get(key)) for key, _, fmt in columns)) for name, r in rows],
        "l" + "r" * len(columns),
    )
    notes = [
        "Agreement with float: the share of pixels whose class matches the float model's mask."
    ]
    if _has_labels(report):
        notes.append(
            "Dice drop: the float model's Dice vs truth minus the variant's (above 0 is worse)."
        )
    else:
        notes.append("The data has no labels: variants are judged by agreement with float.")
    return _Section("Accuracy", tables=[table], notes=notes)


def _per_image_section(report: dict) -> _Section | None:
    tables = _per_image_tables(report)
    return _Section("Accuracy per image", tables=tables, plots=["parity"]) if tables else None


def _per_image_tables(report: dict) -> list[_Table]:
    accuracy = _accuracy(report)
    variants = accuracy.get("variants") or {}
    images = [str(i) for i in accuracy.get("images") or []]
    if not images or not variants:
        return []
    names = list(variants)

    def value(name: str, image: str, key: str) -> Any:
        return ((variants[name] or {}).get("per_image") or {}).get(image, {}).get(key)

    tables = [
        _Table(
            ("image", *names),
            [(i, *(_pct(value(n, i, "agreement_with_float"), 2) for n in names)) for i in images],
            "l" + "r" * len(names),
            caption="Agreement with float per image",
            collapsed=True,
        )
    ]
    if _has_labels(report):
        floats = (accuracy.get("float") or {}).get("per_image") or {}
        rows = [
            (
                i,
                _num((floats.get(i) or {}).get("dice_vs_truth"), 4),
                *(_num(value(n, i, "dice_vs_truth"), 4) for n in names),
            )
            for i in images
        ]
        headers = ("image", "float (Keras)", *names)
        tables.append(
            _Table(headers, rows, "l" + "r" * (len(headers) - 1), "Dice vs truth per image", True)
        )
    return tables


def _examples_section(report: dict) -> _Section:
    """The overlays, one per Example; shown only when there are any."""
    return _Section(
        "Examples",
        notes=[
            "Each row: the input, the ground truth, the float model's mask, the variant's mask, "
            "and in red the pixels where float and variant disagree. The first rows show the "
            "gated TFLite int8 model; the last, where it is another, the worst case: the image "
            "on which the gated int8 model (of any bundle, TFLite or ONNX) that agrees least "
            "with float agrees least."
        ],
        plots=["overlay_*"],
        only_with_plots=True,
    )


def _end_to_end_section(report: dict) -> _Section | None:
    e2e = report.get("end_to_end") or {}
    sizes = [e for e in e2e.get("sizes") or [] if isinstance(e, dict)]
    if not sizes:
        return None
    rows = [
        (
            str(e.get("variant", DASH)),
            str(e.get("size", DASH)),
            f"{e.get('count', DASH)} x {_plain(e.get('tile'))}".replace(", ", "x"),
            str(e.get("batch", DASH)),
            _num(e.get("runtime_ms"), 1),
            _num(e.get("interpreter_ms"), 1),
            _times(_ratio(e.get("runtime_ms"), e.get("interpreter_ms"))),
        )
        for e in sorted(sizes, key=lambda e: (str(e.get("variant")), e.get("size", 0)))
    ]
    tables = [
        _Table(
            (
                "variant",
                "image px",
                "runs x input",
                "batch",
                "runtime ms",
                "interpreter ms",
                "runtime / interpreter",
            ),
            rows,
            "lrlrrrr",
            caption=f"One image, {_plural(sizes[0].get('threads'), 'thread')}, p50",
        )
    ]
    memory = [e for e in e2e.get("memory") or [] if isinstance(e, dict)]
    if memory:
        memory_rows = [
            (
                str(e.get("variant", DASH)),
                str(e.get("size", DASH)),
                _num(e.get("max_memory_mb"), 0),
                f"{e.get('count', DASH)} x {_plain(e.get('tile'))}".replace(", ", "x"),
                _num(e.get("first_inference_s"), 3),
                _num(e.get("peak_rss_mb"), 1),
                str(e.get("error", "")),
            )
            for e in memory
        ]
        tables.append(
            _Table(
                (
                    "variant",
                    "image px",
                    "max_memory_mb",
                    "runs x input",
                    "first inference s",
                    "peak RSS MB",
                    "error",
                ),
                memory_rows,
                "lrrlrrl",
                caption="A fresh process segmenting one image",
            )
        )
    folder = [e for e in e2e.get("folder") or [] if isinstance(e, dict)]
    if folder:
        interpreter = {(e.get("variant"), e.get("size")): e.get("interpreter_ms") for e in sizes}
        folder_rows = [
            (
                str(e.get("variant", DASH)),
                f"{e.get('images')} x {e.get('size')} px",
                _num(e.get("images_per_s"), 2),
                _num(_ratio(1e3, interpreter.get((e.get("variant"), e.get("size")))), 2),
            )
            for e in folder
        ]
        tables.append(
            _Table(
                ("variant", "folder", "runtime.predict images/s", "interpreter images/s"),
                folder_rows,
                "lrrr",
                caption="A folder of PNGs through runtime.predict's pipeline",
            )
        )
    budget = (report.get("config") or {}).get("max_memory_mb")
    return _Section(
        "Whole images end to end",
        tables=tables,
        notes=[
            "Runtime: Segmenter.predict on one image already in memory (pre-processing, the "
            "interpreter runs, stitching, threshold), against the interpreter alone on the same "
            "inputs, taking turns. A model that takes any size runs the whole image (padded to "
            "the pooling grid) when one run fits the memory budget"
            + (f" (max_memory_mb {budget:g})" if _is_number(budget) else "")
            + ", else the tiles that fit: 'runs x input' shows which. Peak RSS: a fresh "
            "process that imports the runtime, loads the model and segments one image of that "
            "size (VmHWM, MB = 10^6 bytes); an int8 model that needs more than the target for "
            "a 512 px image in one pass is measured again with a budget that tiles it. The "
            "folder: decoding, pre-processing and writing the PNG masks overlap the "
            "interpreter's runs.",
        ],
    )


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if _is_number(a) and _positive(b) else None


def _cold_start_section(report: dict) -> _Section | None:
    entries = [e for e in report.get("cold_start") or [] if isinstance(e, dict)]
    if not entries:
        return None
    rows = [
        (
            str(e.get("variant", DASH)),
            _num(e.get("seconds"), 3),
            _num(e.get("import_s"), 3),
            _num(e.get("load_s"), 3),
            _num(e.get("first_inference_s"), 3),
            _num(e.get("peak_rss_mb"), 1),
            {True: "yes", False: "no"}.get(e.get("tensorflow_imported"), DASH),
            str(e.get("error", "")),
        )
        for e in entries
    ]
    errors = any("error" in e for e in entries)
    headers = (
        "variant",
        "total s",
        "import s",
        "load s",
        "first inference s",
        "peak RSS MB",
        "TensorFlow loaded",
        "error",
    )
    if not errors:  # the column only when a process failed
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    sizes = sorted({e["size"] for e in entries if "size" in e})
    image = f"one {' / '.join(map(str, sizes))} px image" if sizes else "one image"
    return _Section(
        "Cold start and memory",
        tables=[_Table(headers, rows, "lrrrrrll"[: len(headers)])],
        notes=[
            f"A fresh process: import, load the model (SHA-256 checked), segment {image} "
            "through the runtime; total includes starting Python. Peak RSS is the process's "
            "high-water mark (VmHWM), MB = 10^6 bytes."
        ],
    )


def _skipped_section(report: dict) -> _Section | None:
    skipped = report.get("skipped") or []
    if not skipped:
        return None
    rows = [(str(s.get("name", DASH)), str(s.get("reason", DASH))) for s in skipped]
    return _Section("Skipped variants", tables=[_Table(("variant", "reason"), rows, "ll")])


def _config_section(report: dict) -> _Section | None:
    config = report.get("config") or {}
    if not config:
        return None
    return _Section("Configuration", facts=[(str(k), _plain(v)) for k, v in config.items()])


# --------------------------------------------------------------------------------------------
# Markdown


def _markdown_section(section: _Section, plots: Mapping[str, str]) -> list[str]:
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


def _markdown_table(table: _Table) -> list[str]:
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


def _html(report: dict, plots: Mapping[str, tuple[str, bytes]]) -> str:
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


def _html_section(section: _Section, plots: Mapping[str, tuple[str, bytes]]) -> list[str]:
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


def _html_table(table: _Table) -> list[str]:
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


# --------------------------------------------------------------------------------------------
# Plots


def _draw_plots(report: dict, examples: Sequence[Example]) -> dict[str, tuple[str, bytes]]:
    """Every plot the report has data for: key -> (caption, PNG bytes)."""
    plots: dict[str, tuple[str, bytes]] = {}
    for key, draw in (
        ("latency", _plot_latency),
        ("size_vs_dice", _plot_size_vs_quality),
        ("parity", _plot_parity),
    ):
        drawn = draw(report)
        if drawn is not None:
            plots[key] = drawn
    for example in examples:
        key = _unique(f"overlay_{_slug(example.name)}_{_slug(example.variant)}", plots)
        plots[key] = _plot_overlay(example)
    return plots


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _plot_latency(report: dict) -> tuple[str, bytes] | None:
    """Grouped bars at batch 1: one group per (size, threads), p50 with p90 as the error bar."""
    groups = {k: v for k, v in _latency_groups(report).items() if k[2] == 1}
    names = [
        n
        for n in _variant_order(report)
        if any(e.get("variant") == n for g in groups.values() for e in g)
    ]
    if not groups or not names:
        return None
    width = 0.8 / len(names)
    figure = _figure(max(5.0, 1.2 + len(groups) * len(names) * 0.3), 3.8)
    axes = figure.add_subplot()
    for i, name in enumerate(names):
        p50, p90 = [], []
        for entries in groups.values():
            entry = next((e for e in entries if e.get("variant") == name), {})
            p50.append(_float(entry.get("p50_ms")))
            p90.append(_float(entry.get("p90_ms")))
        low = [0.0] * len(p50)
        high = [
            max(0.0, b - a) if math.isfinite(a + b) else 0.0 for a, b in zip(p50, p90, strict=True)
        ]
        x = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        axes.bar(x, p50, width, yerr=[low, high], capsize=2, label=name)
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels([f"{s} px\n{_plural(t, 'thread')}" for s, t, _ in groups])
    axes.set_ylabel("p50 latency, ms (bar: p90)")
    axes.set_title("Latency per variant, batch 1")
    figure.legend(loc="outside lower center", fontsize="small", ncols=min(4, len(names)))
    return "Latency per variant at batch 1: p50, with p90 as the error bar", _png(figure)


def _quality_points(report: dict) -> list[tuple[str, float, float]]:
    """(variant, size MB, accuracy) of every variant with both a size and an accuracy."""
    key, _ = _quality(report)
    points = []
    for variant in _variants(report):
        overall = _overall(report, variant) or {}
        size, value = variant.get("size_bytes"), overall.get(key)
        if _positive(size) and _is_number(value):
            points.append((variant["name"], size / 1e6, float(value)))
    return points


def _pareto(points: Iterable[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The points that no other point beats: smaller or equal and at least as accurate."""
    points = list(points)

    def beaten(p: tuple[str, float, float]) -> bool:
        return any(q[1] <= p[1] and q[2] >= p[2] and (q[1], q[2]) != (p[1], p[2]) for q in points)

    return sorted((p for p in points if not beaten(p)), key=lambda p: p[1])


def _plot_size_vs_quality(report: dict) -> tuple[str, bytes] | None:
    points = _quality_points(report)
    if not points:
        return None
    _, label = _quality(report)
    frontier = _pareto(points)
    figure = _figure(6.0, 3.8)
    axes = figure.add_subplot()
    axes.scatter([p[1] for p in points], [p[2] for p in points], color="#888", zorder=2)
    axes.plot(
        [p[1] for p in frontier],
        [p[2] for p in frontier],
        "o-",
        drawstyle="steps-post",
        color="#c0392b",
        label="Pareto frontier",
        zorder=3,
    )
    sizes = [p[1] for p in points]
    log = max(sizes) / min(sizes) > 8
    for (name, x, y), dy in zip(points, _label_offsets(points, log), strict=True):
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, dy), fontsize=7)
    if log:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel("model file, MB")
    axes.set_ylabel(label)
    axes.set_title(f"Size against {label}")
    axes.legend(fontsize="small")
    caption = f"Size against {label}; red: the Pareto frontier (no variant is smaller and at least as accurate)"
    return caption, _png(figure)


def _label_offsets(points: list[tuple[str, float, float]], log: bool) -> list[float]:
    """Vertical label offsets in points: labels of points that nearly coincide are stacked."""
    xs = np.log([p[1] for p in points]) if log else np.array([p[1] for p in points])
    ys = np.array([p[2] for p in points])
    span_x, span_y = np.ptp(xs) or 1.0, np.ptp(ys) or 1.0
    offsets: list[float] = []
    for i in range(len(points)):
        near = np.abs(xs[:i] - xs[i]) / span_x < 0.08
        near &= np.abs(ys[:i] - ys[i]) / span_y < 0.08
        offsets.append(4.0 - 9.0 * int(near.sum()))
    return offsets


def _plot_parity(report: dict) -> tuple[str, bytes] | None:
    accuracy = _accuracy(report)
    images = [str(i) for i in accuracy.get("images") or []]
    variants = accuracy.get("variants") or {}
    if not images or not variants:
        return None
    figure = _figure(max(6.5, 3.0 + 0.25 * len(images)), 3.2)
    axes = figure.add_subplot()
    drawn = False
    for name, result in variants.items():
        per_image = (result or {}).get("per_image") or {}
        values = [
            _float((per_image.get(i) or {}).get("agreement_with_float")) * 100 for i in images
        ]
        if any(math.isfinite(v) for v in values):
            axes.plot(range(len(images)), values, "o-", markersize=3, label=name)
            drawn = True
    if not drawn:
        return None
    axes.set_xticks(range(len(images)))
    axes.set_xticklabels(images, fontsize=7, rotation=90 if len(images) > 12 else 0)
    axes.set_xlabel("image")
    axes.set_ylabel("agreement with float, %")
    axes.set_title("Per-image agreement with the float model")
    figure.legend(loc="outside right upper", fontsize="small")
    return "Per-image agreement of each variant's mask with the float model's mask", _png(figure)


def _plot_overlay(example: Example) -> tuple[str, bytes]:
    """One row: input, truth, float mask, variant mask, and the disagreements in red."""
    image = _unit_image(example.image)
    masks = [m for m in (example.truth, example.float_mask, example.mask) if m is not None]
    vmax = max(1, *(int(np.max(m)) for m in masks if np.size(m)))
    differ = np.asarray(example.float_mask) != np.asarray(example.mask)
    figure = _figure(10.0, 2.5)
    panels = figure.subplots(1, 5)
    panels[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    panels[0].set_title("input", fontsize=8)
    if example.truth is None:
        panels[1].text(0.5, 0.5, "no labels", ha="center", va="center", fontsize=8)
    else:
        panels[1].imshow(example.truth, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    panels[1].set_title("ground truth", fontsize=8)
    for axes, mask, title in (
        (panels[2], example.float_mask, "float"),
        (panels[3], example.mask, example.variant),
    ):
        axes.imshow(mask, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        axes.set_title(title, fontsize=8)
    panels[4].imshow(_difference(image, differ), interpolation="nearest")
    share = float(np.mean(differ)) if differ.size else 0.0
    panels[4].set_title(f"differ: {int(differ.sum())} px ({share:.2%})", fontsize=8)
    for axes in panels:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"image {example.name}: float vs {example.variant}", fontsize=9)
    caption = f"Image {example.name}: {example.variant} against float; {share:.2%} of pixels differ"
    return caption, _png(figure)


def _unit_image(image: np.ndarray) -> np.ndarray:
    """A grey image in [0, 1] (integer images are taken as 0-255)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image.mean(axis=-1)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def _difference(image: np.ndarray, differ: np.ndarray) -> np.ndarray:
    """RGB: the input dimmed (center-cropped to the mask when larger), red where masks differ."""
    base = _center_crop(image, differ.shape) if image.shape != differ.shape else image
    if base.shape != differ.shape:
        base = np.full(differ.shape, 0.5, np.float32)
    rgb = np.repeat((0.25 + 0.5 * base)[..., None], 3, axis=-1)
    rgb[differ] = (0.9, 0.1, 0.1)
    return rgb


def _center_crop(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) != 2 or image.shape[0] < shape[0] or image.shape[1] < shape[1]:
        return image
    top, left = (image.shape[0] - shape[0]) // 2, (image.shape[1] - shape[1]) // 2
    return image[top : top + shape[0], left : left + shape[1]]


def _expand(keys: Iterable[str], plots: Mapping[str, Any]) -> list[str]:
    """Plot keys, with a trailing '*' matching every plot whose key starts with the rest."""
    found: list[str] = []
    for key in keys:
        if key.endswith("*"):
            found += [k for k in plots if k.startswith(key[:-1])]
        elif key in plots:
            found.append(key)
    return found


# --------------------------------------------------------------------------------------------
# Small helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays, tuples and paths converted; NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _float(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _scale(value: Any, factor: float) -> float | None:
    return value * factor if _is_number(value) else None


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else DASH


def _signed(value: Any, digits: int) -> str:
    return f"{value:+.{digits}f}" if _is_number(value) else DASH


def _pct(fraction: Any, digits: int) -> str:
    return f"{fraction * 100:.{digits}f} %" if _is_number(fraction) else DASH


def _times(value: Any) -> str:
    return f"{value:.2f}x" if _is_number(value) else DASH


def _plural(count: Any, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or DASH
    return DASH if value is None else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _unique(key: str, taken: Mapping[str, Any]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        candidate, n = f"{key}-{n}", n + 1
    return candidate
