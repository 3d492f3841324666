"""`python -m optimize.prune`: prune a trained U-Net and fine-tune it (`optimize.pruning`).

The arguments are parsed and checked before TensorFlow is imported: `--help` and a bad value
answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from optimize.configs import PruneConfig, PruneMethod, add_distillation_flags
from runtime.config import stage_config
from runtime.errors import UserError
from runtime.log import add_verbosity, configure

if TYPE_CHECKING:  # the work imports TensorFlow: not before the arguments are checked
    from optimize.latency_prune import LatencyPrune

__all__ = ["PruneConfig", "PruneMethod", "console", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    c = PruneConfig()
    parser = argparse.ArgumentParser(
        prog="python -m optimize.prune", description="Prune a trained U-Net and fine-tune it."
    )
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model.keras inside a `python -m train` run folder",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the pruned run")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument(
        "--config",
        type=Path,
        help="the chain's YAML (its prune section), or a file of PruneConfig fields; flags "
        "override it",
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in PruneMethod],
        help=f"(default: {c.method})",
    )
    parser.add_argument(
        "--sparsity",
        type=float,
        help=f"magnitude: target sparsity (default: {c.sparsity})",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        help="magnitude: the share of the fine-tuning over which the sparsity rises; the rest "
        f"fine-tunes at the final masks (default: {c.ramp})",
    )
    parser.add_argument(
        "--keep-ratio",
        type=float,
        help="filter: fraction of filters kept per layer (default: from --target-macs, or steps "
        "to --target-ms or --target-speedup)",
    )
    parser.add_argument(
        "--target-macs",
        type=float,
        help=f"filter: fraction of MACs to keep (default: {c.target_macs})",
    )
    parser.add_argument(
        "--target-ms",
        type=float,
        help="filter: prune in steps, each fine-tuned and timed, until the int8 model runs one "
        "--latency-size image in at most this many ms through --engine on this machine "
        "(default: off)",
    )
    parser.add_argument(
        "--target-speedup",
        type=float,
        help="filter: as --target-ms, at the unpruned model's measured time / this (default: off)",
    )
    parser.add_argument(
        "--latency-size",
        type=int,
        help=f"image side the latency is measured at, in one pass (default: {c.latency_size})",
    )
    parser.add_argument(
        "--engine",
        help="int8 engine that times the layers and the model: litert, onnx, openvino "
        f"(default: {c.engine}, the runtime's choice for int8 here)",
    )
    parser.add_argument(
        "--latency-threads",
        type=int,
        help=f"engine threads while timing (default: {c.latency_threads})",
    )
    parser.add_argument(
        "--criterion",
        choices=["l1", "bn"],
        help=f"filter importance (default: {c.criterion})",
    )
    add_distillation_flags(parser, c.distill)
    parser.add_argument("--epochs", type=int, help=f"fine-tuning epochs (default: {c.epochs})")
    parser.add_argument(
        "--final-epochs",
        type=int,
        help="latency target: the step that meets it fine-tunes this many epochs, the rate "
        "cosine-decayed, instead of --epochs (default: 0, as --epochs)",
    )
    parser.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        help=f"(default: {c.learning_rate})",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        help="0: as the training run (default: 0)",
    )
    parser.add_argument(
        "--clusters",
        type=int,
        help="after pruning, cluster each pruned kernel's nonzero weights into this many shared "
        "values, zeros kept (tfmot; 2-256, e.g. 16): a much smaller compressed int8 model "
        f"(default: {c.clusters} = off)",
    )
    parser.add_argument(
        "--cluster-epochs",
        type=int,
        help=f"fine-tuning epochs of the clusters (default: {c.cluster_epochs})",
    )
    parser.add_argument(
        "--cluster-learning-rate",
        type=float,
        help=f"(default: {c.cluster_learning_rate})",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


# Ways to say how much to prune filters: one at most on a command line.
_TARGET_FLAGS = ("keep_ratio", "target_macs", "target_ms", "target_speedup")


def _check_one_target(args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in _TARGET_FLAGS if getattr(args, name, None)]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} exclude each other: give one of them")
    for name, example in (("target_ms", "50"), ("target_speedup", "2")):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            flag = f"--{name.replace('_', '-')}"
            raise UserError(f"{flag} must be > 0, got {value:g}: e.g. {flag} {example}")


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        _check_one_target(args)
        config = stage_config(PruneConfig, args.config, "prune", vars(args))
        from optimize.pruning import prune_run

        report = prune_run(args.model, args.out, config, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    macs, params, size = report.macs, report.params, report.size
    print(
        f"sparsity {report.sparsity.sparsity:.3f}; parameters {params.before:,} -> {params.after:,}; "
        f"MACs at {macs.input_size} px {macs.before / 1e9:.2f} G -> {macs.after / 1e9:.2f} G; "
        f"gzip size {size.before.gzip_bytes / 1e6:.2f} MB -> {size.after.gzip_bytes / 1e6:.2f} MB"
    )
    if report.clusters:
        counts = report.clusters.layers.values()
        print(f"distinct nonzero values per kernel: {min(counts)}-{max(counts)}")
    if report.latency:
        print(_latency_summary(report.latency))
    print(f"pruned model: {args.out / 'model.keras'}")
    return 0


def _latency_summary(latency: LatencyPrune) -> str:
    """How the steps ended and how well the per-layer table predicted the final model."""
    table = latency.table
    where = f"{table.engine}, int8, {table.size} px, {table.threads} thread(s)"
    if not latency.steps:
        return (
            f"the unpruned model already meets {latency.target_ms:.1f} ms ({where}): "
            f"{table.unpruned_ms:.1f} ms, 0 steps"
        )
    last = latency.steps[-1]
    return (
        f"{len(latency.steps)} step(s) to keep ratio {last.keep_ratio:g}: "
        f"{table.unpruned_ms:.1f} -> {last.measured_ms:.1f} ms ({where}; target "
        f"{latency.target_ms:.1f}), Dice {last.dice:.4f}; the table predicted "
        f"{last.predicted_ms:.1f} ms for it ({latency.error_pct:+.1f}% of the measured)"
    )


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
