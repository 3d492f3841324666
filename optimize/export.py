"""`python -m optimize.export`: a training run's float model to a bundle, the quick path without
QAT (`optimize.quick`). The arguments are parsed before TensorFlow is imported."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.bundle import read_manifest
from runtime.errors import UserError
from runtime.log import add_verbosity, configure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m optimize.export",
        description="Export a training run's float model to a bundle: fp32 and post-training "
        "int8 TFLite, fp32 ONNX, and manifest.json: the quick path without QAT (optimize.quantize "
        "prunes, fine-tunes with QAT and gates every export).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "run", type=Path, help="a `python -m train` output folder (model.keras, config.json)"
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument(
        "--checkpoint",
        choices=["final", "best"],
        default="final",
        help="the run's final model.keras, or best.keras (best validation Dice)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a bundle already in --out"
    )
    add_verbosity(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        # --checkpoint best needs only best.keras: an interrupted run has it, not model.keras.
        checkpoint = f"{'model' if args.checkpoint == 'final' else 'best'}.keras"
        for name in ("config.json", checkpoint):
            if not (args.run / name).is_file():
                raise UserError(
                    f"{args.run} has no {name}: give the --out folder of a `python -m train` "
                    "run (--checkpoint best takes its best.keras before it finishes)"
                )
        from optimize.quick import bundle_from_run

        out = bundle_from_run(args.run, args.out, overwrite=args.overwrite, checkpoint=checkpoint)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for artifact in read_manifest(out).artifacts:
        print(f"{artifact.file:20s} {artifact.precision:5s} {artifact.size / 1e6:7.2f} MB")
    print(f"bundle: {out}")
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
