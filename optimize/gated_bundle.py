"""The work of `python -m optimize.quantize`: a float (or pruned) U-Net to a bundle whose models
are proven.

QAT fine-tune (sparsity kept when the model is pruned, clusters when it is clustered) or
post-training quantization, every export (TFLite fp32, fp16, dynamic-range, int8 with int8 or
float I/O, int8 post-training; ONNX fp32 and QDQ int8), the parity gate against the float
model, then the bundle. On request the per-layer sensitivity (`optimize.sensitivity`), and when
the gate fails, a second try with the most sensitive layers left in float (`--keep-float`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from optimize.bundle import BUNDLE_FILES as FILES
from optimize.bundle import check_bundle_out, manifest_fields, write_bundle
from optimize.cluster import is_clustered
from optimize.configs import Method, ParityGateFailed, QuantizeConfig
from optimize.converters import EXPORTERS, onnx_fp32
from optimize.finetune import Run
from optimize.onnx_int8 import onnx_int8_qdq
from optimize.parity import (
    ParityReport,
    Reference,
    check_gate,
    golden_section,
    parity_report,
    predicted,
    written,
)
from optimize.qat import fine_tuned_float, qat_tflite_int8, quantize_aware
from optimize.saturation import saturation_summary, u8s8_saturation
from optimize.sensitivity import CalibratedModel, layer_sensitivity, print_sensitivity
from optimize.threshold import calibrated_threshold, threshold_of
from optimize.wrapping import check_prunable, sparsity_report
from runtime.errors import UserError
from runtime.golden import GOLDEN_FILE
from runtime.preprocess import Normalization
from runtime.quality import FEW_IMAGES, reference_from_images
from runtime.tta import augmented
from runtime.versions import package_versions
from train import usefulness
from train.config import DataConfig, TrainConfig, preset
from train.tfk import keras
from train.trainer import run_training

log = logging.getLogger(__name__)

DEFAULT_RUN = Path("runs/default-float")


GATED = ["int8", "int8_float_io", "int8-onnx"]
QUALITY_IMAGES = 256  # training images the quality reference reads at most, spread over the set


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
    method: Method | None = None,
) -> keras.Model | None:
    """The fine-tuned QAT model (None for post-training quantization); `method` overrides
    the config's (a --keep-float retry of the method `best` chose)."""
    if (method or config.method) is Method.PTQ:
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
    else:  # post-training int8 in ONNX too: the other candidate of --method best
        log.info("exporting %s", FILES["int8_ptq-onnx"][0])
        exports["int8_ptq-onnx"] = onnx_int8_qdq(exports["fp32-onnx"], tiles)
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
    method: Method,
) -> dict[str, bytes]:
    """The gated int8 models again, the `kept` layers (and what is fused into them) in float."""
    keep_float = sensitivity.calibrated.with_fused(kept)
    qat_model = _qat(model, run, config, facts, keep_float, method)
    return _gated_exports(
        model,
        qat_model,
        run.tile_size,
        tiles,
        exports["fp32-onnx"],
        keep_float,
        sensitivity.calibrated,
    )


# The two int8 candidates of --method best: their bundle keys, TFLite and ONNX.
CANDIDATES = {Method.QAT: ("int8", "int8-onnx"), Method.PTQ: ("int8_ptq", "int8_ptq-onnx")}
PAIRS = (("int8-onnx", "int8"), ("int8_ptq-onnx", "int8_ptq"))
TIE = 5e-4  # Dice: candidates within this are equal, and agreement with float decides


def _parity(reference: Reference, exports: dict[str, bytes], facts: dict[str, Any]) -> ParityReport:
    """Every export through the runtime against the float model."""
    with written(exports) as paths:
        return dataclasses.replace(parity_report(reference, paths, PAIRS), **facts)


def _figures(report: ParityReport, method: Method) -> dict[str, float]:
    """A candidate's gate figures: the worse of its TFLite and ONNX model."""
    rows = [report.models[key] for key in CANDIDATES[method]]
    return {
        "dice_vs_truth": min(r.dice_vs_truth for r in rows),
        "agreement_with_float": min(r.agreement_with_float for r in rows),
    }


