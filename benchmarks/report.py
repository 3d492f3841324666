"""Report writers: `report.json` (every number), `report.md` (tables) and a self-contained HTML.

One list of sections feeds both the Markdown and the HTML, so the two never disagree; the plots
they show are drawn by `benchmarks.plots`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.load import BUSY_CORES
from benchmarks.plots import Example, draw_plots
from benchmarks.report_objects import objects_section
from benchmarks.report_parts import DASH
from benchmarks.report_parts import Section as _Section
from benchmarks.report_parts import Table as _Table
from benchmarks.report_parts import finite as _finite
from benchmarks.report_parts import num as _num
from benchmarks.report_parts import pct as _pct
from benchmarks.schema import (
    MAIN,
    Accuracy,
    CrossCpu,
    Environment,
    Int8Choice,
    Latency,
    Report,
    Scores,
    Threshold,
    Tta,
    TtaLatency,
    VariantInfo,
    VariantScores,
    plural,
)
from benchmarks.targets import folder_ceiling, folder_interpreter_ms
from runtime.choice import Choice
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
    section = _cross_cpu_section(Report(cross_cpu=result))
    assert section is not None
    return "\n".join(_markdown_section(section, {})).rstrip() + "\n"


def render_html(report: Report, examples: list[Example]) -> str:
    """One self-contained page: inline CSS, plots as base64 PNGs, no scripts or external links."""
    return _html(report, draw_plots(report, examples))


# --------------------------------------------------------------------------------------------
# Reading the report


def _size_reference(report: Report) -> VariantInfo | None:
    """The fp32 TFLite that sizes are compared with (the baseline if there is none)."""
    variants = report.variants
    fp32 = [v for v in variants if v.format == "tflite" and v.precision == "fp32"]
    main = [v for v in fp32 if v.bundle == MAIN]
    baseline = [v for v in variants if v.name == report.baseline]
    return (main or fp32 or baseline or [None])[0]


def _speedup(entry: Latency, group: list[Latency], baseline: str | None) -> float | None:
    """The baseline's p50 over this entry's p50 at the same size, threads and batch."""
    base = next((e for e in group if e.variant == baseline), None)
    return _ratio(base.p50_ms, entry.p50_ms) if base else None


# --------------------------------------------------------------------------------------------
# Sections (shared by Markdown and HTML)


def _title(report: Report) -> str:
    cpu = report.environment.cpu
    return f"Benchmark report: {cpu}" if cpu else "Benchmark report"


def _sections(report: Report) -> list[_Section]:
    builders: list[Callable[[Report], _Section | None]] = [
        _header_section,
        _targets_section,
        _latency_section,
        _peers_section,
        _size_section,
        _accuracy_section,
        objects_section,
        _tta_section,
        _per_image_section,
        _examples_section,
        _end_to_end_section,
        _cross_cpu_section,
        _cold_start_section,
        _skipped_section,
        _config_section,
    ]
    return [s for s in (build(report) for build in builders) if s is not None]


def _header_section(report: Report) -> _Section:
    env = report.environment
    flags = ", ".join(name for name, on in env.flags.items() if on)
    if env.flags and not flags:
        flags = f"none of {', '.join(env.flags)}"
    machine = (env.cpu or DASH) + (f" ({env.machine})" if env.machine else "")
    revision = (env.git.revision or DASH) + (" (uncommitted changes)" if env.git.dirty else "")
    packages = ", ".join(f"{k} {v}" for k, v in env.packages.items())
    facts = [
        ("Machine", f"{machine}, {_text(env.cores)} cores"),
        ("int8 dot product", _capability(env)),
        ("CPU flags", flags or DASH),
        ('precision="auto"', _choice_fact(report.choice)),
        ("OS", _text(env.os)),
        ("Python", _text(env.python) + (f"; {packages}" if packages else "")),
        ("Git revision", revision),
        ("Data", _data_fact(report)),
        ("Baseline for speedups", _text(report.baseline)),
        ("Created", f"{_text(report.created)} in {_num(report.wall_seconds, 0)} s"),
        ("Other processes", _load_fact(report.other_cores, env.cores)),
    ]
    return _Section("Machine and run", facts=facts)


def _load_fact(other_cores: float | None, cores: int | None) -> str:
    """How much of the machine other processes took while this report measured it."""
    if other_cores is None:
        return "not measured (no /proc/stat)"
    return f"kept {other_cores:.2f} of {_text(cores)} cores busy on average during the run"


def _capability(env: Environment) -> str:
    capability = env.int8_capability or DASH
    arch = env.microarchitecture
    return f"{capability} ({arch})" if arch and arch != "unknown" else capability


def _choice_fact(choice: Choice | None) -> str:
    """What the runtime picks on this machine (`runtime.choice`), and why."""
    if choice is None:
        return "not measured (the bundle has no golden tiles)"
    return f"{choice.file} on {choice.backend}: {choice.reason}"


def _data_fact(report: Report) -> str:
    accuracy = report.accuracy
    data = (accuracy.data if accuracy else None) or report.config.get("data") or DASH
    if accuracy is None:
        return str(data)
    labels = "with labels" if accuracy.has_labels else "no labels"
    return f"{data}, {len(accuracy.images)} images, {labels}"


def _digits(target: float) -> int:
    """Speed-ups read well with 2 decimals; Dice budgets (0.01) need 4."""
    return 4 if abs(target) < 0.1 else 2


def _targets_section(report: Report) -> _Section | None:
    targets = report.targets
    if not targets:
        return None
    rows = [
        (
            t.claim,
            _num(t.target, _digits(t.target)),
            _num(t.measured, _digits(t.target)),
            "met" if t.met else t.not_judged or "missed",
        )
        for t in targets
    ]
    met = sum(1 for t in targets if t.met)
    busy = sum(1 for t in targets if not t.met and t.not_judged)
    unjudged = f" {busy} not judged: the machine was too busy to measure them." if busy else ""
    note = report.targets_note
    return _Section(
        "Targets",
        tables=[_Table(("claim", "target", "measured", "result"), rows, "lrrl")],
        notes=[f"{met} of {len(targets)} targets met.{unjudged}", *([note] if note else [])],
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


def _latency_section(report: Report) -> _Section | None:
    groups = report.latency_groups()
    if not groups:
        return None
    baseline = report.baseline
    tables = [
        _Table(
            _LATENCY_HEADERS,
            [_latency_row(e, entries, baseline) for e in entries],
            "l" + "r" * (len(_LATENCY_HEADERS) - 1),
            caption=f"{size} px, {plural(threads, 'thread')}, batch {batch}",
        )
        for (size, threads, batch), entries in groups.items()
    ]
    if report.ceiling:
        rows = [
            (
                str(c.threads),
                _num(c.gmacs_per_s, 1),
                _num(c.blas_gmacs_per_s, 1),
                _num(c.engine_f32_gmacs_per_s, 1),
                _num(c.int8_gmacs_per_s, 1),
                _text(c.int8_kernel),
            )
            for c in report.ceiling
        ]
        headers = (
            "threads",
            "fp32 GMAC/s",
            "numpy BLAS",
            "OpenVINO f32",
            "int8 GMAC/s",
            "int8 kernel",
        )
        tables.append(_Table(headers, rows, "rrrrrl", caption="Compute ceiling"))
    notes = [
        f"Speedup: the p50 of {baseline} over the variant's p50 at the same size, threads and "
        "batch (above 1 is faster). % of ceiling: the model's GMAC/s over the float32 GEMM "
        "peak measured at that thread count (the better of numpy's BLAS and OpenVINO's f32 "
        "kernel); MACs are counted on the ONNX graph at each input's size; int8 kernels can pass it (more MACs per "
        "instruction). Timed is the interpreter's work on what the runtime runs for an image "
        "of that size: the whole image in one run where it fits the memory budget, else its "
        "tiles (a model with a fixed tile: its tiles); a batch runs as one call where the "
        "model takes a batch, else tile by tile."
    ]
    measured = {e.variant for e in report.latency}
    unmeasured = [v.name for v in report.variants if v.name not in measured]
    if unmeasured:
        notes.append(f"No latency measured for: {', '.join(unmeasured)}.")
    return _Section("Latency", tables=tables, notes=notes, plots=["latency"])


def _peers_section(report: Report) -> _Section | None:
    """The fastest model of the main bundle on each engine, per size, from the same
    interleaved run as the latency tables (the most threads, batch 1)."""
    engines = {v.name: v.engine for v in report.variants if v.bundle == MAIN and v.engine}
    threads = max((e.threads for e in report.latency), default=0)
    tables = []
    for (size, t, batch), entries in report.latency_groups().items():
        if t != threads or batch != 1:
            continue
        best: dict[str, Latency] = {}
        for e in entries:
            engine = engines.get(e.variant)
            if engine and (engine not in best or e.p50_ms < best[engine].p50_ms):
                best[engine] = e
        fastest = min((e.p50_ms for e in best.values()), default=None)
        rows = [
            (
                engine,
                e.variant,
                _num(e.p50_ms, 1),
                _times(_ratio(e.p50_ms, fastest)),
                _pct(e.of_ceiling, 0),
                _pct(e.of_int8_ceiling, 0),
            )
            for engine, e in sorted(best.items(), key=lambda item: item[1].p50_ms)
        ]
        headers = (
            "engine",
            "fastest model",
            "p50 ms",
            "vs fastest",
            "% fp32 ceiling",
            "% int8 ceiling",
        )
        tables.append(
            _Table(headers, rows, "llrrrr", caption=f"{size} px, {plural(threads, 'thread')}")
        )
    if not tables:
        return None
    note = (
        "Each engine's fastest model of the main bundle, from the latency run above (the "
        "variants took turns, so the machine's load fell on all alike). vs fastest: its p50 "
        "over the fastest engine's (1.00x is the fastest). % int8 ceiling: an int8 model's "
        "GMAC/s over the int8 GEMM measured through OpenVINO at the same threads."
    )
    return _Section("Engines side by side", tables=tables, notes=[note])


def _latency_row(entry: Latency, group: list[Latency], baseline: str | None) -> tuple:
    one_by_one = " (one by one)" if entry.batch > 1 and not entry.batched else ""
    return (
        entry.variant,
        _num(entry.p50_ms, 1),
        _num(entry.p90_ms, 1),
        _num(entry.p99_ms, 1),
        _num(entry.ms_per_image, 1),
        _num(entry.images_per_s, 2),
        "baseline" if entry.variant == baseline else _times(_speedup(entry, group, baseline)),
        _num(entry.gmacs_per_s, 1),
        _pct(entry.of_ceiling, 0),  # measured against the same process's GEMM
        _text(entry.tiles) + one_by_one,
        _text(entry.runs),
    )


def _size_section(report: Report) -> _Section | None:
    variants = report.variants
    if not variants:
        return None
    reference = _size_reference(report)
    mac_sizes = sorted({s for v in variants for s in v.macs})
    headers = (
        "variant",
        "format",
        "precision",
        "file",
        "MB",
        "gzip MB",
        f"% of {reference.name if reference else DASH}",
        *(f"GMAC @ {s} px" for s in mac_sizes),
    )
    rows = [_size_row(v, reference, mac_sizes) for v in variants]
    return _Section(
        "Size",
        tables=[_Table(headers, rows, "llll" + "r" * (len(headers) - 4))],
        notes=["MB are 10^6 bytes; gzip MB is the file compressed with gzip (a download's size)."],
        plots=["size_vs_dice"],
    )


def _size_row(variant: VariantInfo, reference: VariantInfo | None, mac_sizes: list[int]) -> tuple:
    share = _ratio(variant.size_bytes, reference.size_bytes if reference else None)
    return (
        variant.name,
        _text(variant.format),
        _text(variant.precision),
        _text(variant.file),
        _num(_scale(variant.size_bytes, 1e-6), 2),
        _num(_scale(variant.gzip_bytes, 1e-6), 2),
        _pct(share, 1),
        *(_num(_scale(variant.macs.get(s), 1e-9), 2) for s in mac_sizes),
    )


_ACCURACY_COLUMNS = (  # Scores field, header, formatter
    ("dice_vs_truth", "Dice vs truth", lambda v: _num(v, 4)),
    ("iou_vs_truth", "IoU vs truth", lambda v: _num(v, 4)),
    ("accuracy_vs_truth", "pixel accuracy", lambda v: _pct(v, 2)),
    ("dice_drop", "Dice drop", lambda v: _signed(v, 4)),
    ("agreement_with_float", "agreement with float", lambda v: _pct(v, 2)),
    ("dice_vs_float", "Dice vs float", lambda v: _num(v, 4)),
    ("max_abs_error", "max abs prob. error", lambda v: _num(v, 3)),
    ("mean_abs_error", "mean abs prob. error", lambda v: _num(v, 4)),
)


def _accuracy_section(report: Report) -> _Section | None:
    accuracy = report.accuracy
    if accuracy is None or not (accuracy.float_model or accuracy.variants):
        return None
    rows: list[tuple[str, Scores]] = []
    if accuracy.float_model is not None:
        rows.append(("float (Keras)", accuracy.float_model.overall))
    rows += [(name, result.overall) for name, result in accuracy.variants.items()]
    columns = [c for c in _ACCURACY_COLUMNS if any(getattr(r, c[0]) is not None for _, r in rows)]
    table = _Table(
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
    return _Section("Accuracy", facts=_accuracy_facts(accuracy), tables=[table], notes=notes)


def _accuracy_facts(accuracy: Accuracy) -> list[tuple[str, str]]:
    """The threshold each bundle's masks are made at, and which int8 method the main one took
    (reports made before these were recorded show neither)."""
    facts = [
        ("Masks" if label == MAIN else f"Masks [{label}]", _threshold_fact(threshold))
        for label, threshold in sorted(accuracy.thresholds.items(), key=lambda i: i[0] != MAIN)
    ]
    if accuracy.int8_choice is not None:
        facts.append(("int8 model", _int8_choice_fact(accuracy.int8_choice)))
    return facts


def _threshold_fact(threshold: Threshold) -> str:
    """'threshold 0.45 (calibrated on 5 validation images: float Dice 0.8123 there, 0.8050 at
    0.5)', or 'threshold 0.5' for a bundle that did not calibrate."""
    if threshold.threshold is None:
        return "the argmax of the softmax (no threshold)"
    text = f"threshold {threshold.threshold:g}"
    if threshold.images is None:
        return text
    return (
        f"{text} (calibrated on {plural(threshold.images, 'validation image')}: float Dice "
        f"{_num(threshold.dice, 4)} there, {_num(threshold.dice_at_default, 4)} at 0.5)"
    )


