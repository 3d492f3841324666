"""bioimage.io model packages with ONNX weights, run by the runtime's engines and tiling.

A package (a zip, or its unpacked folder) holds `rdf.yaml` (format 0.5), the weights and test
tensors. The runtime reads what it can honour and says, in one line, what it cannot: an rdf that
is no model, weights that are not ONNX, a file whose SHA-256 does not match, a pre- or
post-processing step it does not run. The package becomes a `Manifest` with one `Artifact`, so
the `Segmenter` plans, tiles and post-processes it as it does a bundle's model, and
`verify=True` checks the package's own test tensors with the package's own reproducibility
tolerance, as a bundle's golden tiles are checked. Needs PyYAML (a device dependency), never
bioimageio or TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from runtime.backends import ENGINES, Backend, check_backend, engines_for, installed_backends
from runtime.backends import load as load_engine
from runtime.bundle import MANIFEST, Artifact, Manifest, TensorInfo
from runtime.cache import cache_folder
from runtime.errors import UserError
from runtime.golden import VerificationFailed
from runtime.io import write_bytes_atomic
from runtime.memory import ModelMemory
from runtime.metrics import float_parity, masks_from_probabilities
from runtime.preprocess import Preprocessing, normalize
from runtime.tiling import align_up, default_overlap

log = logging.getLogger(__name__)

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_RANGE = {"uint8": 255.0, "uint16": 65535.0}  # what `runtime.preprocess` divides raw pixels by
# The zoo's defaults where a package gives no tolerance (bioimageio.spec 0.5).
_DEFAULT_TOLERANCE = {
    "absolute_tolerance": 1e-3,
    "relative_tolerance": 1e-3,
    "mismatched_elements_per_million": 100,
}
_UNMEASURED_TILE = 512
_ZOO_EPS = 1e-6  # the zoo's fixed_zero_mean_unit_variance divides by std + eps
_PRE_OPS = ("ensure_dtype", "scale_linear", "fixed_zero_mean_unit_variance")
_POST_OPS = ("ensure_dtype", "binarize", "sigmoid", "softmax")


def is_package(path: str | Path) -> bool:
    """A .zip (or any zip file), or a folder with rdf.yaml that is not a bundle."""
    p = Path(path)
    if p.suffix.lower() == ".zip" or (p.is_file() and zipfile.is_zipfile(p)):
        return True
    return p.is_dir() and not (p / MANIFEST).exists() and any((p / n).is_file() for n in RDF_NAMES)


class _Files:
    """The package's files by their relative name, from a zip or a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            return
        if not path.is_file():
            raise UserError(f"package {path} does not exist: give a bioimage.io .zip or folder")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise UserError(
                f"{path} is not a readable zip ({error}): re-download the package"
            ) from None

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.namelist()
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.exists(name):
            raise UserError(
                f"{self.path} lacks {name}, which rdf.yaml names: re-download the package"
            )
        try:
            return self._zip.read(name) if self._zip else (self.path / name).read_bytes()
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise UserError(
                f"cannot read {name} of {self.path} ({error}): re-download it"
            ) from None

    def local(self, name: str) -> Path | None:
        """The file itself when the package is a folder (nothing to unpack)."""
        return None if self._zip is not None else self.path / name

    def checked(self, entry: dict[str, Any], what: str) -> tuple[str, bytes]:
        """A file entry's name and bytes after checking its SHA-256 (when rdf.yaml gives one)."""
        name = _relative(entry.get("source"), self.path)
        data = self.read(name)
        expected = entry.get("sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise UserError(
                f"{what} {name} of {self.path} does not match its SHA-256 in rdf.yaml (changed or "
                "truncated): re-download the package"
            )
        return name, data


def _relative(source: Any, package: Path) -> str:
    if not isinstance(source, str) or "://" in source or source.startswith("/"):
        raise UserError(
            f"{package} names {source!r} as a file: the runtime reads only files inside the "
            "package (no downloads)"
        )
    return str(PurePosixPath(source))


def _rdf(files: _Files) -> dict[str, Any]:
    import yaml

    name = next((n for n in RDF_NAMES if files.exists(n)), None)
    if name is None:
        raise UserError(f"{files.path} has no rdf.yaml: it is not a bioimage.io package")
    try:
        rdf = yaml.safe_load(files.read(name))
    except yaml.YAMLError as error:
        raise UserError(
            f"{files.path}'s {name} is not valid YAML ({error}): re-download it"
        ) from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
        raise UserError(
            f"{files.path}'s {name} describes a {kind!r}, not a model: give a model package"
        )
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5."):
        raise UserError(
            f"{files.path} is in rdf format {version or '?'}: the runtime reads format 0.5 "
            "(`bioimageio update-format` converts older packages)"
        )
    return rdf


