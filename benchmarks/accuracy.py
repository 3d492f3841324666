"""Parity with the float Keras model and accuracy against ground truth, per image and overall.

Every bundle model segments the held-out images through the runtime (what a device runs);
the float Keras model runs on the same tiles, so a difference is the model's, not the tiling's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm import tqdm

from benchmarks.plots import Example
from benchmarks.schema import Accuracy, VariantScores
from benchmarks.variants import Variant, manifest_json
from optimize.parity import Reference, compare
from runtime.bundle import read_manifest
from runtime.metrics import masks_from_probabilities
from runtime.preprocess import scale_to_unit, to_channels
from runtime.segmenter import Segmenter
from train.config import DataConfig
from train.data import Sample, load_samples, split_samples

EXAMPLE_VARIANT = "tflite int8"  # the overlays show the gated int8 model against float
EXAMPLES = 2
GATED_KEYS = ("int8", "int8-onnx")  # the models the parity gate passed, in every bundle


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


def _runtime_probabilities(variant: Variant, images: list[np.ndarray]) -> list[np.ndarray]:
    segmenter = Segmenter.from_bundle(variant.bundle_path, variant.precision, variant.backend)
    return [segmenter.predict(image).probabilities for image in images]


def _pooled(arrays: list[np.ndarray]) -> np.ndarray:
    """All pixels of all images as one (P, K) array: overall scores weigh every pixel alike."""
    return np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])


def _probabilities(variant: Variant, images: list[np.ndarray]) -> list[np.ndarray]:
    if variant.format == "keras":
        return _keras_probabilities(variant, images)
    return _runtime_probabilities(variant, images)


def measure_accuracy(
    reference_variant: Variant, variants: list[Variant], samples: list[Sample], data: str
) -> tuple[Accuracy, list[Example]]:
    """Scores of every variant against the reference (the float Keras model when there is one)
    and the labels of `data`; overlay examples."""
    classes = reference_variant.classes
    images = [s.image for s in samples]
    labels = [s.mask for s in samples]
    float_probs = _probabilities(reference_variant, images)
    per_image_refs = {
        s.name: Reference(None, label, probs, classes)
        for s, label, probs in zip(samples, labels, float_probs, strict=True)
    }
    truth = np.concatenate([label.ravel() for label in labels])
    overall_ref = Reference(None, truth, _pooled(float_probs), classes)
    float_scores = VariantScores(
        overall_ref.float_scores,
        {n: r.float_scores for n, r in per_image_refs.items()},
    )
    scores: dict[str, VariantScores] = {}
    examples, gated_masks = [], {}
    for variant in tqdm(variants, desc="parity and accuracy"):
        probs = float_probs if variant is reference_variant else _probabilities(variant, images)
        if variant.key in GATED_KEYS:
            gated_masks[variant.name] = [masks_from_probabilities(p) for p in probs]
        scores[variant.name] = VariantScores(
            compare(overall_ref, _pooled(probs)),
            {
                name: compare(per_image_refs[name], p)
                for name, p in zip(per_image_refs, probs, strict=True)
            },
        )
        if variant.name == EXAMPLE_VARIANT:
            examples = [
                _example(s, fp, masks_from_probabilities(p), variant.name)
                for s, fp, p in list(zip(samples, float_probs, probs, strict=True))[:EXAMPLES]
            ]
    worst = _worst(scores, gated_masks, [s.name for s in samples])
    if worst and (worst[1] >= EXAMPLES or worst[0] != EXAMPLE_VARIANT):
        name, index = worst
        sample = samples[index]
        example = _example(sample, float_probs[index], gated_masks[name][index], name)
        examples.append(dataclasses.replace(example, name=f"{sample.name}, the worst"))
    accuracy = Accuracy(
        images=tuple(s.name for s in samples),
        has_labels=True,
        float_model=float_scores,
        variants=scores,
        data=data,
        reference=reference_variant.name,
    )
    return accuracy, examples


def _example(sample: Sample, float_probs: np.ndarray, mask: np.ndarray, variant: str) -> Example:
    return Example(
        name=sample.name,
        image=to_channels(scale_to_unit(sample.image), 1)[..., 0],
        truth=sample.mask,
        float_mask=masks_from_probabilities(float_probs),
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