def int8_winner(report: ParityReport) -> tuple[Method, dict[str, Any]]:
    """QAT or post-training int8, whichever the gate's figures favour: Dice against the labels,
    then (within `TIE`) agreement with the float model. Returns it and the manifest's record."""
    qat, ptq = _figures(report, Method.QAT), _figures(report, Method.PTQ)
    if abs(qat["dice_vs_truth"] - ptq["dice_vs_truth"]) > TIE:
        winner = Method.QAT if qat["dice_vs_truth"] > ptq["dice_vs_truth"] else Method.PTQ
        by = "Dice against the labels"
    else:
        winner = (
            Method.QAT if qat["agreement_with_float"] > ptq["agreement_with_float"] else Method.PTQ
        )
        by = f"agreement with float (Dice within {TIE:g})"
    return winner, {"chosen": winner.value, "by": by, "qat": qat, "ptq": ptq}


def promote_ptq(exports: dict[str, bytes], report: ParityReport) -> ParityReport:
    """Makes the post-training models the bundle's int8 ones (the QAT models leave it)."""
    renamed = dict(zip(CANDIDATES[Method.PTQ], CANDIDATES[Method.QAT], strict=True))
    replaced = (*CANDIDATES[Method.QAT], "int8_float_io")
    for key in replaced:
        exports.pop(key, None)
    for old, new in renamed.items():
        exports[new] = exports.pop(old)
    models = {k: v for k, v in report.models.items() if k not in replaced and k not in renamed}
    models |= {new: report.models[old] for old, new in renamed.items()}
    pair = " vs ".join(PAIRS[1])
    pairs = {" vs ".join(PAIRS[0]): report.pairs[pair]} if pair in report.pairs else {}
    return dataclasses.replace(report, models=models, pairs=pairs)


def _gate(
    reference: Reference,
    exports: dict[str, bytes],
    facts: dict[str, Any],
    method: Method,
) -> tuple[ParityReport, Method, dict[str, Any] | None]:
    """The parity report of the exports; with `best`, the better int8 candidate made the
    bundle's int8 model. Returns the report, the method of that model and the choice."""
    report = _parity(reference, exports, facts)
    if method is not Method.BEST:
        return report, method, None
    winner, choice = int8_winner(report)
    log.info(
        "int8: %s wins by %s (Dice %.4f QAT, %.4f post-training)",
        "QAT" if winner is Method.QAT else "post-training",
        choice["by"],
        choice["qat"]["dice_vs_truth"],
        choice["ptq"]["dice_vs_truth"],
    )
    if winner is Method.PTQ:
        report = promote_ptq(exports, report)
    return report, winner, choice


