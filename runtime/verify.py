"""`python -m runtime.verify BUNDLE`: do this device's kernels compute what the gate measured?

Each model of the bundle runs on the golden tiles in this device's interpreter and is judged by
`runtime.golden.check_model`: its masks against the float model's, as the parity gate compared
them on the build machine (`runtime.metrics.float_parity`, one code path for both). With
`--memory` it also measures each model's memory line here (`runtime.memory`), which the runtime
then plans its tiles with on this device. Nothing is written into the bundle.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runtime.backends import ENGINES, Backend, check_backend, check_runs, load
from runtime.bundle import Artifact, Manifest, read_manifest, verified_model_path
from runtime.cache import save_device_lines
from runtime.choice import choose
from runtime.cpu import cpu_info
from runtime.errors import ModelUnreadable, UserError
from runtime.golden import Check, VerificationFailed, check_model, golden_of, runnable
from runtime.log import add_verbosity, configure
from runtime.memory import ModelMemory, measure_model, measurement_shapes

log = logging.getLogger("runtime.verify")  # not __name__: "__main__" under python -m


def verify_bundle(
    bundle: str | Path,
    precision: str | None = None,
    backend: str = "auto",
    num_threads: int | None = None,
    observe: Callable[[Backend, Artifact], Backend] | None = None,
) -> list[Check]:
    """Runs the bundle's models (or one precision's) on the golden tiles on this device.

    Args:
        observe: wraps each loaded model before it is checked (`benchmarks.crosscpu` keeps
            the probabilities of the same run that gives the verdict).
    """
    manifest = read_manifest(bundle)
    golden = golden_of(bundle, manifest)
    if precision is not None and precision not in manifest.precisions:
        raise UserError(
            f"unknown precision {precision!r}: the bundle has {', '.join(manifest.precisions)}"
        )
    if precision is not None and backend != "auto":
        check_runs(check_backend(backend), precision)
    models = runnable(manifest, precision, backend)
    if not models:
        raise UserError(
            f"no installed interpreter runs the bundle's {precision or 'models'} on "
            f"backend {backend}: pip install ai-edge-litert, onnxruntime or openvino"
        )
    checks, unreadable = [], {}
    for artifact, name in models:
        try:
            model = load(name, verified_model_path(bundle, artifact), num_threads)
        except ModelUnreadable as error:
            if backend != "auto":
                raise
            unreadable[(artifact.file, name)] = error
            continue
        if observe is not None:
            model = observe(model, artifact)
        checks.append(check_model(model, artifact, manifest, golden))
    # With every installed engine on each file it may read, one engine that cannot read a
    # file is a note; a file that no engine reads is the error.
    for (file, name), error in unreadable.items():
        if not any(c.file == file for c in checks):
            raise error
        log.warning("verify: passing over %s on %s: %s", file, name, error)
    return checks


def measure_memory(
    bundle: str | Path, precision: str | None = None, backend: str = "auto"
) -> dict[str, ModelMemory]:
    """Each model's memory line measured here (two fresh processes a model), saved to the cache
    the runtime reads; models with one fixed input shape have none."""
    manifest = read_manifest(bundle)
    lines = {}
    # One line per file: the memory probe runs each format on its first engine.
    for artifact in dict.fromkeys(a for a, _ in runnable(manifest, precision, backend)):
        shapes = measurement_shapes(artifact.shape, manifest.input_size) if artifact.shape else None
        if not shapes:
            continue
        path = verified_model_path(bundle, artifact)
        try:
            lines[artifact.file] = measure_model(path, artifact.format, shapes)
        except subprocess.CalledProcessError as error:
            said = (error.stderr or "").strip().splitlines() or ["no output"]
            raise UserError(f"measuring the memory of {artifact.file} failed: {said[-1]}") from None
    save_device_lines(manifest, lines)
    return lines


def print_memory(lines: dict[str, ModelMemory], manifest: Manifest) -> None:
    built = {a.file: a.memory for a in manifest.artifacts}
    print("\nmemory of one run, measured here (a fresh process each; MB = 2^20 bytes):")
    print(f"{'model':28s} {'bytes/px':>9s} {'at build':>9s} {'base MB':>8s} {'at build':>9s}")
    for file, line in lines.items():
        there = built.get(file)
        print(
            f"{file:28s} {line.bytes_per_pixel:9.0f} "
            f"{f'{there.bytes_per_pixel:.0f}' if there else '-':>9s} {line.base_mb:8.1f} "
            f"{f'{there.base_mb:.1f}' if there else '-':>9s}"
        )
    print("the runtime sizes its tiles with these figures on this device from now on")


def print_checks(checks: list[Check], manifest: Manifest) -> None:
    here, there = cpu_info(), manifest.golden.built_on if manifest.golden else {}
    print(f"this device: {here['model']} ({here['int8']})")
    print(f"build machine: {there.get('model', '?')} ({there.get('int8', '?')})")
    width = max(map(len, ENGINES))
    print(
        f"\n{'model':28s} {'backend':{width}s} {'agreement':>10s} {'Dice/float':>10s} "
        f"{'built':>17s} {'ms/tile':>8s}  result"
    )
    for c in checks:
        built = (
            f"{c.built.agreement_with_float:.4f}/{c.built.dice_vs_float:.4f}" if c.built else "-"
        )
        result = "ok" if c.passed else "FAIL"
        print(
            f"{c.file:28s} {c.backend:{width}s} {c.agreement_with_float:10.4f} "
            f"{c.dice_vs_float:10.4f} {built:>17s} {c.ms_per_tile:8.1f}  {result}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.verify",
        description="Run a bundle's models on its golden tiles on this device and compare with "
        "what the build machine measured; exit 1 when a model falls below the gate here.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (with manifest.json)")
    parser.add_argument("--precision", help="only this precision (default: every model)")
    parser.add_argument(
        "--backend",
        default="auto",
        help=f"auto (every installed engine on each file it reads), {', '.join(ENGINES)}",
    )
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure each model's memory per pixel here (two fresh processes a model); "
        "the runtime then sizes its tiles with this device's figures",
    )
    parser.add_argument(
        "--rechoose",
        action="store_true",
        help='then time the (model, engine) pairs that passed again for precision="auto" and '
        "cache the new choice (for this --backend and --threads)",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        checks = verify_bundle(args.bundle, args.precision, args.backend, args.threads)
        manifest = read_manifest(args.bundle)
        print_checks(checks, manifest)
        failed = [c for c in checks if not c.passed]
        if failed:
            raise VerificationFailed("; ".join(c.failure() for c in failed))
        if args.memory:
            print_memory(measure_memory(args.bundle, args.precision, args.backend), manifest)
        if args.rechoose:
            choice = choose(args.bundle, manifest, args.backend, args.threads, refresh=True)
            print(f"\nprecision=auto: {choice.file} on {choice.backend} ({choice.reason})")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"\n{len(checks)} model(s) verified on this device")
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
