"""The variants a benchmark measures: every model of the bundles, and the float Keras model.

A variant is plain data (it crosses into the worker and cold-start processes as JSON); the
callers that run it build what they need from it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.macs import onnx_macs
from benchmarks.schema import MAIN, VariantInfo
from runtime.backends import ENGINES, backend_for
from runtime.bundle import MANIFEST, Manifest, read_manifest, sha256_of
from runtime.cache import memory_line
from runtime.memory import DEFAULT_MAX_MEMORY_MB, ModelMemory
from runtime.preprocess import Preprocessing, normalize
from runtime.tiling import TilePlan, default_overlap, plan_image, predict_tiled

# Bundle keys measured in the further bundles (pruned, filter-pruned): the deployable ones.
FURTHER_KEYS = ("fp32", "int8", "int8-onnx")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # "tflite int8", "onnx fp32 [thin]", "keras fp32"
    bundle: str  # the bundle's label
    bundle_path: str
    key: str  # the bundle key (fp32, int8, int8-onnx, ...) or "keras"
    path: str
    format: str  # tflite | onnx | keras
    precision: str
    tile: int  # the model's input side
    out_tile: int
    channels: int
    multiple: int  # tile starts are multiples of this (2**depth)
    macs_per_tile: int
    classes: int
    prune_method: str | None  # magnitude, 2:4, filter; None when the model was not pruned
    resizable: bool = False  # takes any size: the runtime runs whole images or large tiles
    batchable: bool = False  # takes any batch: the runtime runs several tiles at once
    memory: dict[str, float] | None = None  # `runtime.memory.memory_line`, as the runtime plans
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB  # the runtime's budget for one run
    engine: str | None = None  # the runtime engine, where not the format's first (openvino)

    @property
    def backend(self) -> str | None:
        """The runtime engine that runs it; None for the Keras model."""
        return self.engine or {"tflite": "litert", "onnx": "onnx"}.get(self.format)

    def keras_predict(self, model: Any, prep: Preprocessing, image: np.ndarray) -> np.ndarray:
        """A Keras model's probabilities for one raw image, on the runtime's tiles."""
        plan = self.plan(*image.shape[:2])
        return predict_tiled(
            normalize(image, prep),
            lambda tiles: model(tiles, training=False).numpy(),
            plan.tile if self.resizable else self.tile,
            plan.tile if self.resizable else self.out_tile,
            self.overlap,
            batch_size=plan.batch,
            align=self.multiple,
        )

    @property
    def overlap(self) -> int:
        return default_overlap(self.multiple, self.out_tile, self.resizable)  # the runtime's

    def plan(self, height: int, width: int | None = None) -> TilePlan:
        """How the runtime runs a (height, width) image (`Segmenter.plan`)."""
        return plan_image(
            height,
            height if width is None else width,
            (self.tile, self.out_tile, self.multiple),
            self.overlap,
            ModelMemory(**self.memory) if self.memory else None,
            (self.resizable, self.batchable),
            self.max_memory_mb,
        )

    def tiles(self, size: int) -> int:
        """Interpreter inputs the runtime runs for a size x size image (1: one pass)."""
        return self.plan(size).count

    def macs(self, size: int) -> int:
        """MACs of a size x size image as the runtime runs it (convolutions scale with the
        pixels of each input)."""
        plan = self.plan(size)
        return plan.count * round(self.macs_per_tile * plan.tile[0] * plan.tile[1] / self.tile**2)

    def describe(self, sizes: tuple[int, ...]) -> VariantInfo:
        """The report's entry: file, sizes on disk, MACs per image at each size."""
        data = Path(self.path).read_bytes()
        return VariantInfo(
            name=self.name,
            bundle=self.bundle,
            key=self.key,
            file=Path(self.path).name,
            format=self.format,
            precision=self.precision,
            engine=self.backend or "keras",
            size_bytes=len(data),
            gzip_bytes=len(gzip.compress(data, 9)),
            tile=self.tile,
            macs={s: self.macs(s) for s in sizes},
            plans={s: self.plan(s) for s in sizes},
        )


