"""`python -m benchmarks`: measure a bundle (and the float model it came from), write a report.

    python -m benchmarks --bundle runs/bundle [--bundle thin=runs/bundle-thin ...] \\
        [--data SOURCE] [--sizes 256,512] [--threads 1,0] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import sys
import time
from pathlib import Path

from benchmarks.config import BenchmarkConfig
from benchmarks.environment import environment
from benchmarks.report import write_report
from benchmarks.schema import MAIN, Report, Skipped, Tta
from benchmarks.variants import Variant, bundle_variants, keras_variant
from runtime.backends import ENGINES
from runtime.bundle import MANIFEST, read_manifest
from runtime.choice import Choice, choose
from runtime.config import stage_config
from runtime.cpu import has_int8_dot_product
from runtime.errors import UserError
from runtime.io import check_out_folder
from runtime.log import add_verbosity, configure
from runtime.memory import DEFAULT_MAX_MEMORY_MB

log = logging.getLogger(__name__)

BASELINE = "tflite fp32"
REPORT = "report.json"


def _bundles(given: list[str]) -> dict[str, Path]:
    """`--bundle PATH` or `--bundle LABEL=PATH`; the first is the main one (label "main")."""
    bundles: dict[str, Path] = {}
    for i, item in enumerate(given):
        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        label = MAIN if i == 0 else label or Path(path).name
        if label in bundles:
            raise UserError(f"--bundle label {label!r} is given twice: name them LABEL=PATH")
        if not (Path(path) / MANIFEST).is_file():
            raise UserError(
                f"--bundle {path} is not a bundle (no manifest.json): give a folder written "
                "by python -m optimize.quantize or optimize.export"
            )
        bundles[label] = Path(path)
    return bundles


def collect_variants(
    bundles: dict[str, Path], keras_path: Path | None, max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
) -> tuple[list[Variant], list[Skipped]]:
    """Every variant to measure, and the skipped ones with the reason."""
    found = {label: bundle_variants(label, path, max_memory_mb) for label, path in bundles.items()}
    keras, why = keras_variant(found[MAIN], keras_path)
    skipped = [] if keras else [Skipped("keras fp32", why)]
    variants = ([keras] if keras else []) + [v for vs in found.values() for v in vs]
    usable = []
    for v in variants:
        if v.backend and (why := ENGINES[v.backend].missing()):
            skipped.append(Skipped(v.name, why))
        else:
            usable.append(v)
    if not any(v.key == "int8" and v.bundle != MAIN for v in usable):
        skipped.append(
            Skipped(
                "pruned / filter-pruned int8",
                "no further bundle given: add --bundle LABEL=PATH for each",
            )
        )
    return usable, skipped


def measure(
    bundles: dict[str, Path], keras_path: Path | None, data: str | None, config: BenchmarkConfig
) -> tuple[Report, list]:
    """The whole report and the overlay examples."""
    # Here, not at the top: --help and argument errors answer without loading TensorFlow.
    from benchmarks.accuracy import held_out_samples, measure_accuracy
    from benchmarks.coldstart import measure_cold_start
    from benchmarks.endtoend import measure_end_to_end
    from benchmarks.latency import measure_latency
    from benchmarks.load import LoadProbe
    from benchmarks.pareto import pareto_of
    from benchmarks.targets import NO_DOT_PRODUCT_NOTE, check_targets, end_to_end_targets
    from benchmarks.verification import dice_budget, verify_variants
    from runtime.tta import TTA_KINDS

    started, probe = time.perf_counter(), LoadProbe()
    source = data or "the bundle's own"
    variants, skipped = collect_variants(bundles, keras_path, config.max_memory_mb)
    if not variants:
        raise UserError("nothing to measure: install ai-edge-litert or onnxruntime")
    names = {v.name for v in variants}
    baseline = BASELINE if BASELINE in names else variants[0].name
    log.info("measuring %d variants: %s", len(variants), ", ".join(sorted(names)))
    samples = held_out_samples(variants[0], data, config.images)  # a data error fails early
    latency, ceilings = measure_latency(variants, config)
    largest = max(config.sizes)
    cold = []
    if config.cold_start:
        for v in variants:
            log.info("cold start: %s", v.name)
            cold.append(measure_cold_start(v, largest))
    reference = next((v for v in variants if v.format == "keras"), None) or next(
        v for v in variants if v.name == baseline
    )
    threads = max(config.thread_counts)
    end_to_end = measure_end_to_end(variants, config, threads)
    accuracy, examples, tta = measure_accuracy(
        reference, variants, samples, source, TTA_KINDS if config.tta else ()
    )
    if tta is not None:
        tta = _with_tta_latency(tta, variants, config, threads)
    env = environment()
    capability = env.int8_capability or ""
    choice = _auto_choice(bundles[MAIN], threads)
    targets = check_targets(variants, latency, accuracy, largest, threads, capability, choice)
    verified = verify_variants(variants, threads)
    report = Report(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        config={
            "bundles": {k: str(v) for k, v in bundles.items()},
            "keras": next((v.path for v in variants if v.format == "keras"), None),
            "data": source,
            **config.to_dict(),
        },
        environment=env,
        ceiling=tuple(ceilings),
        baseline=baseline,
        variants=tuple(v.describe(config.sizes) for v in variants),
        skipped=tuple(skipped),
        latency=tuple(latency),
        cold_start=tuple(cold),
        end_to_end=end_to_end,
        accuracy=accuracy,
        choice=choice,
        targets=tuple(targets + end_to_end_targets(end_to_end)),
        targets_note=None
        if has_int8_dot_product(capability)
        else NO_DOT_PRODUCT_NOTE.format(capability=capability),
        tta=tta,
        wall_seconds=time.perf_counter() - started,
        other_cores=probe.other_cores(),
    )
    budget, budget_from = dice_budget(bundles[MAIN])
    pareto = pareto_of(report, verified, budget, budget_from)
    return dataclasses.replace(report, pareto=pareto), examples


def _with_tta_latency(
    tta: Tta, variants: list[Variant], config: BenchmarkConfig, threads: int
) -> Tta:
    """TTA's scores with its time per image at every size (`benchmarks.tta`) added."""
    from benchmarks.tta import measure_tta_latency

    started = time.perf_counter()
    latency = measure_tta_latency(variants, config, threads)
    seconds = (tta.wall_seconds or 0.0) + time.perf_counter() - started
    return dataclasses.replace(tta, latency=latency, wall_seconds=seconds)