def refuse_useless(reference: Reference, model_path: Path) -> None:
    """A gate that certifies int8 as good as a useless float model certifies nothing."""
    size = reference.labels.shape[1]
    margin = (reference.tiles.shape[1] - size) // 2  # 'valid': the labels are the tiles' centres
    centres = reference.tiles[:, margin : margin + size, margin : margin + size]
    base = usefulness.baseline(zip(centres, reference.labels, strict=True), reference.classes)
    line = usefulness.verdict(
        reference.float_scores.dice_vs_truth,
        int(np.count_nonzero(reference.masks)),
        base,
        against_threshold=False,
    )
    if line:
        raise UserError(
            f"{model_path}: {line}; an int8 model would be as useless: retrain it (see "
            "`python -m train`'s closing lines), or pass --allow-useless to build anyway"
        )


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
    run = run.distilling(
        model, config.distill, labels=not config.label_free, images=config.images
    )  # QAT's teacher
    tiles = run.calibration_tiles(config.calibration_tiles)
    if not tiles:
        raise UserError(f"no calibration images in {run.data_config.source}: add images")
    facts = {  # what the parity report says of the model QAT started from
        "float_sparsity": sparsity_report(model).sparsity,
        "float_clustered": is_clustered(model),
    }
    calibration = calibrated_threshold(model, run)
    images, labels = run.validation_tiles()
    reference = Reference.of(
        model, images, labels, run.model_config.classes, threshold_of(calibration)
    )
    if not config.allow_useless:
        refuse_useless(reference, model_path)
    sensitivity = _Sensitivity(model, run.tile_size, tiles, reference)
    if config.sensitivity:  # first: it is what was asked for, QAT takes long
        sensitivity.rows()
    qat_model = _qat(model, run, config, facts)
    exports = _export_all(model, qat_model, run.tile_size, tiles)
    report, method, choice = _gate(reference, exports, facts, config.method)
    print_table(report, exports)
    kept: list[str] = []
    try:
        check_gate(report, GATED, config.max_dice_drop)
    except ParityGateFailed as failure:
        if not config.keep_float:
            raise
        kept = [row["layer"] for row in sensitivity.rows()[: config.keep_float]]
        log.warning("%s\n--keep-float: again with %s in float", failure, ", ".join(kept))
        exports |= _with_float_layers(
            model, run, config, tiles, exports, sensitivity, kept, facts, method
        )
        report = _parity(reference, exports, facts)
        print_table(report, exports)
        try:
            check_gate(report, GATED, config.max_dice_drop)
        except ParityGateFailed as again:
            raise ParityGateFailed(
                f"{again}; that is with --keep-float {config.keep_float} ({', '.join(kept)} "
                "in float)"
            ) from None
    fields = manifest_fields(
        run.raw_config,
        run.tile_size,
        run.output_tile_size,
        package_versions(),
        model_path,
        calibration,
    )
    fields["configs"]["quantize"] = config.to_dict()
    fields["parity"] = report.to_dict()
    if choice:
        fields["int8_choice"] = choice  # --method best: which int8 won, and both figures
    fields["keep_float"] = kept  # layers that model_int8.* computes in float
    # onnx_int8_qdq refused any weights that could saturate; this records what it checked.
    fields["onnx_int8_saturation"] = saturation_summary(
        u8s8_saturation(exports["int8-onnx"], tiles[:4])
    )
    if config.sensitivity or kept:
        fields["sensitivity"] = sensitivity.rows()
    fields["quality"] = quality_section(run, reference, model)
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


def quality_section(run: Run, reference: Reference, model: keras.Model) -> dict[str, Any]:
    """The manifest's `quality` (`runtime.quality.Reference`): the input statistics' bands over
    the training images, the output statistics' over the float model's held-out tiles (the
    gate's: a model is surer of the images it was fitted to than of any new one, so bands from
    them would flag clean images), the TTA views' disagreement from the float `model` on their
    4 flips. A model that normalizes each image gets standardized input statistics: it does
    not see a gain or an offset."""
    start = time.perf_counter()
    train = run.splits[0]
    chosen = train[:: max(1, -(-len(train) // QUALITY_IMAGES))]
    quality = reference_from_images(
        (sample.image for sample in chosen),
        run.preprocessing.channels,
        reference.probabilities,
        reference.masks,
        standardized=run.preprocessing.normalization is Normalization.IMAGE,
        spreads=_view_spreads(model, reference.tiles),
    )
    log.info(
        "quality reference: %d training images, %d held-out tiles, 4 views each (%.2f s)",
        quality.images,
        quality.tiles,
        time.perf_counter() - start,
    )
    if quality.images < FEW_IMAGES:  # held-out tiles are fewer by design: their bands widen
        log.warning(
            "quality reference from %d training images: with fewer than %d its ranges are "
            "rough, and the runtime's quality flags less reliable",
            quality.images,
            FEW_IMAGES,
        )
    return quality.to_dict()


def _view_spreads(model: keras.Model, tiles: np.ndarray) -> np.ndarray:
    """(N, h, w): per pixel, how much the float model's 4 flipped views of each tile disagree
    (`runtime.tta`), as the runtime measures it with TTA on."""
    views = augmented(partial(predicted, model), "flips", together=False, spread=True)
    return views(tiles)[..., -1]


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