_METHODS = {"qat": "QAT", "ptq": "post-training"}


def _int8_choice_fact(choice: Int8Choice) -> str:
    """'QAT, by Dice against the labels (QAT: Dice 0.8123, agreement 99.10 %; ...)'."""
    figures = "; ".join(
        f"{_METHODS[key]}: Dice {_num(scores.dice_vs_truth, 4)}, agreement with float "
        f"{_pct(scores.agreement_with_float, 2)}"
        for key, scores in (("qat", choice.qat), ("ptq", choice.ptq))
        if scores is not None
    )
    chosen = _METHODS.get(choice.chosen or "", _text(choice.chosen))
    return f"{chosen}, by {_text(choice.by)}" + (f" ({figures})" if figures else "")


def _tta_section(report: Report) -> _Section | None:
    """Per runtime model: its Dice with each TTA kind and the gain of d4; its time per image at
    each size with each kind and the ratio to none."""
    tta = report.tta
    if tta is None or not (tta.scores or tta.latency):
        return None
    scores = _tta_scores_table(report, tta)
    tables = [scores] if scores else []
    by_size: dict[int, list[TtaLatency]] = {}
    for entry in tta.latency:
        by_size.setdefault(entry.size, []).append(entry)
    tables += [_tta_latency_table(size, by_size[size], tta.kinds) for size in sorted(by_size)]
    note = (
        "Test-time augmentation (the runtime's tta): the model's probabilities averaged over "
        "the 4 flips (flips) or the 8 flips and rotations (d4) of the image, then thresholded "
        "as without. Scored on the held-out images of the accuracy table (none is its figure); "
        "agreement with float is against the float model without augmentation, so it may fall "
        "where Dice rises. Timed: Segmenter.predict on one image, the kinds taking turns "
        "(p50); the views of one orientation run as one batch where the memory budget allows."
    )
    if _finite(tta.wall_seconds):
        note += f" Measuring augmentation added {_num(tta.wall_seconds, 0)} s to this run."
    notes = [note]
    return _Section("Test-time augmentation", tables=tables, notes=notes)


