"""The quick path to a bundle, without QAT: fp32 and post-training int8 TFLite, fp32 ONNX,
measured against the float model like `optimize.quantize` does but not gated."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from optimize.bundle import BUNDLE_FILES, check_bundle_out, manifest_fields, write_bundle
from optimize.configs import MAX_DICE_DROP
from optimize.converters import EXPORTERS, QUICK
from optimize.finetune import Run
from optimize.parity import Reference, golden_section, parity_report, written
from optimize.threshold import calibrated_threshold, threshold_of
from runtime.golden import GOLDEN_FILE
from runtime.versions import package_versions


def bundle_from_run(
    run_folder: str | Path,
    out: str | Path,
    precisions: Iterable[str] = QUICK,
    overwrite: bool = False,
    checkpoint: str = "model.keras",
) -> Path:
    """Exports a training run's model (final or best.keras) to a bundle (`EXPORTERS` keys)."""
    out = Path(out)
    check_bundle_out(out, overwrite)
    run = Run.load(run_folder)
    model = run.load_model(checkpoint)
    tiles = run.calibration_tiles()
    exports = {key: EXPORTERS[key](model, run.tile_size, tiles) for key in precisions}
    if "int8_ptq" in exports:
        exports["int8"] = exports.pop("int8_ptq")
    calibration = calibrated_threshold(model, run)
    fields = manifest_fields(
        run.raw_config,
        run.tile_size,
        run.output_tile_size,
        package_versions(),
        run.folder / checkpoint,
        calibration,
    )
    # No gate on this quick path, but the same measurements, so a device can verify the bundle.
    images, labels = run.validation_tiles()
    reference = Reference.of(
        model, images, labels, run.model_config.classes, threshold_of(calibration)
    )
    with written(exports) as paths:
        report = parity_report(reference, paths)
        fields["parity"] = report.to_dict()
        golden, fields["golden"] = golden_section(
            reference,
            run.raw_validation_tiles(),
            paths,
            report,
            run.preprocessing,
            MAX_DICE_DROP,
        )
    files = {key: (*BUNDLE_FILES[key], data) for key, data in exports.items()}
    return write_bundle(out, files, fields, overwrite, extra={GOLDEN_FILE: golden})
