"""Reading a bioimage.io package: its files, its rdf (format 0.5, or 0.4 converted), its axes.

The rules are bioimageio.spec's: the file names it accepts, the axis ids and sizes it defaults,
the conversion of format 0.4. Format 0.5 is read here with PyYAML alone; format 0.4 is converted
by bioimageio.spec itself (the `zoo` extra), imported only then, so a device that runs 0.5
packages needs nothing more than the runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.bundle import MANIFEST
from runtime.errors import UserError

# bioimageio.spec's names, in its order of preference; `NAME.bioimageio.yaml` and the like count.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
_AXIS_KEY = {"batch": "b", "channel": "c"}
SINGLETON = "1"  # the key of a further axis of size 1 (the spec's expand_output_shape adds z)
# The id format 0.5 gives an axis that names none (bioimageio.spec.model.v0_5).
_DEFAULT_ID = {"batch": "batch", "channel": "channel", "space": "x", "time": "time"}


def rdf_name(names: list[str]) -> str | None:
    """The rdf among a package's top-level file names, as bioimageio.spec picks it."""
    ordered = sorted(n for n in names if "/" not in n)
    for wanted in RDF_NAMES:
        for name in ordered:
            if name == wanted or name.endswith("." + wanted):
                return name
    return None


def is_rdf_file(path: Path) -> bool:
    """An rdf file named as such: any YAML file (bioimageio.spec loads one given by path, as
    the spec repository's `rdf_wrong_shape_v0_4.yaml`); a folder's rdf is found by name."""
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml")


def is_package(path: str | Path) -> bool:
    """A .zip (or any zip file), an rdf file itself, or a folder with an rdf and no manifest.json."""
    p = Path(path)
    if p.suffix.lower() == ".zip" or (p.is_file() and zipfile.is_zipfile(p)) or is_rdf_file(p):
        return True
    if not p.is_dir() or (p / MANIFEST).exists():
        return False
    return rdf_name([f.name for f in p.iterdir() if f.is_file()]) is not None


class Files:
    """The package's files by their relative name, from a zip, a folder or the rdf file's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self.folder = path.parent if is_rdf_file(path) else path
        if self.folder.is_dir():
            names = [f.name for f in self.folder.iterdir() if f.is_file()]
            self.rdf = path.name if is_rdf_file(path) else rdf_name(names)
            return
        if not path.is_file():
            raise UserError(f"package {path} does not exist: give a bioimage.io .zip or folder")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise UserError(
                f"{path} is not a readable zip ({error}): re-download the package"
            ) from None
        self.rdf = rdf_name(self._zip.namelist())

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.namelist()
        return (self.folder / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.exists(name):
            raise UserError(
                f"{self.path} lacks {name}, which its rdf names: re-download the package"
            )
        try:
            return self._zip.read(name) if self._zip else (self.folder / name).read_bytes()
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise UserError(
                f"cannot read {name} of {self.path} ({error}): re-download it"
            ) from None

    def local(self, name: str) -> Path | None:
        """The file itself when the package is a folder (nothing to unpack)."""
        return None if self._zip is not None else self.folder / name

    def checked(self, entry: dict[str, Any], what: str) -> tuple[str, bytes]:
        """A file entry's name and bytes after checking its SHA-256 (when the rdf gives one)."""
        name = relative(entry.get("source"), self.path)
        data = self.read(name)
        expected = entry.get("sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise UserError(
                f"{what} {name} of {self.path} does not match its SHA-256 in {self.rdf} "
                "(changed or truncated): re-download the package"
            )
        return name, data


def relative(source: Any, package: Path) -> str:
    if not isinstance(source, str) or "://" in source or source.startswith("/"):
        raise UserError(
            f"{package} names {source!r} as a file: the runtime reads only files inside the "
            "package (no downloads)"
        )
    return str(PurePosixPath(source))


