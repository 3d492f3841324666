"""`python -m benchmarks.score`: a bundle's models on a labelled test folder that is not its own
validation split, by pixel Dice and per object (issue 31).

    python -m benchmarks.score --bundle BUNDLE --data FOLDER [--models int8,fp32,...] \\
        [--out FILE.json]

Every image/label pair of FOLDER is read as the bundle's training read its data (the manifest's
foreground and mask threshold) and segmented whole, at any size, through `runtime.Segmenter` at
the bundle's own threshold: what a device computes. One line per model: the pixel Dice pooled
over all pixels, the mean of the images' Dice, object recall, false components per image and
recall per object size (`benchmarks.objects`); `--out` writes the same with a row per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.objects import ObjectCounts, match_objects, object_scores
from benchmarks.schema import ObjectScores
from benchmarks.variants import bundle_key, manifest_json, variant_name
from runtime.backends import ENGINES, backend_for
from runtime.bundle import Manifest, read_manifest
from runtime.errors import UserError
from runtime.golden import VerificationFailed
from runtime.io import write_json_atomic
from runtime.log import add_verbosity, configure
from runtime.metrics import dice, dice_of_counts, overlap_counts
from runtime.segmenter import Segmenter
from runtime.typed_json import JsonRecord
from train.config import DataConfig
from train.data import Sample, load_samples

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Model:
    """One model file of the bundle, on its format's first engine (as the parity gate ran it)."""

    key: str  # the bundle key, as the benchmark report's variants: int8, fp32, int8-onnx, ...
    name: str  # "tflite int8"
    precision: str
    engine: str  # litert | onnx
    file: str


@dataclasses.dataclass(frozen=True)
class ImageRow:
    """One model on one image."""

    image: str
    height: int
    width: int
    dice: float  # 1.0 where neither the label nor the mask has foreground
    labelled: int  # labelled objects
    found: int
    false: int  # predicted components that touch no labelled pixel
    blank: bool  # the mask has no foreground at all


@dataclasses.dataclass(frozen=True)
class ModelScore:
    key: str
    name: str
    file: str
    engine: str
    verified: bool | None  # on this device's golden-tile run; None: the bundle has no tiles
    dice: float  # pooled: every pixel of every image alike
    mean_image_dice: float
    objects: ObjectScores
    per_image: tuple[ImageRow, ...] = ()


@dataclasses.dataclass(frozen=True)
class ScoreReport(JsonRecord):
    """What `--out` holds."""

    JSON_NAME = "score"

    bundle: str
    data: str
    created: str
    images: int
    classes: int
    threshold: float | None  # the bundle's; None: a softmax model's argmax
    models: tuple[ModelScore, ...] = ()
    skipped: Mapping[str, str] = dataclasses.field(default_factory=dict)  # model -> why


# --------------------------------------------------------------------------------------------
# Models


def bundle_models(manifest: Manifest) -> list[Model]:
    """Every model file the manifest lists, in its order."""
    return [
        Model(
            key=bundle_key(a.format, a.precision),
            name=variant_name(a.format, a.precision),
            precision=a.precision,
            engine=backend_for(a.format),
            file=a.file,
        )
        for a in manifest.artifacts
    ]


def chosen_models(manifest: Manifest, asked: list[str] | None) -> list[Model]:
    """The models `--models` names (by bundle key or name), or all of them."""
    models = bundle_models(manifest)
    if asked is None:
        return models
    by_label = {m.key: m for m in models} | {m.name: m for m in models}
    unknown = [a for a in asked if a not in by_label]
    if unknown:
        raise UserError(
            f"unknown model {unknown[0]!r}: the bundle has {', '.join(m.key for m in models)}"
        )
    return list({by_label[a].key: by_label[a] for a in asked}.values())  # once each, in order


def open_models(
    bundle: Path, models: list[Model], named: bool, tta: str = "none"
) -> tuple[list[tuple[Model, Segmenter, bool | None]], dict[str, str]]:
    """A Segmenter per model (with test-time augmentation `tta`), each checked on the bundle's
    golden tiles where it has them.

    By default a model that does not run here (no engine, a changed file) or fails its check is
    passed over, and named on stderr. A model the user named is an error when it does not run,
    and is scored with a warning when it fails its check: its figures are what was asked for.
    """
    golden = read_manifest(bundle).golden is not None
    opened, skipped = [], {}
    for model in models:
        verified: bool | None = True if golden else None
        try:
            if why := ENGINES[model.engine].missing():
                raise UserError(f"cannot run {model.key} ({model.file}): {why}")
            try:
                segmenter = Segmenter.from_bundle(
                    bundle, model.precision, model.engine, verify=golden, tta=tta
                )
            except VerificationFailed as error:
                if not named:
                    raise
                log.warning("score: scoring %s although it fails here: %s", model.key, error)
                segmenter = Segmenter.from_bundle(bundle, model.precision, model.engine, tta=tta)
                verified = False
        except UserError as error:
            if named:  # (a named model that fails its check was scored above)
                raise
            skipped[model.key] = str(error)
            log.warning("score: passing over %s: %s", model.key, error)
            continue
        opened.append((model, segmenter, verified))
    if not opened:
        raise UserError(f"no model of {bundle} runs here: {'; '.join(skipped.values())}")
    return opened, skipped