def variant_name(fmt: str, precision: str, label: str = MAIN) -> str:
    """ "tflite int8", "onnx int8 ptq", "tflite int8 [thin]" for a further bundle's."""
    base = f"{fmt} {precision.replace('_', ' ')}"
    return base if label == MAIN else f"{base} [{label}]"


def bundle_key(fmt: str, precision: str) -> str:
    """How the benchmarks key a model file: its precision for .tflite, "int8-onnx" for .onnx."""
    return precision if fmt == "tflite" else f"{precision}-{fmt}"


def _on_other_engines(variant: Variant) -> list[Variant]:
    """The file on each engine other than its format's first that runs it ("openvino int8":
    model_int8.onnx through OpenVINO; "openvino-bf16 fp32"): every model of the main bundle,
    the int8 ones of the others, so each bundle's fastest int8 pair is measured."""
    if variant.bundle != MAIN and variant.precision != "int8":
        return []
    return [
        dataclasses.replace(
            variant,
            name=variant_name(name, variant.precision, variant.bundle),
            key=bundle_key(name, variant.precision),
            engine=name,
        )
        for name, engine in ENGINES.items()
        if name != backend_for(variant.format) and engine.runs(variant.format, variant.precision)
    ]


def _macs(bundle: Path, manifest: Manifest) -> int:
    """MACs of one input tile, counted on the bundle's ONNX graph (all its models share it)."""
    onnx = [a for a in manifest.artifacts if a.format == "onnx"]
    return onnx_macs(bundle / onnx[0].file, manifest.input_size) if onnx else 0


def bundle_variants(
    label: str, bundle: Path, max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
) -> list[Variant]:
    """The bundle's models (all for the main bundle, FURTHER_KEYS for the others), each also on
    the other engines that run it (`_on_other_engines`)."""
    manifest = read_manifest(bundle)
    macs = _macs(bundle, manifest)
    prune = manifest_json(bundle)["configs"].get("prune")
    found = []
    for artifact in manifest.artifacts:
        key = bundle_key(artifact.format, artifact.precision)
        if label != MAIN and key not in FURTHER_KEYS:
            continue
        found.append(
            Variant(
                name=variant_name(artifact.format, artifact.precision, label),
                bundle=label,
                bundle_path=str(bundle),
                key=key,
                path=str(bundle / artifact.file),
                format=artifact.format,
                precision=artifact.precision,
                tile=manifest.input_size,
                out_tile=manifest.output_size,
                channels=manifest.channels,
                multiple=manifest.size_multiple,
                macs_per_tile=macs,
                classes=manifest.classes,
                prune_method=prune["method"] if prune else None,
                resizable=artifact.resizable,
                batchable=artifact.batchable,
                memory=line.to_dict() if (line := memory_line(manifest, artifact)) else None,
                max_memory_mb=max_memory_mb,
            )
        )
        found += _on_other_engines(found[-1])
    return found


def keras_variant(
    main: list[Variant], keras_path: Path | None
) -> tuple[Variant | None, str | None]:
    """The float Keras model the main bundle was made from, or why there is none.

    `keras_path` overrides the manifest's `source_model`; a recorded source whose SHA-256 no
    longer matches is not the bundle's source and is left out (the reason goes in the report).
    """
    if not main:
        return None, "the main bundle has no model to take sizes from"
    if keras_path is None:
        source = manifest_json(main[0].bundle_path).get("source_model")
        if source is None:
            return None, "the manifest records no source model: pass --keras MODEL.keras"
        keras_path = Path(source["path"])
        if not keras_path.is_file():
            return None, f"the source model {keras_path} is gone: pass --keras MODEL.keras"
        if sha256_of(keras_path) != source["sha256"]:
            return None, f"{keras_path} changed since the bundle was made: pass --keras"
    fields = {"name": "keras fp32", "key": "keras", "format": "keras", "precision": "fp32"}
    return dataclasses.replace(main[0], path=str(keras_path), **fields), None


def manifest_json(bundle: str | Path) -> dict[str, Any]:
    """The manifest's raw fields (configs, source_model) that the runtime does not model."""
    return json.loads((Path(bundle) / MANIFEST).read_text())
