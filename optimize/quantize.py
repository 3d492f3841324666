"""`python -m optimize.quantize`: a float (or pruned) U-Net to a bundle whose models are proven.

QAT fine-tune (sparsity kept when the model is pruned, clusters when it is clustered) or
post-training quantization, every export, the parity gate against the float model, then the
bundle: the work is `optimize.gated_bundle`. The arguments are parsed and checked before
TensorFlow is imported, so `--help` and a bad value answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optimize.bioimageio import Options, write_package
from optimize.bioimageio import check_out as check_package_out
from optimize.bundle import check_bundle_out
from optimize.configs import Method, ParityGateFailed, QuantizeConfig, add_distillation_flags
from runtime.config import stage_config
from runtime.errors import UserError
from runtime.log import add_verbosity, configure

__all__ = ["Method", "QuantizeConfig", "console", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    q = QuantizeConfig()
    parser = argparse.ArgumentParser(
        prog="python -m optimize.quantize", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a float or pruned .keras inside its run folder (default: train the small U-Net on synthetic data first)",
    )
    parser.add_argument(
        "--data", help="data for fine-tuning, calibration and parity (default: the run's)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bundle"), help="bundle folder (default: runs/bundle)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a bundle already in --out"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the chain's YAML (its quantize section), or a file of QuantizeConfig fields; "
        "flags override it",
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in Method],
        help="qat (quantization-aware fine-tuning), ptq (post-training) or best (both; the "
        f"gate keeps the one with the better Dice, then agreement with float; default: {q.method})",
    )
    parser.add_argument(
        "--qat-epochs", type=int, help=f"QAT fine-tuning epochs (default: {q.qat_epochs})"
    )
    parser.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        help=f"QAT learning rate (default: {q.learning_rate})",
    )
    parser.add_argument("--steps-per-epoch", type=int, help="0: as the training run (default: 0)")
    parser.add_argument(
        "--max-dice-drop",
        type=float,
        help=f"largest Dice an int8 model may lose (default: {q.max_dice_drop})",
    )
    add_distillation_flags(parser, q.distill)
    parser.add_argument(
        "--allow-useless",
        action="store_true",
        default=None,
        help="build even when the float model is no better than a trivial segmenter (Dice "
        "under 0.1 or under marking every pixel; default: refuse, exit 2)",
    )
    parser.add_argument(
        "--calibration-tiles",
        type=int,
        help=f"tiles for calibration (default: {q.calibration_tiles})",
    )
    parser.add_argument(
        "--sensitivity",
        action="store_true",
        default=None,
        help="measure the Dice each layer costs when it alone is int8, print the most sensitive "
        "and store all in the manifest (default: off)",
    )
    parser.add_argument(
        "--keep-float",
        type=int,
        metavar="N",
        help="when the int8 gate fails, leave the N most sensitive layers in float and gate "
        f"again (default: {q.keep_float}: fail at once)",
    )
    parser.add_argument(
        "--bioimageio",
        type=Path,
        metavar="ZIP",
        help="also write the bundle as a bioimage.io model package (python -m optimize.bioimageio "
        "with its defaults) (default: none)",
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> QuantizeConfig:
    return stage_config(QuantizeConfig, args.config, "quantize", vars(args))


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        config = _config(args)
        check_bundle_out(args.out, args.overwrite)
        if args.bioimageio:
            check_package_out(args.bioimageio, args.overwrite, "--bioimageio")
        from optimize.gated_bundle import default_run, quantize

        model_path = args.model or default_run()
        if model_path.suffix != ".keras" or not model_path.is_file():
            raise UserError(
                f"--model {model_path} does not exist or is not a .keras file: "
                "give the model.keras of a `python -m train` run"
            )
        quantize(model_path, args.out, config, args.data, args.overwrite)
        if args.bioimageio:
            written = write_package(args.out, args.bioimageio, Options(), args.overwrite)
            print(f"bioimage.io package: {written.path} ({written.precision} ONNX)")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except ParityGateFailed as error:
        print(f"error: {error}; no bundle written", file=sys.stderr)
        return 1
    print(f"\nbundle: {args.out}")
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