# --------------------------------------------------------------------------------------------
# Data and scores


def labelled_samples(bundle: Path, folder: Path, classes: int) -> list[Sample]:
    """The folder's pairs, with the foreground and mask threshold the bundle was trained with."""
    if not folder.is_dir():
        raise UserError(f"--data {folder} is not a folder: give a folder with image/ and label/")
    configs = manifest_json(bundle).get("configs") or {}
    data = DataConfig.from_dict(configs["data"]) if "data" in configs else DataConfig()
    return load_samples(data.replace(source=str(folder)), classes)


@dataclasses.dataclass
class _Tally:
    """One model's running sums over the images."""

    overlap: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, np.int64))
    counts: list[ObjectCounts] = dataclasses.field(default_factory=list)
    rows: list[ImageRow] = dataclasses.field(default_factory=list)

    def add(self, name: str, mask: np.ndarray, label: np.ndarray, classes: int) -> None:
        self.overlap += overlap_counts(mask, label, classes)
        objects = match_objects(mask, label, classes)
        counts = objects.counts()
        self.counts.append(counts)
        self.rows.append(
            ImageRow(
                image=name,
                height=int(label.shape[0]),
                width=int(label.shape[1]),
                dice=dice(mask, label, classes),
                labelled=counts.labelled,
                found=counts.found,
                false=counts.false,
                blank=objects.blank,
            )
        )

    def score(self, model: Model, verified: bool | None) -> ModelScore:
        return ModelScore(
            key=model.key,
            name=model.name,
            file=model.file,
            engine=model.engine,
            verified=verified,
            dice=dice_of_counts(*(int(n) for n in self.overlap)),
            mean_image_dice=float(np.mean([r.dice for r in self.rows])),
            objects=object_scores(self.counts),
            per_image=tuple(self.rows),
        )


def score_bundle(bundle: Path, folder: Path, asked: list[str] | None = None) -> ScoreReport:
    """Every chosen model of `bundle` on every pair of `folder`; each image is read once."""
    manifest = read_manifest(bundle)
    models = chosen_models(manifest, asked)
    samples = labelled_samples(bundle, folder, manifest.classes)  # a data error fails early
    opened, skipped = open_models(bundle, models, named=asked is not None)
    tallies = [_Tally() for _ in opened]
    for sample in tqdm(samples, desc="scoring", unit="image", disable=None):
        image, label = sample.image, sample.mask
        for (_, segmenter, _), tally in zip(opened, tallies, strict=True):
            tally.add(sample.name, segmenter.predict(image).mask, label, manifest.classes)
    return ScoreReport(
        bundle=str(bundle),
        data=str(folder),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        images=len(samples),
        classes=manifest.classes,
        threshold=manifest.threshold if manifest.activation == "sigmoid" else None,
        models=tuple(t.score(m, v) for (m, _, v), t in zip(opened, tallies, strict=True)),
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------
# Command line


def summary_line(score: ModelScore, width: int = 0) -> str:
    """'tflite int8  Dice 0.8123 (per image 0.8011)  objects 45/50 (recall 90.0%)  false 0.40
    per image  blank 0  by size: <4 50.0% of 4, 4-8 ...'."""
    o = score.objects
    recall = "-" if o.recall is None else f"{o.recall:.1%}"
    sizes = ", ".join(f"{b.bin} {b.recall:.1%} of {b.count}" for b in o.bins) or "-"
    return (
        f"{score.name:<{width}}  Dice {score.dice:.4f} (per image {score.mean_image_dice:.4f})  "
        f"objects {o.found}/{o.labelled} (recall {recall})  "
        f"false {o.false_per_image or 0:.2f} per image  blank {o.blank_images}  "
        f"recall by size (px): {sizes}"
        + ("  [fails verification here]" if score.verified is False else "")
    )


def _models(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one model, e.g. int8,fp32")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.score", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle folder")
    parser.add_argument(
        "--data", type=Path, required=True, help="a labelled folder: image/ and label/ (or masks/)"
    )
    parser.add_argument(
        "--models",
        type=_models,
        help="comma-separated bundle keys or names: int8,fp32,int8-onnx,'tflite fp16' (default: "
        "every model of the manifest that runs and passes its golden-tile check here)",
    )
    parser.add_argument("--out", type=Path, help="write the scores and a row per image as JSON")
    add_verbosity(parser)
    return parser.parse_args(argv)


def check_json_out(out: Path | None) -> None:
    """A --out that can take a JSON file: not a folder, under a writable one."""
    if out is None:
        return
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give a .json file's path")
    parent = out.resolve().parent
    if not os.access(parent if parent.exists() else Path.cwd(), os.W_OK):
        raise UserError(f"cannot write under {parent}: choose a writable --out")


def main(args: argparse.Namespace) -> int:
    configure(args)
    try:
        check_json_out(args.out)
        report = score_bundle(args.bundle, args.data, args.models)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    at = "argmax" if report.threshold is None else f"threshold {report.threshold:g}"
    print(f"{report.bundle} on {report.images} images of {report.data} ({at})")
    width = max(len(s.name) for s in report.models)
    for score in report.models:
        print(summary_line(score, width))
    if args.out is not None:
        write_json_atomic(args.out, report.to_dict())
        print(f"scores: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
