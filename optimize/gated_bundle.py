"""`python -m optimize.quantize`: a float (or pruned) U-Net to a bundle whose models are proven.

QAT fine-tune (sparsity kept when the model is pruned, clusters when it is clustered) or
post-training quantization, every export (TFLite fp32, fp16, dynamic-range, int8 with int8 or
float I/O, int8 post-training; ONNX fp32 and QDQ int8), the parity gate against the float
model, then the bundle. On request the per-layer sensitivity (`optimize.sensitivity`), and when
the gate fails, a second try with the most sensitive layers left in float (`--keep-float`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Collection
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from optimize.bundle import BUNDLE_FILES as FILES
from optimize.bundle import check_bundle_out, manifest_fields, write_bundle
from optimize.cluster import is_clustered
from optimize.export import EXPORTERS, onnx_fp32
from optimize.finetune import Run
from optimize.onnx_int8 import onnx_int8_qdq
from optimize.parity import (
    MAX_DICE_DROP,
    ParityGateFailed,
    ParityReport,
    Reference,
    check_gate,
    golden_section,
    parity_report,
    written,
)
from optimize.qat import fine_tuned_float, qat_tflite_int8, quantize_aware
from optimize.saturation import saturation_summary, u8s8_saturation
from optimize.sensitivity import CalibratedModel, layer_sensitivity, print_sensitivity
from optimize.wrapping import check_prunable, sparsity_report
from runtime.config import Choice, ConfigBase, require, stage_config
from runtime.errors import UserError
from runtime.golden import GOLDEN_FILE
from runtime.log import add_verbosity, configure
from runtime.versions import package_versions
from train.config import DataConfig, TrainConfig, preset
from train.tfk import keras
from train.trainer import run_training

log = logging.getLogger(__name__)

DEFAULT_RUN = Path("runs/default-float")


class Method(Choice):
    QAT = "qat"  # quantization-aware fine-tuning: needs labels
    PTQ = "ptq"  # post-training calibration only: the path when there are no labels


@dataclasses.dataclass(frozen=True)
class QuantizeConfig(ConfigBase):
    method: Method = Method.QAT
    qat_epochs: int = 3
    # Small: QAT only has to adapt the weights to rounding; larger steps retrain the model away
    # from the float model it must agree with. int8 TFLite agreement with float on the held-out
    # tiles: synthetic default 98.8% at 1e-4, 99.2% at 2e-5, 99.45% at 5e-6; ISBI `small`
    # 98.7% at 2e-5 (Dice -0.0078), 99.5% at 5e-6 (Dice -0.0027).
    learning_rate: float = 5e-6
    steps_per_epoch: int = 0  # 0: as many as the training run used per epoch
    max_dice_drop: float = MAX_DICE_DROP
    calibration_tiles: int = 32
    sensitivity: bool = False  # the per-layer Dice cost of int8, into the manifest
    # When the gate fails: leave this many of the most sensitive layers in float, gate again.
    keep_float: int = 0

    def check(self) -> None:
        require(self.qat_epochs >= 1, f"qat-epochs must be >= 1, got {self.qat_epochs}")
        require(self.learning_rate > 0, f"learning-rate must be > 0, got {self.learning_rate}")
        require(
            self.steps_per_epoch >= 0, f"steps-per-epoch must be >= 0, got {self.steps_per_epoch}"
        )
        require(self.max_dice_drop >= 0, f"max-dice-drop must be >= 0, got {self.max_dice_drop}")
        require(
            self.calibration_tiles >= 1,
            f"calibration-tiles must be >= 1, got {self.calibration_tiles}",
        )
        require(self.keep_float >= 0, f"keep-float must be >= 0, got {self.keep_float}")


GATED = ["int8", "int8_float_io", "int8-onnx"]


def default_run(out: Path = DEFAULT_RUN) -> Path:
    """The embedded default: the `small` U-Net trained on synthetic data (kept for reuse)."""
    if not (out / "model.keras").exists():
        log.info("no --model given: training the small U-Net on synthetic data in %s first", out)
        run_training(preset("small"), DataConfig(), TrainConfig(epochs=15), out)
    return out / "model.keras"


class _Sensitivity:
    """The per-layer report, made the first time something needs it (`--sensitivity`, or a
    failed gate with `--keep-float`): the calibration and the per-layer runs cost time."""

    def __init__(self, model: keras.Model, size: int, tiles: list, reference: Reference) -> None:
        self._model, self._size, self._tiles, self._reference = model, size, tiles, reference

    @cached_property
    def calibrated(self) -> CalibratedModel:
        return CalibratedModel(self._model, self._size, self._tiles)

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        log.info("per-layer sensitivity (%d layers)", len(self.calibrated.layers))
        rows = layer_sensitivity(self.calibrated, self._reference)
        print_sensitivity(rows)
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """Most sensitive first (see `optimize.sensitivity.layer_sensitivity`), made once."""
        return self._rows


def _qat(
    model: keras.Model,
    run: Run,
    config: QuantizeConfig,
    facts: dict[str, Any],
    keep_float: Collection[str] = (),
) -> keras.Model | None:
    """The fine-tuned QAT model (None for post-training quantization)."""
    if config.method is not Method.QAT:
        return None
    kept = f", in float: {', '.join(sorted(keep_float))}" if keep_float else ""
    clustered = ", clustered: cluster-preserving QAT" if facts["float_clustered"] else ""
    log.info(
        "QAT fine-tuning %d epoch(s) (model sparsity %.2f%s%s)",
        config.qat_epochs,
        facts["float_sparsity"],
        clustered,
        kept,
    )
    return quantize_aware(
        model,
        run,
        config.qat_epochs,
        config.learning_rate,
        steps_per_epoch=config.steps_per_epoch or None,
        keep_float=keep_float,
    )


def _run_steps(steps: list[tuple[str, Callable[[], bytes]]]) -> dict[str, bytes]:
    exports = {}
    for key, make in steps:
        log.info("exporting %s", FILES[key][0])
        exports[key] = make()
    return exports


def _export_all(
    float_model: keras.Model, qat_model: keras.Model | None, size: int, tiles: list
) -> dict[str, bytes]:
    exports = _run_steps(
        [(key, partial(make, float_model, size, tiles)) for key, make in EXPORTERS.items()]
    )
    exports |= _gated_exports(float_model, qat_model, size, tiles, exports["fp32-onnx"])
    if qat_model is None:  # post-training quantization is the int8 model
        exports["int8"] = exports.pop("int8_ptq")
    return exports


def _gated_exports(
    float_model: keras.Model,
    qat_model: keras.Model | None,
    size: int,
    tiles: list,
    fp32_onnx: bytes,
    keep_float: Collection[str] = (),
    calibrated: CalibratedModel | None = None,
) -> dict[str, bytes]:
    """The int8 models the gate checks, with the `keep_float` layers in float.

    Without layers kept in float, the TFLite int8 is the QAT model's own conversion (or, for
    post-training quantization, the `int8_ptq` export). With them it is the debugger's selective
    quantization (`CalibratedModel.int8`) of the float model, or of the QAT-tuned weights: TF's
    converter quantizes a layer the QAT model left in float anyway when the layers around it
    carry ranges (measured: the unannotated convolution came out as an int8 op).
    """
    tuned = fine_tuned_float(qat_model, float_model) if qat_model is not None else None
    # From the QAT-tuned weights when there are some, so ONNX and TFLite int8 agree.
    onnx = onnx_fp32(tuned, size) if tuned is not None else fp32_onnx
    steps = [("int8-onnx", lambda: onnx_int8_qdq(onnx, tiles, keep_float=keep_float))]
    if keep_float:
        source = CalibratedModel(tuned, size, tiles) if tuned is not None else calibrated
        steps.append(("int8", lambda: source.int8(keep_float)))
        if tuned is not None:
            steps.append(("int8_float_io", lambda: source.int8(keep_float, float_io=True)))
    elif qat_model is not None:
        steps += [
            ("int8", lambda: qat_tflite_int8(qat_model, size)),
            ("int8_float_io", lambda: qat_tflite_int8(qat_model, size, float_io=True)),
        ]
    return _run_steps(steps)


def _with_float_layers(
    model: keras.Model,
    run: Run,
    config: QuantizeConfig,
    tiles: list,
    exports: dict[str, bytes],
    sensitivity: _Sensitivity,
    kept: list[str],
    facts: dict[str, Any],
) -> dict[str, bytes]:
    """The gated int8 models again, the `kept` layers (and what is fused into them) in float."""
    keep_float = sensitivity.calibrated.with_fused(kept)
    qat_model = _qat(model, run, config, facts, keep_float)
    return _gated_exports(
        model,
        qat_model,
        run.tile_size,
        tiles,
        exports["fp32-onnx"],
        keep_float,
        sensitivity.calibrated,
    )


def _parity(reference: Reference, exports: dict[str, bytes], facts: dict[str, Any]) -> ParityReport:
    """Every export through the runtime against the float model; prints the table."""
    with written(exports) as paths:
        report = dataclasses.replace(parity_report(reference, paths), **facts)
    print_table(report, exports)
    return report


def quantize(
    model_path: Path, out: Path, config: QuantizeConfig, data: str | None, overwrite: bool
) -> ParityReport:
    """Runs the whole stage; returns the parity report. Raises UserError or ParityGateFailed."""
    check_bundle_out(out, overwrite)
    run = Run.load(model_path.parent)
    if data:
        run = dataclasses.replace(run, data_config=run.data_config.replace(source=data))
    model = run.load_model(model_path.name)
    check_prunable(model)
    tiles = run.calibration_tiles(config.calibration_tiles)
    if not tiles:
        raise UserError(f"no calibration images in {run.data_config.source}: add images")
    facts = {  # what the parity report says of the model QAT started from
        "float_sparsity": sparsity_report(model).sparsity,
        "float_clustered": is_clustered(model),
    }
    images, labels = run.validation_tiles()
    reference = Reference.of(model, images, labels, run.model_config.classes)
    sensitivity = _Sensitivity(model, run.tile_size, tiles, reference)
    if config.sensitivity:  # first: it is what was asked for, QAT takes long
        sensitivity.rows()
    qat_model = _qat(model, run, config, facts)
    exports = _export_all(model, qat_model, run.tile_size, tiles)
    report = _parity(reference, exports, facts)
    kept: list[str] = []
    try:
        check_gate(report, GATED, config.max_dice_drop)
    except ParityGateFailed as failure:
        if not config.keep_float:
            raise
        kept = [row["layer"] for row in sensitivity.rows()[: config.keep_float]]
        log.warning("%s\n--keep-float: again with %s in float", failure, ", ".join(kept))
        exports |= _with_float_layers(model, run, config, tiles, exports, sensitivity, kept, facts)
        report = _parity(reference, exports, facts)
        try:
            check_gate(report, GATED, config.max_dice_drop)
        except ParityGateFailed as again:
            raise ParityGateFailed(
                f"{again}; that is with --keep-float {config.keep_float} ({', '.join(kept)} "
                "in float)"
            ) from None
    fields = manifest_fields(
        run.raw_config, run.tile_size, run.output_tile_size, package_versions(), model_path
    )
    fields["configs"]["quantize"] = config.to_dict()
    fields["parity"] = report.to_dict()
    fields["keep_float"] = kept  # layers that model_int8.* computes in float
    # onnx_int8_qdq refused any weights that could saturate; this records what it checked.
    fields["onnx_int8_saturation"] = saturation_summary(
        u8s8_saturation(exports["int8-onnx"], tiles[:4])
    )
    if config.sensitivity or kept:
        fields["sensitivity"] = sensitivity.rows()
    with written(exports) as paths:
        golden, fields["golden"] = golden_section(
            reference,
            run.raw_validation_tiles(),
            paths,
            report,
            run.preprocessing,
            config.max_dice_drop,
        )
    files = {key: (*FILES[key], data_bytes) for key, data_bytes in exports.items()}
    write_bundle(out, files, fields, overwrite, extra={GOLDEN_FILE: golden})
    return report


def print_table(report: ParityReport, exports: dict[str, bytes]) -> None:
    """The closing table: size, Dice against the labels, agreement with the float masks."""
    print(f"\n{'model':28s} {'size MB':>8s} {'Dice (truth)':>12s} {'agree w/ float':>15s}")
    print(f"{'float (Keras)':28s} {'':>8s} {report.float_model.dice_vs_truth:12.4f} {1.0:15.4f}")
    for key, scores in report.models.items():
        print(
            f"{FILES[key][0]:28s} {len(exports[key]) / 1e6:8.2f} {scores.dice_vs_truth:12.4f} {scores.agreement_with_float:15.4f}"
        )
    for pair, agreement in report.pairs.items():
        print(f"mask agreement {pair}: {agreement:.4f}")


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
        "--method", choices=[m.value for m in Method], help=f"qat or ptq (default: {q.method})"
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
    add_verbosity(parser)
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> QuantizeConfig:
    return stage_config(QuantizeConfig, args.config, "quantize", vars(args))


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        config = _config(args)
        check_bundle_out(args.out, args.overwrite)
        model_path = args.model or default_run()
        if model_path.suffix != ".keras" or not model_path.is_file():
            raise UserError(
                f"--model {model_path} does not exist or is not a .keras file: "
                "give the model.keras of a `python -m train` run"
            )
        quantize(model_path, args.out, config, args.data, args.overwrite)
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
