"""The benchmark report's plots: latency bars, size against quality, Dice against milliseconds
with the Pareto front, per-image parity and the example overlays, each a captioned PNG.

Drawn with matplotlib's object API (no pyplot): no global backend is switched and no figure
outlives its function, which matters inside a harness that also measures memory.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.pareto import front
from benchmarks.schema import Report, plural

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


def draw_plots(report: Report, examples: Sequence[Example]) -> dict[str, tuple[str, bytes]]:
    """Every plot the report has data for: key -> (caption, PNG bytes)."""
    plots: dict[str, tuple[str, bytes]] = {}
    for key, draw in (
        ("latency", _plot_latency),
        ("size_vs_dice", _plot_size_vs_quality),
        ("pareto", _plot_pareto),
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


def _plot_latency(report: Report) -> tuple[str, bytes] | None:
    """Grouped bars at batch 1: one group per (size, threads), p50 with p90 as the error bar."""
    groups = {k: v for k, v in report.latency_groups().items() if k[2] == 1}
    timed = {e.variant for g in groups.values() for e in g}
    names = [n for n in report.variant_names() if n in timed]
    if not groups or not names:
        return None
    width = 0.8 / len(names)
    figure = _figure(max(5.0, 1.2 + len(groups) * len(names) * 0.3), 3.8)
    axes = figure.add_subplot()
    for i, name in enumerate(names):
        p50, p90 = [], []
        for entries in groups.values():
            entry = next((e for e in entries if e.variant == name), None)
            p50.append(_float(entry.p50_ms if entry else None))
            p90.append(_float(entry.p90_ms if entry else None))
        low = [0.0] * len(p50)
        high = [
            max(0.0, b - a) if math.isfinite(a + b) else 0.0 for a, b in zip(p50, p90, strict=True)
        ]
        x = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        axes.bar(x, p50, width, yerr=[low, high], capsize=2, label=name)
    axes.set_xticks(range(len(groups)))
    axes.set_xticklabels([f"{s} px\n{plural(t, 'thread')}" for s, t, _ in groups])
    axes.set_ylabel("p50 latency, ms (bar: p90)")
    axes.set_title("Latency per variant, batch 1")
    figure.legend(loc="outside lower center", fontsize="small", ncols=min(4, len(names)))
    return "Latency per variant at batch 1: p50, with p90 as the error bar", _png(figure)


def _quality_points(report: Report) -> list[tuple[str, float, float]]:
    """(variant, size MB, score) of every variant with both a size and a score."""
    key, _ = report.ranking_score()
    points = []
    for variant in report.variants:
        overall = report.overall(variant.name)
        value = getattr(overall, key) if overall else None
        if variant.size_bytes and value is not None and math.isfinite(value):
            points.append((variant.name, variant.size_bytes / 1e6, value))
    return points


def _pareto(points: Iterable[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The points that no other point beats: smaller or equal and at least as accurate
    (`benchmarks.pareto.front`), smallest first."""
    points = list(points)
    return [points[i] for i in front([(p[1], p[2]) for p in points])]


def _plot_size_vs_quality(report: Report) -> tuple[str, bytes] | None:
    points = _quality_points(report)
    if not points:
        return None
    _, label = report.ranking_score()
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


def _plot_pareto(report: Report) -> tuple[str, bytes] | None:
    """Dice against p50 ms of every verified (model, engine) pair (`Report.pareto`): a marker per
    bundle, the front as a red staircase, the recommended pair ringed in green, the float
    model's Dice and the band its budget allows. Pairs far below the band (more than three
    budgets) sit on the bottom edge as triangles with their Dice in the label, so that the
    pairs a choice is made between are not squeezed into a line."""
    pareto = report.pareto
    if pareto is None or not pareto.points:
        return None
    top = pareto.float_dice if pareto.float_dice is not None else math.nan
    floor = top - 3 * max(pareto.budget, 0.005) if math.isfinite(top) else -math.inf
    low = [p for p in pareto.points if p.dice < floor]
    shown = {p.variant: max(p.dice, floor) for p in pareto.points}  # y as drawn
    figure = _figure(7.5, 4.8)
    axes = figure.add_subplot()
    bundles = list(dict.fromkeys(p.bundle for p in pareto.points))
    for k, bundle in enumerate(bundles):
        mine = [p for p in pareto.points if p.bundle == bundle and p.dice >= floor]
        if not mine:
            continue
        axes.scatter(
            [p.ms for p in mine],
            [p.dice for p in mine],
            color="#888",
            marker="osD^<P*X"[k % 8],
            label=f"bundle {bundle}" if len(bundles) > 1 else "verified pairs",
            zorder=2,
        )
    if low:
        axes.scatter(
            [p.ms for p in low],
            [floor] * len(low),
            color="#888",
            marker="v",
            label=f"Dice below {floor:.3f} (in the label)",
            zorder=2,
        )
    by_name = {p.variant: p for p in pareto.points}
    line = [by_name[name] for name in pareto.front if name in by_name]
    axes.plot(
        [p.ms for p in line],
        [shown[p.variant] for p in line],
        "-",
        drawstyle="steps-post",
        color="#c0392b",
        label="Pareto front",
        zorder=3,
    )
    axes.scatter(
        [p.ms for p in line], [shown[p.variant] for p in line], color="#c0392b", s=16, zorder=3
    )
    if math.isfinite(top):
        axes.axhline(top, color="#555", linestyle="--", linewidth=1, label=f"float model {top:.4f}")
        axes.axhspan(
            top - pareto.budget,
            top,
            color="#2e7d32",
            alpha=0.08,
            label=f"within {pareto.budget:g} Dice of it",
        )
    chosen = by_name.get(pareto.recommended or "")
    if chosen is not None:
        axes.scatter(
            [chosen.ms],
            [chosen.dice],
            s=200,
            facecolors="none",
            edgecolors="#2e7d32",
            linewidths=2,
            label=f"recommended: {chosen.variant}",
            zorder=4,
        )
    times = [p.ms for p in pareto.points]
    if max(times) / min(times) > 8:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
    label = "Dice vs truth" if pareto.score == "dice_vs_truth" else "Dice vs float"
    axes.set_xlabel(f"p50 ms at {pareto.size} px, {plural(pareto.threads, 'thread')}, batch 1")
    axes.set_ylabel(label)
    axes.set_title(f"{label} against latency")
    axes.margins(x=0.12, y=0.12)  # room for the labels beside the points
    figure.legend(loc="outside lower center", fontsize="small", ncols=3)
    names = [p.variant + (f" ({p.dice:.3f})" if p.dice < floor else "") for p in pareto.points]
    _place_labels(
        figure,
        axes,
        [(n, p.ms, shown[p.variant]) for n, p in zip(names, pareto.points, strict=True)],
        next((i for i, p in enumerate(pareto.points) if p is chosen), None),
    )
    caption = (
        f"{label} against p50 ms at {pareto.size} px, {plural(pareto.threads, 'thread')}, of "
        "every verified (model, engine) pair; red: the Pareto front (no pair is as fast and as "
        "accurate); ringed: the recommended pair, the fastest within the Dice budget"
    )
    return caption, _png(figure)