def _tta_scores_table(report: Report, tta: Tta) -> _Table | None:
    if not tta.scores:
        return None
    kinds = tta.kinds or tuple(dict.fromkeys(k for kinds in tta.scores.values() for k in kinds))
    has_truth = any(s.dice_vs_truth is not None for v in tta.scores.values() for s in v.values())
    key, label = ("dice_vs_truth", "Dice") if has_truth else ("agreement_with_float", "agreement")
    best = "d4" if "d4" in kinds else kinds[-1]  # the most views

    def value(name: str, kind: str, field: str) -> float | None:
        scores = tta.scores[name].get(kind)
        return getattr(scores, field) if scores else None

    def gain(name: str) -> float | None:
        after, before = value(name, best, key), value(name, "none", key)
        return after - before if _finite(after) and _finite(before) else None

    names = [n for n in report.variant_names() if n in tta.scores]
    names += [n for n in tta.scores if n not in names]
    fmt = (lambda v: _num(v, 4)) if has_truth else (lambda v: _pct(v, 2))
    rows = [
        (
            name,
            *(fmt(value(name, kind, key)) for kind in kinds),
            _signed(gain(name), 4) if has_truth else _points(gain(name)),
            *(_pct(value(name, kind, "agreement_with_float"), 2) for kind in kinds if has_truth),
        )
        for name in names
    ]
    headers = (
        "variant",
        *(f"{label} {kind}" for kind in kinds),
        f"{best} gain",
        *(f"agreement {kind}" for kind in kinds if has_truth),
    )
    images = len(report.accuracy.images) if report.accuracy else 0
    what = "Dice vs truth" if has_truth else "Agreement with float"
    caption = f"{what} on the {plural(images, 'held-out image')}" if images else what
    return _Table(headers, rows, "l" + "r" * (len(headers) - 1), caption=caption)


