"""Parity with the float Keras model and accuracy against ground truth, per image and overall.

Every bundle model segments the held-out images through the runtime (what a device runs);
the float Keras model runs on the same tiles, so a difference is the model's, not the tiling's.
Every mask is made at the threshold the runtime uses, its bundle's (`Manifest.threshold`,
calibrated on the validation images where the bundle did): the report scores what a device
does. With test-time augmentation asked for, each runtime model segments the same images again
with each kind (`runtime.tta`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.objects import score_masks
from benchmarks.plots import Example
from benchmarks.schema import Accuracy, Int8Choice, Scores, Threshold, Tta, VariantScores
from benchmarks.variants import Variant, manifest_json
from optimize.parity import Reference, compare
from optimize.threshold import DEFAULT as DEFAULT_THRESHOLD
from runtime.bundle import read_manifest
from runtime.metrics import masks_from_probabilities
from runtime.preprocess import scale_to_unit, to_channels
from runtime.segmenter import Segmenter
from runtime.typed_json import SchemaError, from_json
from train.config import DataConfig
from train.data import Sample, load_samples, split_samples

EXAMPLE_VARIANT = "tflite int8"  # the overlays show the gated int8 model against float
EXAMPLES = 2
GATED_KEYS = ("int8", "int8-onnx")  # the models the parity gate passed, in every bundle

log = logging.getLogger(__name__)


def held_out_samples(variant: Variant, source: str | None, limit: int) -> list[Sample]:
    """The bundle's own validation split, of `source` when given (the same split rule)."""
    configs = manifest_json(variant.bundle_path)["configs"]
    data = DataConfig.from_dict(configs["data"])
    if source:
        data = data.replace(source=source)
    classes = configs["model"]["classes"]
    return split_samples(load_samples(data, classes), data.val_fraction)[1][:limit]


def _keras_probabilities(variant: Variant, images: list[np.ndarray]) -> list[np.ndarray]:
    from train.tfk import keras

    model = keras.models.load_model(variant.path, compile=False)
    prep = read_manifest(variant.bundle_path).preprocessing
    return [variant.keras_predict(model, prep, image) for image in images]


def _runtime_probabilities(
    variant: Variant, images: list[np.ndarray], tta: str = "none"
) -> list[np.ndarray]:
    segmenter = Segmenter.from_bundle(
        variant.bundle_path, variant.precision, variant.backend, tta=tta
    )
    return [segmenter.predict(image).probabilities for image in images]


def _pooled(arrays: list[np.ndarray]) -> np.ndarray:
    """All pixels of all images as one (P, K) array: overall scores weigh every pixel alike."""
    return np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])


def _probabilities(variant: Variant, images: list[np.ndarray]) -> list[np.ndarray]:
    if variant.format == "keras":
        return _keras_probabilities(variant, images)
    return _runtime_probabilities(variant, images)


def bundle_threshold(bundle: str) -> Threshold:
    """The threshold the runtime makes a bundle's masks at, and its calibration if any."""
    manifest = read_manifest(bundle)
    if manifest.activation != "sigmoid":
        return Threshold(None)
    calibration = manifest_json(bundle)["postprocessing"].get("calibration") or {}
    fields = ("dice", "dice_at_default", "images")
    try:
        found = from_json(Threshold, {k: calibration.get(k) for k in fields}, "calibration")
    except SchemaError as error:
        log.warning("%s: the manifest's threshold calibration is unreadable (%s)", bundle, error)
        found = Threshold()
    return dataclasses.replace(found, threshold=manifest.threshold)


def int8_choice(bundle: str) -> Int8Choice | None:
    """The manifest's `int8_choice` (QAT or post-training int8, and why), when it has one."""
    raw = manifest_json(bundle).get("int8_choice")
    if not raw:
        return None
    try:
        return from_json(Int8Choice, raw, "int8_choice")
    except SchemaError as error:
        log.warning("%s: the manifest's int8_choice is unreadable (%s)", bundle, error)
        return None