def read_rdf(files: Files) -> dict[str, Any]:
    """The package's rdf as format 0.5; anything else is a one-line UserError."""
    import yaml

    if files.rdf is None:
        raise UserError(
            f"{files.path} has no rdf.yaml, bioimageio.yaml or *.bioimageio.yaml: it is not a "
            "bioimage.io package"
        )
    try:
        rdf = yaml.safe_load(files.read(files.rdf))
    except yaml.YAMLError as error:
        raise UserError(
            f"{files.path}'s {files.rdf} is not valid YAML ({error}): re-download it"
        ) from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
        raise UserError(
            f"{files.path}'s {files.rdf} describes a {kind!r}, not a model: give a model package"
        )
    version = str(rdf.get("format_version", ""))
    if version.startswith("0.5."):
        return rdf
    if version.startswith("0.4."):
        return _from_v0_4(rdf, files.path)
    raise UserError(
        f"{files.path} is in rdf format {version or '?'}: the runtime reads formats 0.5 and 0.4 "
        "(`bioimageio update-format` converts older packages)"
    )


# What makes ONNX weights of the other formats, for the refusal line.
_CONVERTERS = (
    (("pytorch_state_dict", "torchscript"), "bioimageio.core's add_weights converts"),
    (("keras_hdf5", "tensorflow_saved_model_bundle"), "tf2onnx converts"),
)


def onnx_weights(rdf: dict[str, Any], path: Path) -> dict[str, Any]:
    """The rdf's ONNX weights entry; other formats are refused by name, with what converts them."""
    weights = {k: v for k, v in (rdf.get("weights") or {}).items() if v}
    if "onnx" not in weights:
        have = ", ".join(weights) or "none"
        how = next(
            (
                f"; {tool} {' and '.join(kinds)} to ONNX"
                for kinds, tool in _CONVERTERS
                if set(kinds) & set(weights)
            ),
            "",
        )
        raise UserError(
            f"{path}'s weights are {have}, not ONNX: the runtime reads ONNX weights only{how}"
        )
    return weights["onnx"]


# Fields of a format 0.4 rdf the runtime reads; the rest (authors, citations, covers, ...) is
# metadata that format 0.5 validates more strictly (a DOI given as a `url`), so the conversion
# gets valid stand-ins and a package is judged by what the runtime runs.
_RUN_FIELDS = (
    "type",
    "format_version",
    "inputs",
    "outputs",
    "test_inputs",
    "test_outputs",
    "config",
)
_STAND_INS = {
    "name": "package",
    "description": "a model package",
    "authors": [{"name": "unknown"}],
    "cite": [{"text": "unknown", "url": "https://bioimage.io"}],
    "documentation": "README.md",
    "license": "MIT",
    "timestamp": "2020-01-01T00:00:00",
}
_STAND_IN_ONNX = {"source": "weights.onnx"}  # converts what has no ONNX weights, to say so later