def _tta_latency_table(size: int, entries: list[TtaLatency], kinds: tuple[str, ...]) -> _Table:
    kinds = kinds or tuple(dict.fromkeys(e.tta for e in entries))
    ms = {(e.variant, e.tta): e for e in entries}
    names = list(dict.fromkeys(e.variant for e in entries))
    others = [k for k in kinds if k != "none"]

    def p50(name: str, kind: str) -> float | None:
        entry = ms.get((name, kind))
        return entry.p50_ms if entry else None

    rows = [
        (
            name,
            *(_num(p50(name, kind), 1) for kind in kinds),
            *(_times(_ratio(p50(name, kind), p50(name, "none"))) for kind in others),
            _text(min((e.runs for e in entries if e.variant == name and e.runs), default=None)),
        )
        for name in names
    ]
    headers = (
        "variant",
        *(f"{kind} ms" for kind in kinds),
        *(f"{kind} / none" for kind in others),
        "runs",
    )
    threads = entries[0].threads
    caption = f"ms per image, {size} px, {plural(threads, 'thread')}, p50"
    return _Table(headers, rows, "l" + "r" * (len(headers) - 1), caption=caption)


def _per_image_section(report: Report) -> _Section | None:
    tables = _per_image_tables(report.accuracy) if report.accuracy else []
    return _Section("Accuracy per image", tables=tables, plots=["parity"]) if tables else None


