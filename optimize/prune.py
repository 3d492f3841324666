"""`python -m optimize.prune`: prune a trained U-Net and fine-tune it (`optimize.pruning`).

The arguments are parsed and checked before TensorFlow is imported: `--help` and a bad value
answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optimize.configs import PruneConfig, PruneMethod, add_distillation_flags
from runtime.config import stage_config
from runtime.errors import UserError
from runtime.log import add_verbosity, configure

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
        "--keep-ratio",
        type=float,
        help="filter: fraction of filters kept per layer (default: from --target-macs)",
    )
    parser.add_argument(
        "--target-macs",
        type=float,
        help=f"filter: fraction of MACs to keep (default: {c.target_macs})",
    )
    parser.add_argument(
        "--criterion",
        choices=["l1", "bn"],
        help=f"filter importance (default: {c.criterion})",
    )
    add_distillation_flags(parser)
    parser.add_argument("--epochs", type=int, help=f"fine-tuning epochs (default: {c.epochs})")
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


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
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
    print(f"pruned model: {args.out / 'model.keras'}")
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