def measure_accuracy(
    reference_variant: Variant,
    variants: list[Variant],
    samples: list[Sample],
    data: str,
    tta: Sequence[str] = (),
) -> tuple[Accuracy, list[Example], Tta | None]:
    """Scores of every variant against the reference (the float Keras model when there is one)
    and the labels of `data`; overlay examples; with `tta` kinds ("flips", "d4"), each runtime
    model's overall scores with each (beside "none"; `Tta.latency` is left to
    `benchmarks.tta`)."""
    classes = reference_variant.classes
    images = [s.image for s in samples]
    labels = [s.mask for s in samples]
    bundles = {v.bundle: v.bundle_path for v in (reference_variant, *variants)}
    thresholds = {label: bundle_threshold(path) for label, path in bundles.items()}  # once each
    threshold = _mask_threshold(thresholds[reference_variant.bundle])
    float_probs = _probabilities(reference_variant, images)
    per_image_refs = {
        s.name: Reference(None, label, probs, classes, threshold)
        for s, label, probs in zip(samples, labels, float_probs, strict=True)
    }
    truth = np.concatenate([label.ravel() for label in labels])
    overall_ref = Reference(None, truth, _pooled(float_probs), classes, threshold)
    float_scores = VariantScores(
        overall_ref.float_scores,
        {n: r.float_scores for n, r in per_image_refs.items()},
        score_masks((masks_from_probabilities(p, threshold) for p in float_probs), labels, classes),
    )
    scores: dict[str, VariantScores] = {}
    augmented: dict[str, dict[str, Scores]] = {}
    tta_seconds = 0.0
    examples, gated_masks = [], {}
    extra = [k for k in tta if k != "none"]  # TTA kinds measured beside none
    desc = "parity and accuracy" + (f" (TTA {', '.join(extra)} too)" if extra else "")
    for variant in tqdm(variants, desc=desc):
        own = _mask_threshold(thresholds[variant.bundle])
        probs = float_probs if variant is reference_variant else _probabilities(variant, images)
        masks = [masks_from_probabilities(p, own) for p in probs]
        if variant.key in GATED_KEYS:
            gated_masks[variant.name] = masks
        scores[variant.name] = VariantScores(
            compare(overall_ref, _pooled(probs), own),
            {
                name: compare(per_image_refs[name], p, own)
                for name, p in zip(per_image_refs, probs, strict=True)
            },
            score_masks(masks, labels, classes),
        )
        if tta and variant.format != "keras":
            started = time.perf_counter()
            augmented[variant.name] = {"none": scores[variant.name].overall}
            for kind in extra:
                views = _runtime_probabilities(variant, images, kind)
                augmented[variant.name][kind] = compare(overall_ref, _pooled(views), own)
            tta_seconds += time.perf_counter() - started
        if variant.name == EXAMPLE_VARIANT:
            examples = [
                _example(s, fp, mask, variant.name, threshold)
                for s, fp, mask in list(zip(samples, float_probs, masks, strict=True))[:EXAMPLES]
            ]
    worst = _worst(scores, gated_masks, [s.name for s in samples])
    if worst and (worst[1] >= EXAMPLES or worst[0] != EXAMPLE_VARIANT):
        name, index = worst
        sample = samples[index]
        example = _example(sample, float_probs[index], gated_masks[name][index], name, threshold)
        examples.append(dataclasses.replace(example, name=f"{sample.name}, the worst"))
    accuracy = Accuracy(
        images=tuple(s.name for s in samples),
        has_labels=True,
        float_model=float_scores,
        variants=scores,
        data=data,
        reference=reference_variant.name,
        thresholds=thresholds,
        int8_choice=int8_choice(reference_variant.bundle_path),
    )
    measured = Tta(("none", *extra), augmented, wall_seconds=tta_seconds) if tta else None
    return accuracy, examples, measured


def _mask_threshold(threshold: Threshold) -> float:
    """The threshold masks are made at (a softmax model's argmax ignores it)."""
    return DEFAULT_THRESHOLD if threshold.threshold is None else threshold.threshold


def _example(
    sample: Sample, float_probs: np.ndarray, mask: np.ndarray, variant: str, threshold: float
) -> Example:
    return Example(
        name=sample.name,
        image=to_channels(scale_to_unit(sample.image), 1)[..., 0],
        truth=sample.mask,
        float_mask=masks_from_probabilities(float_probs, threshold),
        mask=mask,
        variant=variant,
    )


def _worst(
    scores: dict[str, VariantScores], gated: dict[str, list[np.ndarray]], names: list[str]
) -> tuple[str, int] | None:
    """The gated model that agrees least with float overall, and its least agreeing image."""
    if not gated:
        return None
    model = min(gated, key=lambda v: scores[v].overall.agreement_with_float)
    per_image = scores[model].per_image
    image = min(range(len(names)), key=lambda i: per_image[names[i]].agreement_with_float)
    return model, image