def _from_v0_4(rdf: dict[str, Any], path: Path) -> dict[str, Any]:
    """Format 0.4 converted to 0.5 by bioimageio.spec, offline, from the fields the runtime
    reads: only the ONNX weights go through (others may name downloads or code), their SHA-256
    carried over; other formats are kept by name for the refusal line."""
    try:
        from bioimageio.spec import ValidationContext, build_description, dump_description
    except ImportError:
        raise UserError(
            f"{path} is in rdf format {rdf['format_version']}: format 0.4 needs bioimageio.spec, "
            "pip install '.[zoo]' (or convert it with `bioimageio update-format`)"
        ) from None
    weights = {k: v for k, v in (rdf.get("weights") or {}).items() if v}
    onnx = {k: v for k, v in (weights.get("onnx") or _STAND_IN_ONNX).items() if k != "parent"}
    fields = {k: rdf[k] for k in _RUN_FIELDS if k in rdf}
    source = {**_STAND_INS, **fields, "outputs": _halo_outputs(rdf), "weights": {"onnx": onnx}}
    with ValidationContext(perform_io_checks=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the conversion: the refusal is one line
        descr = build_description(source, format_version="latest")
    errors = getattr(descr.validation_summary, "errors", [])
    if type(descr).__name__ == "InvalidDescr" or errors:
        first = errors[0] if errors else None
        where = ".".join(map(str, first.loc)) if first else ""
        why = " ".join(str(first.msg if first else "invalid").split())[:200]  # one line
        raise UserError(
            f"{path} (format {rdf['format_version']}) does not convert to format 0.5: "
            f"{where + ': ' if where else ''}{why}; fix its rdf"
        )
    converted = dump_description(descr)
    converted_onnx = converted["weights"]["onnx"]
    converted["weights"] = {k: v for k, v in weights.items() if k != "onnx"}
    if "onnx" in weights:
        converted["weights"]["onnx"] = {**converted_onnx, "sha256": onnx.get("sha256")}
    return converted


def _halo_outputs(rdf: dict[str, Any]) -> list[Any]:
    """Format 0.4 allows an output of fixed shape with a halo (the spec's
    `unet2d_fixed_shape`); 0.5 wants a halo on a size that follows an input. Such an output
    with its input's very shape is that input's size, offset 0."""
    inputs = {t.get("name"): t for t in rdf.get("inputs") or [] if isinstance(t, dict)}
    outputs = []
    for tensor in rdf.get("outputs") or []:
        same = next(
            (
                name
                for name, t in inputs.items()
                if isinstance(tensor, dict)
                and t.get("shape") == tensor.get("shape")
                and t.get("axes") == tensor.get("axes")
            ),
            None,
        )
        if same is not None and tensor.get("halo") and isinstance(tensor.get("shape"), list):
            rank = len(tensor["shape"])
            shape = {"reference_tensor": same, "scale": [1.0] * rank, "offset": [0] * rank}
            tensor = {**tensor, "shape": shape}
        outputs.append(tensor)
    return outputs


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of a tensor, with format 0.5's defaults filled in."""

    key: str  # the runtime's name: b, c, y or x
    id: str  # the rdf's id, which steps and size references name
    size: Any  # int, {min, step}, {tensor_id, axis_id, offset}, or None (batch)
    halo: int
    scale: float


def axes_of(tensor: dict[str, Any], path: Path) -> list[Axis]:
    """The tensor's axes: a batch, a channel and two space axes (y, x) at most, and any number
    of further axes of size 1 (squeezed); a third space axis, time or index of another size is
    a 3-D or sequence model, refused in one line."""
    axes: list[Axis] = []
    for axis in tensor.get("axes") or []:
        kind = axis.get("type")
        ident = str(axis.get("id") or _DEFAULT_ID.get(kind, kind))
        key = _AXIS_KEY.get(kind) or (ident if kind == "space" else None)
        if key not in ("b", "c", "y", "x") and axis.get("size") == 1:
            axes.append(Axis(SINGLETON, ident, 1, 0, 1.0))
            continue
        if key not in ("b", "c", "y", "x"):
            raise UserError(
                f"{path}: axis {ident!r} ({kind}) of {tensor.get('id')!r} makes it a 3-D or "
                "time-series model: the runtime segments 2-D images (batch, channel, y, x)"
            )
        if any(a.key == key for a in axes):
            raise UserError(f"{path}: {tensor.get('id')!r} has two {ident!r} axes: fix its rdf")
        size = len(axis.get("channel_names") or []) if kind == "channel" else axis.get("size")
        halo, scale = int(axis.get("halo") or 0), float(axis.get("scale") or 1.0)
        axes.append(Axis(key, ident, size, halo, scale))
    if not {"y", "x"} <= {a.key for a in axes}:
        raise UserError(f"{path}: {tensor.get('id')!r} needs y and x axes: fix its rdf")
    return axes