def _place_labels(
    figure, axes, points: list[tuple[str, float, float]], ringed: int | None = None
) -> None:
    """Labels each (name, x, y) point where its text overlaps no other label or point: beside
    it, else above or below at growing distances (with a thin line back to the point), fastest
    point first; the point at index `ringed` has a ring around it to keep clear. Measured on the
    laid-out figure, so it holds for any number of points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()  # the layout and the limits are final from here
    frame = axes.get_window_extent(renderer)
    pixel = DPI / 72  # pixels per point
    centres = [axes.transData.transform((x, y)) for _, x, y in points]
    taken = [(cx - 5, cy - 5, cx + 5, cy + 5) for cx, cy in centres]
    if ringed is not None:
        cx, cy = centres[ringed]
        taken.append((cx - 9, cy - 9, cx + 9, cy + 9))
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][2]))
    for i in order:
        name, x, y = points[i]
        cx, cy = centres[i]
        text = axes.annotate(
            name,
            (x, y),
            xytext=(0, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
            in_layout=False,
        )
        width = text.get_window_extent(renderer).width
        height = 7 * 1.3 * pixel
        chosen = None
        for dx, dy in _label_candidates(width, height):
            box = (cx + dx, cy + dy - height / 2, cx + dx + width, cy + dy + height / 2)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1
            inside = inside and frame.y0 <= box[1] and box[3] <= frame.y1
            if inside and not any(_overlap(box, other) for other in taken):
                chosen = dx, dy
                break
        dx, dy = chosen or (8.0, 0.0)
        text.set_position((dx / pixel, dy / pixel))
        if abs(dy) > height:
            axes.annotate(
                "",
                (x, y),
                xytext=((dx + (0 if dx > 0 else width)) / pixel, dy / pixel),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": "#aaa", "linewidth": 0.5},
                in_layout=False,
            )
        taken.append((cx + dx, cy + dy - height / 2, cx + dx + width, cy + dy + height / 2))


def _label_candidates(width: float, height: float) -> list[tuple[float, float]]:
    """Offsets in pixels of a label's left end from its point: right, left, then above and
    below at growing distances."""
    gap = 8.0  # clear of the marker and of the recommended pair's ring
    found = [(gap, 0.0), (-gap - width, 0.0)]
    for step in range(1, 8):
        rise = step * height
        found += [(gap, rise), (gap, -rise), (-gap - width, rise), (-gap - width, -rise)]
        found += [(-width / 2, rise + 3), (-width / 2, -rise - 3)]
    return found


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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


def _plot_parity(report: Report) -> tuple[str, bytes] | None:
    accuracy = report.accuracy
    if accuracy is None or not accuracy.images or not accuracy.variants:
        return None
    images = accuracy.images
    figure = _figure(max(6.5, 3.0 + 0.25 * len(images)), 3.2)
    axes = figure.add_subplot()
    drawn = False
    for name, result in accuracy.variants.items():
        found = [result.per_image.get(i) for i in images]
        values = [_float(f.agreement_with_float if f else None) * 100 for f in found]
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


def _float(value: float | None) -> float:
    """NaN where a value was not measured: matplotlib leaves a gap."""
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _unique(key: str, taken: Mapping[str, Any]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        candidate, n = f"{key}-{n}", n + 1
    return candidate