def _one(rdf: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    tensors = rdf.get(key) or []
    if len(tensors) != 1:
        raise UserError(
            f"{path} has {len(tensors)} {key}: the runtime runs models with one input and one output"
        )
    return tensors[0]


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor's axes: their order in the model (`order`, of b, y, x, c) and sizes."""

    order: tuple[str, ...]
    sizes: dict[str, Any]
    halo: int

    @classmethod
    def of(cls, tensor: dict[str, Any], path: Path) -> Layout:
        order, sizes, halo = [], {}, 0
        for axis in tensor.get("axes", []):
            kind = axis.get("type")
            key = {"batch": "b", "channel": "c"}.get(kind) or (
                axis.get("id") if kind == "space" else None
            )
            if key not in ("b", "c", "y", "x"):
                raise UserError(
                    f"{path}: axis {axis.get('id', kind)!r} of {tensor.get('id')!r} is not one of "
                    "batch, y, x, channel: the runtime segments 2-D images"
                )
            order.append(key)
            sizes[key] = len(axis["channel_names"]) if kind == "channel" else axis.get("size")
            halo = max(halo, int(axis.get("halo", 0) or 0))
        if order[:1] != ["b"] or not {"y", "x"} <= set(order):
            raise UserError(
                f"{path}: {tensor.get('id')!r} needs a batch axis first and y and x axes"
            )
        return cls(tuple(order), sizes, halo)

    def to_model(self, nhwc: np.ndarray) -> np.ndarray:
        """(N, H, W, C) -> this layout (the channel dropped when the model has none)."""
        x = nhwc if "c" in self.order else nhwc[..., 0]
        have = "byxc" if "c" in self.order else "byx"
        return np.ascontiguousarray(x.transpose([have.index(k) for k in self.order]))

    def to_nhwc(self, array: np.ndarray) -> np.ndarray:
        x = array.transpose(
            [self.order.index(k) for k in "byx" + ("c" if "c" in self.order else "")]
        )
        return x if "c" in self.order else x[..., None]


def _affine(ops: list[dict[str, Any]], path: Path) -> tuple[float, float]:
    """(a, b): the pre-processing as a * raw + b, or a one-line refusal of a step it is not."""
    a, b = 1.0, 0.0
    for op in ops:
        name, kwargs = op.get("id"), op.get("kwargs") or {}
        if name not in _PRE_OPS or "axis" in kwargs or "axes" in kwargs:
            raise UserError(
                f"{path}: pre-processing step {name!r}"
                + (" along an axis" if name in _PRE_OPS else "")
                + f" is not one the runtime runs ({', '.join(_PRE_OPS)}, scalar): it cannot run this package"
            )
        if name == "ensure_dtype" and not str(kwargs.get("dtype", "float32")).startswith("float"):
            raise UserError(
                f"{path}: pre-processing casts to {kwargs['dtype']}, which the runtime does not run"
            )
        if name == "scale_linear":
            gain, offset = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            a, b = a * gain, b * gain + offset
        elif name == "fixed_zero_mean_unit_variance":
            std = float(kwargs["std"]) + _ZOO_EPS
            a, b = a / std, (b - float(kwargs["mean"])) / std
    if a <= 0:
        raise UserError(
            f"{path}: its pre-processing flips the sign of the pixels, which the runtime does not run"
        )
    return a, b


def preprocessing(
    tensor: dict[str, Any], channels: int, own: dict[str, Any] | None, path: Path
) -> Preprocessing:
    """The runtime's `Preprocessing` that computes the package's pre-processing.

    The runtime divides raw pixels by their dtype's range before (x - mean) / std; the zoo's
    steps work on raw values of the input's declared type, so mean and std are rescaled by that
    range. A package this toolkit wrote also carries the bundle's own figures: used when they
    agree, so its masks are bit for bit the bundle's.
    """
    if channels not in (1, 3):
        raise UserError(f"{path}: the model takes {channels} channels; the runtime runs 1 or 3")
    a, b = _affine(tensor.get("preprocessing") or [], path)
    scale = _RANGE.get(str((tensor.get("data") or {}).get("type", "float32")), 1.0)
    std = 1.0 / (a * scale)
    derived = Preprocessing(channels=channels, mean=-b * std, std=std)
    if own:
        theirs = Preprocessing.from_dict(own)
        if np.allclose(
            [theirs.mean, theirs.std], [derived.mean, derived.std], rtol=1e-5, atol=1e-7
        ):
            return theirs
    return derived


class _Post:
    """The package's post-processing that the runtime runs: sigmoid or softmax on the output."""

    def __init__(self, ops: list[dict[str, Any]], path: Path) -> None:
        self.activation: str | None = None
        self.threshold: float | None = None
        for op in ops:
            name, kwargs = op.get("id"), op.get("kwargs") or {}
            if name not in _POST_OPS or (name == "binarize" and "axis" in kwargs):
                raise UserError(
                    f"{path}: post-processing step {name!r} is not one the runtime runs "
                    f"({', '.join(_POST_OPS)}): it cannot run this package"
                )
            if name in ("sigmoid", "softmax"):
                self.activation = name
            elif name == "binarize":
                self.threshold = float(kwargs["threshold"])

    def __call__(self, nhwc: np.ndarray) -> np.ndarray:
        if self.activation == "sigmoid":  # in the form that cannot overflow
            e = np.exp(-np.abs(nhwc))
            return np.where(nhwc >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)
        if self.activation == "softmax":
            e = np.exp(nhwc - nhwc.max(axis=-1, keepdims=True))
            return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        return nhwc


class ZooModel:
    """A runtime engine behind the package's axes: (N, H, W, C) in and out, as the runtime runs."""

    def __init__(self, engine: Backend, inputs: Layout, outputs: Layout, post: _Post) -> None:
        self.engine, self.inputs, self.outputs, self.post = engine, inputs, outputs, post
        self.name = engine.name
        self.batchable = inputs.sizes.get("b") in (None, 0)
        self.resizable = isinstance(inputs.sizes.get("y"), dict)

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.engine.run(self.inputs.to_model(batch))
        return self.post(self.outputs.to_nhwc(out).astype(np.float32, copy=False))


@dataclasses.dataclass(frozen=True)
class Package:
    """What the runtime needs of a package: the manifest it runs by, the model and its tests."""

    path: Path
    manifest: Manifest
    artifact: Artifact
    model_file: Path
    inputs: Layout
    outputs: Layout
    post: _Post
    overlap: int
    files: _Files
    rdf: dict[str, Any]

    def tolerance(self) -> dict[str, float]:
        """The rdf's reproducibility tolerance for ONNX and this output, else the zoo's default."""
        entries = ((self.rdf.get("config") or {}).get("bioimageio") or {}).get(
            "reproducibility_tolerance"
        ) or []
        output = _one(self.rdf, "outputs", self.path).get("id", "output")
        for entry in entries:
            formats, outputs = entry.get("weights_formats") or [], entry.get("output_ids") or []
            if (not formats or "onnx" in formats) and (not outputs or output in outputs):
                return {**_DEFAULT_TOLERANCE, **entry}
        return dict(_DEFAULT_TOLERANCE)


def _size(value: Any, fallback: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "min" in value:
        return int(value["min"])
    return fallback


def _unpacked(files: _Files, name: str, data: bytes, extra: list[tuple[str, bytes]]) -> Path:
    """The ONNX file on disk: the folder's own, else unpacked once into the user's cache folder
    (keyed by its SHA-256, so a device unpacks a package once); a temporary folder when the
    cache cannot be written."""
    local = files.local(name)
    if local is not None:
        return local
    folder = cache_folder() / "zoo" / hashlib.sha256(data).hexdigest()[:24]
    try:
        for file, content in [(name, data), *extra]:
            target = folder / PurePosixPath(file).name
            if not target.is_file() or target.stat().st_size != len(content):
                write_bytes_atomic(target, content)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="unet-edge-zoo-"))
        for file, content in [(name, data), *extra]:
            (folder / PurePosixPath(file).name).write_bytes(content)
    return folder / PurePosixPath(name).name