def _per_image_tables(accuracy: Accuracy) -> list[_Table]:
    variants, images = accuracy.variants, accuracy.images
    if not images or not variants:
        return []
    names = list(variants)

    def value(scores: VariantScores | None, image: str, key: str) -> float | None:
        found = scores.per_image.get(image) if scores else None
        return getattr(found, key) if found else None

    tables = [
        _Table(
            ("image", *names),
            [
                (i, *(_pct(value(variants[n], i, "agreement_with_float"), 2) for n in names))
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
                _num(value(accuracy.float_model, i, "dice_vs_truth"), 4),
                *(_num(value(variants[n], i, "dice_vs_truth"), 4) for n in names),
            )
            for i in images
        ]
        headers = ("image", "float (Keras)", *names)
        tables.append(
            _Table(headers, rows, "l" + "r" * (len(headers) - 1), "Dice vs truth per image", True)
        )
    return tables


def _examples_section(report: Report) -> _Section:
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


def _runs(count: int | None, tile: tuple[int, int] | None) -> str:
    """'2 x 256x512': interpreter runs x their input (height x width)."""
    return f"{_text(count)} x {'x'.join(map(str, tile)) if tile else DASH}"


def _end_to_end_section(report: Report) -> _Section | None:
    e2e = report.end_to_end
    if not e2e.sizes:
        return None
    rows = [
        (
            e.variant,
            str(e.size),
            _runs(e.count, e.tile),
            str(e.batch),
            _num(e.runtime_ms, 1),
            _num(e.interpreter_ms, 1),
            _times(_ratio(e.runtime_ms, e.interpreter_ms)),
        )
        for e in sorted(e2e.sizes, key=lambda e: (e.variant, e.size))
    ]
    headers = (
        "variant",
        "image px",
        "runs x input",
        "batch",
        "runtime ms",
        "interpreter ms",
        "runtime / interpreter",
    )
    caption = f"One image, {plural(e2e.sizes[0].threads, 'thread')}, p50"
    tables = [_Table(headers, rows, "lrlrrrr", caption=caption)]
    if e2e.memory:
        memory_rows = [
            (
                e.variant,
                _text(e.size),
                _num(e.max_memory_mb, 0),
                _runs(e.count, e.tile),
                _num(e.first_inference_s, 3),
                _num(e.peak_rss_mb, 1),
                e.error or "",
            )
            for e in e2e.memory
        ]
        headers = (
            "variant",
            "image px",
            "max_memory_mb",
            "runs x input",
            "first inference s",
            "peak RSS MB",
            "error",
        )
        caption = "A fresh process segmenting one image"
        tables.append(_Table(headers, memory_rows, "lrrlrrl", caption=caption))
    if e2e.folder:
        single = {(e.variant, e.size): e for e in e2e.sizes}
        folder_rows = []
        for e in e2e.folder:
            one = single.get((e.variant, e.size))
            interpreter_ms = folder_interpreter_ms(e, one)
            ceiling = folder_ceiling(interpreter_ms, one.threads, e) if one else None
            folder_rows.append(
                (
                    e.variant,
                    f"{e.images} x {e.size} px",
                    _num(e.images_per_s, 2),
                    _num(_ratio(1e3, interpreter_ms), 2),
                    _num(e.pipeline_ms, 1),
                    str(e.cores or ""),
                    _num(ceiling, 2),
                    _num(e.other_cores, 2),
                )
            )
        headers = (
            "variant",
            "folder",
            "runtime.predict images/s",
            "interpreter images/s",
            "pipeline ms/image",
            "cores",
            "cores allow images/s",
            "other processes' cores",
        )
        caption = "A folder of PNGs through runtime.predict's pipeline"
        tables.append(_Table(headers, folder_rows, "lrrrrrrr", caption=caption))
    budget = report.config.get("max_memory_mb")
    return _Section(
        "Whole images end to end",
        tables=tables,
        notes=[
            "Runtime: Segmenter.predict on one image already in memory (pre-processing, the "
            "interpreter runs, stitching, threshold), against the interpreter alone on the same "
            "inputs, taking turns. A model that takes any size runs the whole image (padded to "
            "the pooling grid) when one run fits the memory budget"
            + (f" (max_memory_mb {budget:g})" if isinstance(budget, int | float) else "")
            + ", else the tiles that fit: 'runs x input' shows which. Peak RSS: a fresh "
            "process that imports the runtime, loads the model and segments one image of that "
            "size (VmHWM, MB = 10^6 bytes); an int8 model that needs more than the target for "
            "a 512 px image in one pass is measured again with a budget that tiles it. The "
            "folder: decoding, pre-processing and writing the PNG masks overlap the "
            "interpreter's runs; 'pipeline ms' is that work on one image, one stage after "
            "another, and 'cores allow' the interpreter's rate (timed between the folder's "
            "passes), or where its threads and that work need more than the cores, cores / "
            "(threads x interpreter + pipeline). Other processes' cores: the CPU other "
            f"processes took meanwhile; above {BUSY_CORES:g} the folder's target is not judged.",
        ],
    )


def _cross_cpu_section(report: Report) -> _Section | None:
    result = report.cross_cpu
    if result is None:
        return None
    labels = {run.cpu: run.label for run in result.runs}
    verdict = {True: "ok", False: "FAIL", None: DASH}
    rows = [
        (
            labels.get(m.cpu, m.cpu),
            m.model,
            m.engine,
            _pct(m.agreement, 2),
            _num(m.max_probability_difference, 3),
            verdict[m.verified],
        )
        for m in result.models
    ]
    headers = ("emulated CPU", "model", "engine", "masks = here", "max prob diff", "verify")
    facts = [("this machine", result.host), ("measured", result.created)]
    facts += [
        (
            f"{run.label} (qemu -cpu {run.qemu_cpu})",
            f"seen as {run.seen_as}; perturbed int8 ONNX: verify exit {run.perturbed_exit}; "
            f"{run.seconds:.0f} s",
        )
        for run in result.runs
    ]
    note = (
        "The bundle's models on its golden tiles under qemu-user (`make cross-cpu`) against this "
        "machine. The control is the fp32 ONNX quantized with full-range int8 weights: the AVX2 "
        "kernels saturate on it, so its masks must differ on Haswell, which shows the emulated "
        "kernels ran. A copy of the bundle with perturbed int8 ONNX weights must fail "
        "runtime.verify (exit 1) on every CPU."
    )
    table = _Table(headers, rows, "lllrrl")
    return _Section("Cross-CPU (emulated)", facts=facts, tables=[table], notes=[note])


def _cold_start_section(report: Report) -> _Section | None:
    entries = report.cold_start
    if not entries:
        return None
    rows = [
        (
            e.variant,
            _num(e.seconds, 3),
            _num(e.import_s, 3),
            _num(e.load_s, 3),
            _num(e.first_inference_s, 3),
            _num(e.peak_rss_mb, 1),
            {True: "yes", False: "no"}.get(e.tensorflow_imported, DASH),
            e.error or "",
        )
        for e in entries
    ]
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
    if not any(e.error for e in entries):  # the column only when a process failed
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    sizes = sorted({e.size for e in entries if e.size is not None})
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


def _skipped_section(report: Report) -> _Section | None:
    if not report.skipped:
        return None
    rows = [(s.name, s.reason) for s in report.skipped]
    return _Section("Skipped variants", tables=[_Table(("variant", "reason"), rows, "ll")])


def _config_section(report: Report) -> _Section | None:
    if not report.config:
        return None
    return _Section("Configuration", facts=[(k, _plain(v)) for k, v in report.config.items()])


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def _scale(value: float | None, factor: float) -> float | None:
    return value * factor if _finite(value) else None


def _signed(value: float | None, digits: int) -> str:
    return f"{value:+.{digits}f}" if _finite(value) else DASH


def _points(fraction: float | None) -> str:
    """A change of a share, in percentage points."""
    return f"{fraction * 100:+.2f} pp" if _finite(fraction) else DASH


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if _finite(value) else DASH


def _text(value: object) -> str:
    return DASH if value is None else str(value)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or DASH
    return _text(value)
