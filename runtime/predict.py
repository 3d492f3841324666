"""`python -m runtime.predict BUNDLE INPUT... --out DIR`: segment image files with a bundle.

One mask PNG per image; a multi-page TIFF stack gives a mask stack with the same page count.
With a bundle that records what its training images look like, `quality.csv` beside the masks
says per image whether it looks unlike them (`runtime.quality`), and one line sums it up.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import logging
import os
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.backends import BACKENDS
from runtime.config import ConfigBase, require, stage_config
from runtime.errors import UserError
from runtime.image_io import IMAGE_SUFFIXES, read_pages, write_tiff_stack
from runtime.io import atomic_path
from runtime.log import add_verbosity, configure
from runtime.memory import DEFAULT_MAX_MEMORY_MB
from runtime.metrics import check_threshold
from runtime.quality import STATISTICS, Quality
from runtime.segmenter import Prediction, Prepared, Segmenter, overlay
from runtime.tta import TTA_KINDS, check_tta, view_count

log = logging.getLogger("runtime.predict")  # not __name__: "__main__" under python -m
# Niceness of the pipeline's reading and writing threads (0 normal, 19 lowest).
PIPELINE_NICENESS = 19
QUALITY_CSV = "quality.csv"
FLAGGED_EXIT = 3  # --fail-on-flag: an image looks unlike the training images


@dataclasses.dataclass(frozen=True)
class PredictConfig(ConfigBase):
    """The `runtime` section of the chain's YAML; flags override it."""

    precision: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    threshold: float | None = None
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    overlay: bool = False
    verify: bool = False
    tta: str = "none"
    fail_on_flag: bool = False

    def check(self) -> None:
        require(
            self.max_memory_mb > 0, f"max_memory_mb must be positive, got {self.max_memory_mb:g}"
        )
        require(
            self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"
        )
        check_threshold(self.threshold)
        check_tta(self.tta)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    c = PredictConfig()
    parser = argparse.ArgumentParser(
        prog="python -m runtime.predict",
        description="Segment images with a bundle's model; writes one mask PNG per image, and "
        "a multi-page mask TIFF per TIFF stack.",
        argument_default=None,  # None = not given: --config or PredictConfig decides
    )
    parser.add_argument(
        "bundle",
        type=Path,
        help="bundle folder (with manifest.json), or a bioimage.io model package (.zip or "
        "folder) with ONNX weights",
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="folder for the mask PNGs")
    parser.add_argument(
        "--config",
        type=Path,
        help="the chain's YAML (its runtime section), or a file of these settings; flags "
        "override it",
    )
    parser.add_argument(
        "--precision",
        help="which model of the bundle: auto (the fastest this device verifies, chosen once and "
        f"cached), int8 (the gated one), fp32, ... (default: {c.precision})",
    )
    parser.add_argument("--backend", help=f"auto, {', '.join(BACKENDS)} (default: {c.backend})")
    parser.add_argument(
        "--threads", type=int, help="interpreter threads (default: the interpreter's choice)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="sigmoid threshold (default: the bundle's, chosen on its validation images)",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_KINDS,
        help="test-time augmentation: the mean of the model's output over 4 flips (flips) or "
        f"8 flips and rotations (d4): better masks at 4x or 8x the time (default: {c.tta})",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        default=None,
        help="check the model on the bundle's golden tiles (a package: its test tensors) first "
        "(exit 1 if it fails here)",
    )
    parser.add_argument(
        "--overlay",
        action="store_true",
        default=None,
        help="also write the image with the mask tinted on it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace masks already in --out")
    parser.add_argument(
        "--fail-on-flag",
        action="store_true",
        default=None,
        help=f"exit {FLAGGED_EXIT} when any image looks unlike the training images (after "
        f"writing every mask and {QUALITY_CSV}); needs a bundle with a quality reference",
    )
    parser.add_argument(
        "--rechoose",
        action="store_true",
        help="with --precision auto, time the (model, engine) pairs again instead of reading "
        "the cached choice (after a CPU, load or engine change the cache did not see)",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=float,
        help="memory one interpreter run may take: an image that fits runs in one pass, a "
        f"larger one in the tiles that fit (default: {c.max_memory_mb:g})",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, and the image files of folders in name order; nothing is a UserError."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"input {path} does not exist: give image files or folders")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found


def check_outputs(images: list[Path], out: Path, overwrite: bool) -> None:
    """Refuses, before any work, two inputs that would write the same mask, and masks already
    in `out` (unless `overwrite`): a mask is never replaced silently."""
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise UserError(
                f"{seen[path.stem]} and {path} would both write {path.stem}_mask: rename one "
                "or segment them into different --out folders"
            )
        seen[path.stem] = path
    if overwrite or not out.is_dir():
        return
    taken = [
        f"{stem}_{kind}{suffix}"
        for stem in seen
        for kind in ("mask", "overlay")
        for suffix in (".png", ".tif")
        if (out / f"{stem}_{kind}{suffix}").exists()
    ]
    if taken:
        shown = ", ".join(taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise UserError(f"{out} already holds {shown}: pass --overwrite or choose another --out")


def mask_pixels(mask: np.ndarray, classes: int) -> np.ndarray:
    """Binary masks as 0/255 so they can be looked at; class-index masks as they are."""
    return (mask * 255).astype(np.uint8) if classes == 1 else mask


def _save(pages: list[np.ndarray], path: Path) -> Path:
    """One page as PNG, a stack as a multi-page TIFF of the same page count; atomically."""
    target = path.with_suffix(".png" if len(pages) == 1 else ".tif")
    with atomic_path(target) as tmp:
        if len(pages) == 1:
            # zlib level 1: a 512 px mask takes 5 ms instead of 24 at the default level 6,
            # CPU time the interpreter needs on a small device; masks compress well anyway.
            Image.fromarray(pages[0]).save(tmp, format="PNG", compress_level=1)
        else:
            write_tiff_stack(tmp, pages)
    return target


@dataclasses.dataclass(frozen=True)
class ReadFile:
    path: Path
    pages: list[np.ndarray]
    prepared: list[Prepared]


def read_file(segmenter: Segmenter, path: Path) -> ReadFile:
    """The pipeline's first stage: a file decoded and pre-processed (`benchmarks` times it)."""
    pages = read_pages(path)
    return ReadFile(path, pages, [segmenter.prepare(page) for page in pages])


def write_masks(
    read: ReadFile, results: list[Prediction], classes: int, out: Path, tint: bool
) -> None:
    """The pipeline's last stage: the masks (and overlays) of one file, written atomically."""
    _save([mask_pixels(r.mask, classes) for r in results], out / f"{read.path.stem}_mask")
    if tint:
        tinted = [overlay(p, r.mask) for p, r in zip(read.pages, results, strict=True)]
        _save(tinted, out / f"{read.path.stem}_overlay")


@dataclasses.dataclass(frozen=True)
class Assessed:
    """One page's quality record, for quality.csv and the closing line."""

    file: str
    page: int  # 1-based; 1 for a single image
    quality: Quality


def segment_files(
    segmenter: Segmenter,
    images: list[Path],
    out: Path,
    threshold: float | None = None,
    tint: bool = False,
) -> list[Assessed]:
    """Segments the files in a pipeline: one thread decodes and pre-processes the next image
    (and takes its input statistics) and another writes the last masks while the interpreter
    runs this one (LiteRT and onnxruntime release the GIL while they compute). Returns each
    page's quality record (none when the bundle has no quality reference)."""
    progress = _progress(images)
    noted: Counter[str] = Counter()  # notes on the input, said once, then counted
    assessed: list[Assessed] = []
    with (
        ThreadPoolExecutor(1, initializer=_yield_to_the_interpreter) as reader,
        ThreadPoolExecutor(1, initializer=_yield_to_the_interpreter) as writer,
    ):
        reads = iter(reader.submit(read_file, segmenter, path) for path in images)
        upcoming, written = next(reads), None
        for _ in progress:
            read = upcoming.result()
            upcoming = next(reads, None)  # starts decoding the next file now
            for note in dict.fromkeys(p.note for p in read.prepared if p.note):
                segmenter.say_once(note, read.path.name)
                noted[note] += 1
            results = [segmenter.predict_prepared(p, threshold) for p in read.prepared]
            if written is not None:
                written.result()  # one write in flight at most: masks do not pile up
            written = writer.submit(
                write_masks, read, results, segmenter.manifest.classes, out, tint
            )
            ms = sum(r.seconds for r in results) * 1000
            stack = f" ({len(read.pages)} pages)" if len(read.pages) > 1 else ""
            tiles = sum(r.tiles for r in results)
            pages = [
                Assessed(read.path.name, page, r.quality)
                for page, r in enumerate(results, 1)
                if r.quality is not None
            ]
            assessed += pages
            _report(
                progress, f"{read.path.name}{stack}: {ms:.0f} ms, {tiles} tile(s){_flags(pages)}"
            )
        if written is not None:
            written.result()
    for note, files in noted.items():
        if files > 1:
            log.warning("%d of %d files: %s", files, len(images), note)
    return assessed


def _flags(pages: list[Assessed]) -> str:
    """The progress line's tail for a file with flagged pages: the first one's reason."""
    flagged = [a for a in pages if a.quality.flag]
    if not flagged:
        return ""
    where = f"page {flagged[0].page}: " if len(pages) > 1 else ""
    more = f" (and {len(flagged) - 1} more)" if len(flagged) > 1 else ""
    return f"; unlike the training images: {where}{flagged[0].quality.reason}{more}"


def quality_rows(assessed: list[Assessed]) -> list[dict[str, str]]:
    """quality.csv's rows: file, page, each statistic, the worst one and its distance (in
    training ranges outside the training range), flag (1/0), the kind of change and reason."""
    rows = []
    for a in assessed:
        q = a.quality
        values = {n: f"{q.statistics[n]:.6g}" for n in STATISTICS if n in q.statistics}
        rows.append(
            {"file": a.file, "page": str(a.page)}
            | values
            | {
                "worst": q.worst,
                "distance": f"{q.distances.get(q.worst, 0.0):.3g}",
                "flag": str(int(q.flag)),
                "group": q.group,
                "reason": q.reason,
            }
        )
    return rows


def write_quality(out: Path, assessed: list[Assessed]) -> Path:
    """Writes quality.csv in `out` (atomically); rows of other files from an earlier run into
    the same folder are kept, this run's files replace theirs."""
    path, rows = out / QUALITY_CSV, quality_rows(assessed)
    kept: list[dict[str, str]] = []
    if path.is_file():
        files = {row["file"] for row in rows}
        try:
            with open(path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if row.get("file") not in files]
        except (csv.Error, UnicodeDecodeError):
            raise UserError(
                f"{path} is not a {QUALITY_CSV} this command wrote: move it or choose another --out"
            ) from None
    columns = list(dict.fromkeys(key for row in [*rows, *kept] for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows([*kept, *rows])
    return path


def quality_summary(assessed: list[Assessed]) -> str:
    """'3 of 120 images look unlike the training images: 2 sharpness, 1 intensity'."""
    flagged = Counter(a.quality.group for a in assessed if a.quality.flag)
    count = sum(flagged.values())
    line = f"{count} of {len(assessed)} images look unlike the training images"
    kinds = ", ".join(f"{n} {group}" for group, n in flagged.most_common())
    return f"{line}: {kinds}" if kinds else line


def _yield_to_the_interpreter() -> None:
    """Lowers this pipeline thread's priority (Linux: per thread), so that decoding and writing
    fill the cores' idle moments instead of preempting the interpreter's threads.

    An interpreter splits each layer across its threads and waits for the slowest: a decode
    that takes one thread's core for a few ms stalls them all.
    """
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PIPELINE_NICENESS)


def _say_decision(segmenter: Segmenter, threshold: float | None) -> None:
    """The stderr line that says how masks are made: threshold and test-time augmentation."""
    m = segmenter.manifest
    if m.activation == "sigmoid":
        source = "--threshold" if threshold is not None else "the bundle's"
        used = m.threshold if threshold is None else threshold
        decision = f"threshold {used:g} ({source})"
    else:
        decision = "the most probable class"
    views = "" if segmenter.tta == "none" else f", mean of {view_count(segmenter.tta)} views"
    log.info("masks: %s%s", decision, views)


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        config = stage_config(PredictConfig, args.config, "runtime", vars(args))
        images = collect_images(args.inputs)
        check_outputs(images, args.out, bool(args.overwrite))
        segmenter = Segmenter.from_bundle(
            args.bundle,
            config.precision,
            config.backend,
            config.threads,
            verify=config.verify,
            max_memory_mb=config.max_memory_mb,
            rechoose=bool(args.rechoose),
            tta=config.tta,
        )
        _say_decision(segmenter, config.threshold)
        if segmenter.reference is None:
            if config.fail_on_flag:
                raise UserError(
                    f"--fail-on-flag: {args.bundle} records no quality reference (a bundle made "
                    "before them, or a package from elsewhere): rebuild it with optimize.quantize"
                )
            log.info("quality: %s records no quality reference: no %s", args.bundle, QUALITY_CSV)
        args.out.mkdir(parents=True, exist_ok=True)
        assessed = segment_files(segmenter, images, args.out, config.threshold, config.overlay)
        if assessed:
            written = write_quality(args.out, assessed)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(
            f"error: cannot write to {args.out} ({error.strerror}): choose another --out",
            file=sys.stderr,
        )
        return 2
    print(f"{len(images)} mask(s) in {args.out}")
    if assessed:
        print(f"{quality_summary(assessed)} ({written})")
        if config.fail_on_flag and any(a.quality.flag for a in assessed):
            return FLAGGED_EXIT
    return 0


def _progress(images: list[Path]):
    """A tqdm bar for many files when tqdm is installed; the plain list otherwise."""
    if len(images) < 5:
        return images
    try:
        from tqdm import tqdm
    except ImportError:
        return images
    return tqdm(images, unit="image", file=sys.stderr)


def _report(progress, line: str) -> None:
    if hasattr(progress, "write"):
        progress.write(line, file=sys.stdout)
    else:
        print(line)


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