def open_package(path: str | Path) -> Package:
    """Reads and checks a package; everything it cannot honour is a one-line UserError."""
    path = Path(path)
    files = _Files(path)
    rdf = _rdf(files)
    weights = rdf.get("weights") or {}
    if not isinstance(weights, dict) or "onnx" not in weights:
        have = ", ".join(weights) if isinstance(weights, dict) and weights else "none"
        raise UserError(
            f"{path}'s weights are {have}, not ONNX: the runtime runs ONNX weights "
            "(bioimageio.core's weight converters make them)"
        )
    onnx = weights["onnx"]
    name, data = files.checked(onnx, "weights")
    extra = (
        [files.checked(onnx["external_data"], "weights data")] if onnx.get("external_data") else []
    )
    tensor_in, tensor_out = _one(rdf, "inputs", path), _one(rdf, "outputs", path)
    inputs, outputs = Layout.of(tensor_in, path), Layout.of(tensor_out, path)
    own = (rdf.get("config") or {}).get("unet_edge") or {}
    channels = int(inputs.sizes.get("c") or 1)
    classes = int(outputs.sizes.get("c") or 1)
    post = _Post(tensor_out.get("postprocessing") or [], path)
    prep = preprocessing(tensor_in, channels, own.get("preprocessing"), path)
    test_side = _test_side(files, tensor_in, inputs)
    size_in = _size(inputs.sizes["y"], test_side)
    size_out = (
        size_in if isinstance(outputs.sizes["y"], dict) else _size(outputs.sizes["y"], size_in)
    )
    step = inputs.sizes["y"].get("step", 1) if isinstance(inputs.sizes["y"], dict) else 1
    multiple = int(own.get("multiple") or max(1, int(step)))
    resizable = isinstance(inputs.sizes["y"], dict)
    memory = ModelMemory(**own["memory"]) if own.get("memory") else None
    if resizable:
        # Without a measured memory line the runtime runs fixed tiles of this side: the test
        # tensor's, or 512 px where that is smaller (a small tile repeats its overlap often).
        floor = _UNMEASURED_TILE if memory is None else 0
        size_in = size_out = align_up(max(test_side, size_in, floor), int(step))
    shape = (
        -1 if inputs.sizes.get("b") in (None, 0) else 1,
        *([-1, -1] if resizable else [size_in, size_in]),
        channels,
    )
    artifact = Artifact(
        file=name,
        format="onnx",
        precision=str(own.get("precision", "onnx")),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        input=TensorInfo("float32"),
        output=TensorInfo("float32"),
        shape=shape,
        memory=memory,
    )
    threshold = post.threshold if post.threshold is not None else float(own.get("threshold", 0.5))
    default_names = (
        ["background", "foreground"] if classes == 1 else [f"class{i}" for i in range(classes)]
    )
    class_names = tuple(own.get("class_names") or default_names)
    manifest = Manifest(
        input_size=size_in,
        output_size=size_out,
        size_multiple=multiple,
        channels=channels,
        classes=classes,
        preprocessing=prep,
        activation="sigmoid" if classes == 1 else "softmax",
        threshold=threshold,
        class_names=class_names,
        artifacts=(artifact,),
        digest=hashlib.sha256(
            files.read(next(n for n in RDF_NAMES if files.exists(n)))
        ).hexdigest(),
    )
    halo = outputs.halo
    overlap = 2 * halo if halo else default_overlap(multiple, size_out, resizable)
    if not resizable or overlap >= size_out:
        overlap = min(overlap, size_out // 4)
    model_file = _unpacked(files, name, data, extra)
    return Package(path, manifest, artifact, model_file, inputs, outputs, post, overlap, files, rdf)


def _test_side(files: _Files, tensor: dict[str, Any], layout: Layout) -> int:
    """The y size of the package's test input (its header only), 0 when it has none."""
    entry = tensor.get("test_tensor")
    if not entry:
        return 0
    with contextlib.suppress(UserError, ValueError):
        array = _npy(files.read(_relative(entry.get("source"), files.path)))
        return int(array.shape[layout.order.index("y")])
    return 0


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def engine_for(package: Package, backend: str, num_threads: int | None) -> ZooModel:
    """The package's model on `backend` (auto: the first installed engine that runs its ONNX
    weights at their precision)."""
    check_backend(backend)
    precision = package.artifact.precision
    if backend == "auto":
        backend = next(iter(engines_for("onnx", installed_backends(), precision)), "onnx")
    elif backend not in (usable := engines_for("onnx", list(ENGINES), precision)):
        raise UserError(
            f"{package.path.name} holds {precision} ONNX weights, which {backend} does not run: "
            f"use --backend {' or '.join(['auto', *usable])}"
        )
    engine = load_engine(backend, package.model_file, num_threads)
    log.info("runtime: %s of %s on %s", package.artifact.file, package.path.name, backend)
    return ZooModel(engine, package.inputs, package.outputs, package.post)


def check_package(package: Package, model: ZooModel) -> str:
    """Runs the model on the package's test input, as the runtime pre-processes, and compares
    with its test output by the package's tolerance (the zoo's own rule). Raises
    VerificationFailed when more elements than the tolerance allows are off; returns the line
    that says how it went."""
    rdf_in, rdf_out = (
        _one(package.rdf, "inputs", package.path),
        _one(package.rdf, "outputs", package.path),
    )
    if not rdf_in.get("test_tensor") or not rdf_out.get("test_tensor"):
        raise UserError(f"{package.path} has no test tensors to verify with: verify needs them")
    _, raw_in = package.files.checked(rdf_in["test_tensor"], "test input")
    _, raw_out = package.files.checked(rdf_out["test_tensor"], "test output")
    images = package.inputs.to_nhwc(_npy(raw_in))
    declared = str((rdf_in.get("data") or {}).get("type", ""))
    if declared in _RANGE:
        images = images.astype(declared)  # a float test tensor of integer pixel values
    expected = package.outputs.to_nhwc(_npy(raw_out)).astype(np.float32)
    inputs = np.stack([normalize(image, package.manifest.preprocessing) for image in images])
    probabilities = model.run(inputs)
    m = package.manifest
    actual = probabilities
    if package.post.threshold is not None:
        actual = (probabilities > package.post.threshold).astype(np.float32)
    tol = package.tolerance()
    bound = float(tol["absolute_tolerance"]) + float(tol["relative_tolerance"]) * np.abs(expected)
    wrong = int((np.abs(actual - expected) > bound).sum())
    ppm = wrong * 1e6 / expected.size
    expected_masks = (
        expected[..., 0].astype(np.uint8)
        if package.post.threshold is not None
        else masks_from_probabilities(expected, m.threshold)
    )
    scores = float_parity(
        masks_from_probabilities(probabilities, m.threshold), expected_masks, m.classes
    )
    line = (
        f"{package.artifact.file} on {model.name}: {ppm:.0f} elements per million of the test "
        f"output beyond the tolerance (absolute {float(tol['absolute_tolerance']):g}, relative "
        f"{float(tol['relative_tolerance']):g}), {float(tol['mismatched_elements_per_million']):g} "
        f"allowed; masks agree {scores['agreement_with_float']:.2%}, Dice {scores['dice_vs_float']:.4f}"
    )
    if ppm > float(tol["mismatched_elements_per_million"]):
        raise VerificationFailed(f"fails the package's test tensors on this device: {line}")
    return line


def _note_float_input(package: Package) -> None:
    """The zoo normalizes raw values; the runtime first scales 8- and 16-bit images to [0, 1]
    (`runtime.preprocess`). For an input declared as integers the two agree (the mean and std
    are rescaled); for one declared float they agree on float images only: say so."""
    tensor = _one(package.rdf, "inputs", package.path)
    declared = str((tensor.get("data") or {}).get("type", "float32"))
    if declared not in _RANGE and (tensor.get("preprocessing") or []):
        log.warning(
            "runtime: %s declares %s input: give it float images of the values it expects; "
            "8- and 16-bit images are scaled to [0, 1] first, as the runtime does for bundles",
            package.path.name,
            declared,
        )


def load(
    path: str | Path,
    precision: str,
    backend: str,
    num_threads: int | None,
    overlap: int | None,
    verify: bool,
) -> tuple[Manifest, Artifact, ZooModel, int]:
    """What `Segmenter.from_bundle` builds a Segmenter of, for a package."""
    package = open_package(path)
    have = package.artifact.precision
    if precision not in ("auto", have):
        raise UserError(
            f"a bioimage.io package holds one model ({have} ONNX): use precision auto or {have}"
        )
    model = engine_for(package, backend, num_threads)
    _note_float_input(package)
    if verify:
        log.info("runtime: verified %s", check_package(package, model))
    tile_overlap = package.overlap if overlap is None else overlap
    size = package.manifest.output_size
    if tile_overlap < 0 or (not model.resizable and tile_overlap >= size):
        raise UserError(f"overlap must be in [0, {size}), got {tile_overlap}")
    return package.manifest, package.artifact, model, tile_overlap
