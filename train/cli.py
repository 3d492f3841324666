"""`python -m train`: train a U-Net on the synthetic default or a folder of images and masks."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from runtime.config import ConfigBase, own_settings
from runtime.errors import UserError
from runtime.log import add_verbosity, configure
from runtime.preprocess import Normalization
from train.config import (
    PRESETS,
    DataConfig,
    Foreground,
    Loss,
    MixedPrecision,
    ModelConfig,
    Padding,
    Schedule,
    Strategy,
    TrainConfig,
    Upsampling,
    preset,
)

SECTIONS: dict[str, type[ConfigBase]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
}
PAPER_TILE = 572  # the paper's input tile, the default for 'valid' padding
SAME_TILE = 256


def _choices(enum_type) -> list[str]:
    return [m.value for m in enum_type]


def _build_parser() -> argparse.ArgumentParser:
    t, d = TrainConfig(), DataConfig()
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a U-Net (Ronneberger et al., 2015) and write a resumable run folder.",
        argument_default=None,  # None = not given: the preset or --config decides
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config",
        type=Path,
        help="the chain's YAML (its model, data and train sections; the others are not read), "
        "or a file of their fields; flags override it",
    )
    run.add_argument(
        "--out", type=Path, default=Path("runs/train"), help="output folder (default: runs/train)"
    )
    run.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    run.add_argument(
        "--dry-run", action="store_true", help="build the model, print its size, train nothing"
    )
    run.add_argument("--list-presets", action="store_true", help="list the model presets and exit")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        dest="source",
        help="'synthetic' (EM membranes), 'synthetic-defects' (small, rare defects) or a folder "
        f"with image/ and label/ (default: {d.source})",
    )
    data.add_argument(
        "--foreground",
        choices=_choices(Foreground),
        help="which value of two-valued masks is class 1; ISBI membranes are 'dark' "
        f"(default: {d.foreground})",
    )
    data.add_argument(
        "--mask-threshold",
        type=float,
        help="binarize the masks first: values >= T are the bright class, then --foreground "
        "picks class 1 (for binary masks with anti-aliased edges; default: off)",
    )
    data.add_argument(
        "--cache",
        help="file prefix for tf.data's on-disk cache of the decoded, normalized training "
        "images: the first epoch writes it, later ones read it (default: none, files are "
        "decoded every time)",
    )
    data.add_argument(
        "--normalize",
        dest="normalization",
        choices=_choices(Normalization),
        help="'dataset': the training set's mean and std (intensities mean something: EM, CT); "
        "'image': each image's own, over the whole image, for images whose brightness and "
        "contrast vary, as a device's camera does (default: image)",
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        help=f"last fraction of images (natural order) held out (default: {d.val_fraction})",
    )
    data.add_argument(
        "--synthetic-count",
        type=int,
        help=f"synthetic images to generate (default: {d.synthetic_count})",
    )
    data.add_argument(
        "--synthetic-size",
        type=int,
        help="side of synthetic images; defects: the typical side, sides range from half to "
        f"twice it (default: {d.synthetic_size})",
    )

    model = parser.add_argument_group("model (defaults from --preset)")
    model.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)} (default: small)")
    model.add_argument("--depth", type=int, help="number of poolings")
    model.add_argument(
        "--base-filters", type=int, help="filters of the first level, doubled per level"
    )
    model.add_argument("--classes", type=int, help="1: sigmoid head; 2 or more: softmax head")
    model.add_argument("--channels", type=int, help="input channels, 1 or 3")
    model.add_argument(
        "--padding", choices=_choices(Padding), help="'same', or 'valid' as in the paper"
    )
    model.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        help="batch norm after each convolution",
    )
    model.add_argument(
        "--bn-momentum", type=float, help="batch-norm momentum (0.9: short runs catch up)"
    )
    model.add_argument("--dropout", type=float, help="dropout at the two deepest levels")
    model.add_argument("--upsampling", choices=_choices(Upsampling), help="up-convolution kind")
    model.add_argument(
        "--patch",
        type=int,
        help="1: the paper's full-resolution first level; 2 (4): every level at 1/2 (1/4) "
        "resolution, a strided convolution in, a transposed one out; with --teacher, 4.7x "
        "faster than small at its Dice on ISBI (RESULTS)",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--input-size",
        type=int,
        help=f"training crop side (default: for 'same' the data decide, {SAME_TILE} at most and "
        f"no larger than the median image; {PAPER_TILE} for 'valid')",
    )
    train.add_argument("--batch-size", type=int, help=f"per replica (default: {t.batch_size})")
    train.add_argument("--epochs", type=int, help=f"(default: {t.epochs})")
    train.add_argument(
        "--steps-per-epoch", type=int, help="0: cover the training pixels once (default: 0)"
    )
    train.add_argument(
        "--learning-rate",
        "--lr",
        type=float,
        help=f"Adam's start rate (default: {t.learning_rate})",
    )
    train.add_argument(
        "--schedule",
        choices=_choices(Schedule),
        help="learning rate: 'plateau' halves it when the validation Dice stalls for 3 epochs, "
        f"'cosine' decays it to 5%% over --epochs (default: {t.schedule})",
    )
    train.add_argument(
        "--patience",
        type=int,
        help="stop early once the validation Dice has not improved for this many epochs; "
        f"--epochs is then the most (0: off; default: {t.patience})",
    )
    train.add_argument(
        "--average-epochs",
        type=float,
        help="validate and save the moving average of the weights over about this many epochs "
        f"instead of the last step's (0: off; default: {t.average_epochs:g})",
    )
    train.add_argument(
        "--loss",
        choices=_choices(Loss),
        help="auto: the data decide, batch_dice when foreground covers under 5%% of the "
        f"pixels, else bce_dice (1 class) or ce_dice; tversky weighs misses more (default: {t.loss})",
    )
    train.add_argument(
        "--foreground-crops",
        type=float,
        help="share of training crops centred on a foreground pixel (default: the data decide, "
        "a third when foreground covers under 5%% of the pixels, else 0)",
    )
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help=f"flips, rotations, brightness, contrast (default: {t.augment})",
    )
    train.add_argument(
        "--elastic",
        action=argparse.BooleanOptionalAction,
        help=f"the paper's elastic deformation (default: {t.elastic})",
    )
    train.add_argument(
        "--field-augment",
        action=argparse.BooleanOptionalAction,
        help="the changes a device's images go through: noise, blur, contrast x0.5-1.5, lower "
        f"resolution, gamma 0.5-2, each now and then (nnU-Net's; default: {t.field_augment})",
    )
    train.add_argument(
        "--teacher",
        metavar="MODEL",
        help="distil from this trained model.keras (same data and normalization): the loss "
        "adds --distill x KL(teacher || student) (default: labels alone)",
    )
    train.add_argument(
        "--distill",
        type=float,
        help=f"the teacher's weight in the loss (default: {t.distill:g})",
    )
    train.add_argument("--seed", type=int, help=f"(default: {t.seed})")
    train.add_argument(
        "--strategy",
        choices=_choices(Strategy),
        help=f"tf.distribute strategy (default: {t.strategy})",
    )
    train.add_argument(
        "--mixed-precision",
        choices=_choices(MixedPrecision),
        help=f"float16 compute; auto = on with a GPU (default: {t.mixed_precision})",
    )
    train.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        help="XLA-compile the training step (default: False)",
    )
    add_verbosity(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _build_parser().parse_args(argv)


def resolve_configs(args: argparse.Namespace) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """Preset, then the config file, then the flags: each overrides the one before."""
    settings = own_settings(args.config, tuple(SECTIONS))
    settings.update({k: v for k, v in vars(args).items() if v is not None})
    known = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    meta = {"config", "out", "overwrite", "dry_run", "list_presets", "preset", "quiet", "verbose"}
    unknown = sorted(set(settings) - known - meta)
    if unknown:
        raise UserError(
            f"unknown setting(s) {', '.join(unknown)} in --config: "
            f"known are {', '.join(sorted(known))}"
        )
    model_base = preset(settings.get("preset") or "small").to_dict()
    values = {
        name: {f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings}
        for name, cls in SECTIONS.items()
    }
    model = ModelConfig.from_dict({**model_base, **values["model"]})
    data = DataConfig.from_dict(values["data"])
    train_values = values["train"]
    if not train_values.get("input_size"):  # 0: the data's fingerprint decides
        train_values["input_size"] = PAPER_TILE if model.padding is Padding.VALID else 0
    return model, data, TrainConfig.from_dict(train_values)


def _list_presets() -> None:
    for name, (description, config) in PRESETS.items():
        fields = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
        print(f"{name:7s} {description}  [{fields}]")


def _dry_run(model_config: ModelConfig, train_config: TrainConfig) -> None:
    from train.model import build_unet, checked_output_size

    size = train_config.input_size or SAME_TILE
    out = checked_output_size(model_config, size)
    model = build_unet(model_config, size)
    print(f"{model.name}: {model.count_params():,} parameters, {len(model.layers)} layers")
    print(
        f"input {size}x{size}x{model_config.channels} -> output {out}x{out}x{model_config.classes}"
    )


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        if args.list_presets:
            _list_presets()
            return 0
        model_config, data_config, train_config = resolve_configs(args)
        if args.dry_run:
            _dry_run(model_config, train_config)
            return 0
        from train.trainer import TrainingDiverged, run_training

        try:
            result = run_training(
                model_config,
                data_config,
                train_config,
                args.out,
                args.overwrite,
                verbose=0 if args.quiet else None,  # Keras' per-epoch lines
            )
        except TrainingDiverged as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run the same command again to resume from {args.out}", file=sys.stderr
        )
        return 130
    for name, scores in result.metrics.items():
        overall = ", ".join(f"{k} {v:.4f}" for k, v in scores["overall"].items())
        print(f"{name} model on the validation images at full size: {overall}")
    if result.metrics:  # the chief: it wrote the run folder
        print(f"model: {result.out / 'model.keras'}")
    print(f"weights: sha256 {result.weights_sha256}")
    if result.useless:
        print(f"warning: {result.useless}", file=sys.stderr)
    return 0


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())