def _auto_choice(bundle: Path, threads: int) -> Choice | None:
    """What precision="auto" picks on this machine, measured afresh (not from the cache)."""
    manifest = read_manifest(bundle)
    if manifest.golden is None:
        return None  # an older bundle: the runtime takes its int8 model
    return choose(bundle, manifest, num_threads=threads, refresh=True)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    c = BenchmarkConfig()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--bundle",
        action="append",
        required=True,
        help="a bundle folder; repeat as LABEL=PATH for more (pruned, filter-pruned) bundles. "
        "The first is the main one: its float model is the reference",
    )
    parser.add_argument(
        "--keras", type=Path, help="the float .keras (default: the main manifest's source_model)"
    )
    parser.add_argument(
        "--data", help="held-out images: synthetic or a folder (default: the bundle's own data)"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: BUNDLE/report)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a report already in --out"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the chain's YAML (its benchmarks section), or a file of BenchmarkConfig fields; "
        "flags override it",
    )
    parser.add_argument(
        "--sizes", type=_ints, help=f"image sides (default: {','.join(map(str, c.sizes))})"
    )
    parser.add_argument(
        "--threads", type=_ints, help="interpreter threads, 0 = every core (default: 1,0)"
    )
    parser.add_argument(
        "--batch", type=int, help=f"throughput batch, 0 = none (default: {c.batch})"
    )
    parser.add_argument("--warmup", type=int, help=f"untimed runs first (default: {c.warmup})")
    parser.add_argument("--min-runs", type=int, help=f"timed runs at least (default: {c.min_runs})")
    parser.add_argument(
        "--seconds", type=float, help=f"time per variant and setting (default: {c.seconds})"
    )
    parser.add_argument("--max-runs", type=int, help=f"timed runs at most (default: {c.max_runs})")
    parser.add_argument(
        "--images", type=int, help=f"held-out images scored, at most (default: {c.images})"
    )
    parser.add_argument(
        "--end-to-end-sizes",
        type=_ints,
        help="sides for the runtime end to end and a fresh process's memory, empty = none "
        f"(default: {','.join(map(str, c.end_to_end_sizes))})",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=float,
        help=f"the runtime's memory budget for one run (default: {c.max_memory_mb:g})",
    )
    parser.add_argument(
        "--folder-images",
        type=int,
        help=f"PNGs through runtime.predict's pipeline, 0 = none (default: {c.folder_images})",
    )
    parser.add_argument(
        "--fail-on-target",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit 1 when a target is missed, so a CI can gate on it (default: on)",
    )
    parser.add_argument(
        "--cold-start",
        action=argparse.BooleanOptionalAction,
        help="measure a fresh process per variant (default: on)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="test-time augmentation per runtime model: Dice with flips and d4 beside none on "
        "the held-out images, and ms per image at --sizes (default: on)",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def _print_summary(report: Report) -> None:
    for target in report.targets:
        mark = "met   " if target.met else "MISSED" if target.missed else "busy  "
        why = f"; {target.not_judged}" if target.not_judged else ""
        print(f"{mark} {target.claim}: {target.measured:.3g} (target {target.target:g}{why})")


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        config = stage_config(BenchmarkConfig, args.config, "benchmarks", vars(args))
        bundles = _bundles(args.bundle)
        out = args.out or bundles[MAIN] / "report"
        check_out_folder(out, args.overwrite, REPORT, what="a report")
        if args.keras and not args.keras.is_file():
            raise UserError(f"--keras {args.keras} does not exist: give the bundle's float .keras")
        report, examples = measure(bundles, args.keras, args.data, config)
        write_report(report, examples, out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    _print_summary(report)
    print(f"\nreport: {out / 'report.html'} ({report.wall_seconds:.0f} s)")
    missed = [t.claim for t in report.targets if t.missed]
    if missed and args.fail_on_target:
        print(
            f"error: {len(missed)} target(s) missed (exit 1; --no-fail-on-target to report only)",
            file=sys.stderr,
        )
        return 1
    return 0


def console(argv: list[str] | None = None) -> int:
    """`unet-bench` and `python -m benchmarks`: measure, or `compare OLD NEW`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from benchmarks import compare

        return compare.main(compare.parse_args(argv[1:]))
    return main(parse_args(argv))
