"""The bundle: a folder with manifest.json and the model files a device needs.

The manifest is the contract between `optimize` (which writes it) and this runtime (which reads
it first). A bundle is whole only when manifest.json is there: writers put it in last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from runtime.errors import UserError
from runtime.memory import ModelMemory
from runtime.preprocess import Preprocessing
from runtime.quality import Reference

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_REQUIRED = ("format_version", "input", "output", "preprocessing", "postprocessing", "artifacts")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """dtype and, for integer tensors, the affine quantization real = scale * (q - zero_point)."""

    dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclasses.dataclass(frozen=True)
class Artifact:
    file: str
    format: str  # "tflite" or "onnx"
    precision: str  # "fp32", "fp16", "dynamic", "int8", "int8_ptq", ...
    sha256: str
    size: int
    input: TensorInfo
    output: TensorInfo
    # (batch, height, width, channels), -1 where set at run time; None in older bundles, whose
    # models all take a fixed batch-1 tile.
    shape: tuple[int, ...] | None = None
    memory: ModelMemory | None = None  # measured for models that take any size or batch

    @property
    def batchable(self) -> bool:
        """The model takes any batch: several tiles run as one."""
        return self.shape is not None and self.shape[0] == -1

    @property
    def resizable(self) -> bool:
        """The model takes any height and width (multiples of the manifest's `multiple`)."""
        return self.shape is not None and -1 in self.shape[1:3]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            **{
                **data,
                "input": TensorInfo(**data["input"]),
                "output": TensorInfo(**data["output"]),
                "shape": tuple(data["shape"]) if "shape" in data else None,
                "memory": ModelMemory(**data["memory"]) if "memory" in data else None,
            }
        )


@dataclasses.dataclass(frozen=True)
class BuildFigures:
    """What the build machine measured for one model on the golden tiles (`runtime.verify`)."""

    backend: str
    agreement_with_float: float
    dice_vs_float: float
    ms_per_tile: float
    gate_dice_drop: float  # the parity gate's Dice loss against the labels (all held-out tiles)


@dataclasses.dataclass(frozen=True)
class GoldenInfo:
    """The manifest's `golden` section: the tiles' file and hash, and per model file name the
    build machine's figures; `max_dice_drop` is the bundle's Dice budget."""

    file: str
    sha256: str
    max_dice_drop: float
    built_on: dict[str, str]
    models: dict[str, BuildFigures]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GoldenInfo:
        return cls(
            file=data["file"],
            sha256=data["sha256"],
            max_dice_drop=float(data["max_dice_drop"]),
            built_on=dict(data["built_on"]),
            models={name: BuildFigures(**figures) for name, figures in data["models"].items()},
        )


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What the runtime needs to know: sizes, pre- and post-processing, the model files."""

    input_size: int  # the side of the model's input tile
    output_size: int  # the side of its output tile (smaller for a 'valid' U-Net)
    size_multiple: int  # patch * 2**depth: a 'same' model also takes any multiple of it
    channels: int
    classes: int
    preprocessing: Preprocessing
    activation: str  # "sigmoid" or "softmax"
    threshold: float
    class_names: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    golden: GoldenInfo | None = None  # None in bundles made before golden tiles
    # What the training images look like (`runtime.quality`); None in bundles made before it.
    quality: Reference | None = None
    digest: str = ""  # SHA-256 of manifest.json, which holds every file's: the bundle's identity

    def artifact(self, precision: str, fmt: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.precision == precision and artifact.format == fmt:
                return artifact
        have = ", ".join(sorted(f"{a.precision} ({a.format})" for a in self.artifacts))
        raise UserError(f"the bundle has no {precision} {fmt} model: it has {have}")

    @property
    def precisions(self) -> list[str]:
        return sorted({a.precision for a in self.artifacts})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: str | Path) -> Manifest:
    """Reads and checks manifest.json; a missing, broken or too new manifest is a UserError."""
    path = Path(bundle) / MANIFEST
    if str(bundle).endswith(".zip") and Path(bundle).is_file():
        raise UserError(
            f"{bundle} is a bioimage.io package, not a bundle: runtime.predict {bundle} IMAGE "
            "--out DIR --verify checks it against its own test tensors"
        )
    if not Path(bundle).is_dir():
        raise UserError(f"bundle {bundle} is not a folder: give the folder optimize.quantize wrote")
    if not path.exists():
        raise UserError(
            f"{bundle} has no {MANIFEST}: it is not a bundle, or its writing did not finish"
        )
    try:
        text = path.read_bytes()
        raw = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} ({error}): re-export the bundle") from None
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: re-export the bundle")
    if not isinstance(raw["format_version"], int) or raw["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {raw['format_version']}, this runtime reads up to "
            f"{FORMAT_VERSION}: upgrade the runtime"
        )
    try:
        return Manifest(
            input_size=int(raw["input"]["size"]),
            output_size=int(raw["output"]["size"]),
            size_multiple=int(raw["input"]["multiple"]),
            channels=int(raw["input"]["channels"]),
            classes=int(raw["output"]["classes"]),
            preprocessing=Preprocessing.from_dict(raw["preprocessing"]),
            activation=raw["postprocessing"]["activation"],
            threshold=float(raw["postprocessing"]["threshold"]),
            class_names=tuple(raw["postprocessing"]["class_names"]),
            artifacts=tuple(Artifact.from_dict(a) for a in raw["artifacts"]),
            golden=GoldenInfo.from_dict(raw["golden"]) if "golden" in raw else None,
            quality=Reference.from_dict(raw["quality"]) if "quality" in raw else None,
            digest=hashlib.sha256(text).hexdigest(),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{path} has a missing or malformed field ({error}): re-export the bundle"
        ) from None


def verified_path(bundle: str | Path, file: str, sha256: str, what: str = "model file") -> Path:
    """A file of the bundle, after checking it exists and its SHA-256 matches the manifest."""
    path = Path(bundle) / file
    if not path.is_file():
        raise UserError(f"{what} {path} is missing: re-export the bundle")
    if sha256_of(path) != sha256:
        raise UserError(
            f"{what} {path} does not match its SHA-256 in the manifest (truncated or "
            "changed): re-export or re-copy the bundle"
        )
    return path


def verified_model_path(bundle: str | Path, artifact: Artifact) -> Path:
    """The model file, after checking it exists and its SHA-256 matches the manifest."""
    return verified_path(bundle, artifact.file, artifact.sha256)
