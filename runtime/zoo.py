"""bioimage.io model packages with ONNX weights, run by the runtime's engines and tiling.

A package (a zip, its unpacked folder, or its rdf file) holds `rdf.yaml`, `bioimageio.yaml` or
`NAME.bioimageio.yaml` (format 0.5; 0.4 converted by bioimageio.spec, `runtime.zoo_rdf`), the
weights and test tensors. The runtime reads what it can honour and says, in one line, what it
cannot: an rdf that is no model, weights that are not ONNX, a file whose SHA-256 does not match,
a 3-D model, a step it does not run. The package becomes a `Manifest` with one `Artifact`, so
the `Segmenter` plans, tiles and post-processes it as it does a bundle's model: the package's
pre-processing runs on the whole image first (`runtime.zoo_steps`), its axes (channel first or
last, with or without a batch) are transposed around the engine, a fixed input is tiled as
bioimageio.core's blocks are (each tile drops its output halo, the image border is padded by
it), and `verify=True` checks the package's own test tensors
with its own reproducibility tolerance, as a bundle's golden tiles are checked. Needs PyYAML
(a device dependency), never TensorFlow; bioimageio.spec only for format 0.4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import math
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from runtime.backends import (
    ENGINES,
    Backend,
    check_backend,
    engines_for,
    installed_backends,
    onnx_session,
)
from runtime.backends import load as load_engine
from runtime.bundle import Artifact, Manifest, TensorInfo
from runtime.cache import cache_folder
from runtime.errors import UserError
from runtime.golden import VerificationFailed
from runtime.io import write_bytes_atomic
from runtime.memory import ModelMemory
from runtime.metrics import float_parity, masks_from_probabilities
from runtime.preprocess import Preprocessing, WholeImage, normalize
from runtime.quality import Reference
from runtime.tiling import align_up, default_overlap
from runtime.zoo_rdf import SINGLETON, Axis, Files, axes_of, read_rdf, relative
from runtime.zoo_rdf import is_package as is_package  # what the Segmenter asks first
from runtime.zoo_rdf import onnx_weights as onnx_entry
from runtime.zoo_steps import Dims, ImageSteps, OutputSteps

log = logging.getLogger(__name__)

_RANGE = {"uint8": 255.0, "uint16": 65535.0}  # what `runtime.preprocess` divides raw pixels by
# The zoo's defaults where a package gives no tolerance (bioimageio.spec 0.5).
_DEFAULT_TOLERANCE = {
    "absolute_tolerance": 1e-3,
    "relative_tolerance": 1e-3,
    "mismatched_elements_per_million": 100,
}
_UNMEASURED_TILE = 512
_ZOO_EPS = 1e-6  # the zoo's fixed_zero_mean_unit_variance divides by std + eps
_FOLDABLE = ("ensure_dtype", "scale_linear", "fixed_zero_mean_unit_variance")


def _one(rdf: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    tensors = rdf.get(key) or []
    if len(tensors) != 1:
        raise UserError(
            f"{path} has {len(tensors)} {key}: the runtime runs models with one input and one output"
        )
    return tensors[0]


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor's axes in the model's order (keys b, c, y, x, and SINGLETON for an axis of
    size 1 that the runtime's arrays do not keep), with the rdf's ids and sizes."""

    axes: tuple[Axis, ...]

    @classmethod
    def of(cls, tensor: dict[str, Any], path: Path) -> Layout:
        return cls(tuple(axes_of(tensor, path)))

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.axes)

    def axis(self, key: str) -> Axis | None:
        return next((a for a in self.axes if a.key == key), None)

    @property
    def channels(self) -> int:
        channel = self.axis("c")
        return int(channel.size) if channel else 1

    @property
    def halo(self) -> int:
        return max(a.halo for a in self.axes if a.key in "yx")

    @property
    def batchable(self) -> bool:
        batch = self.axis("b")
        return batch is not None and batch.size in (None, 0)

    def dims(self, path: Path, where: str, batched: bool) -> Dims:
        """Where the steps find each axis id in (H, W, C), or (N, H, W, C) when `batched`."""
        first = 1 if batched else 0
        kept = [a for a in self.axes if a.key not in ("b", SINGLETON)]
        places = {a.id: first + "yxc".index(a.key) for a in kept}
        batch = self.axis("b")
        singletons = frozenset(a.id for a in self.axes if a.key == SINGLETON)
        return Dims(places, batch.id if batch else None, path, where, singletons)

    @property
    def _kept(self) -> str:
        return "".join(k for k in self.order if k != SINGLETON)

    def to_model(self, nhwc: np.ndarray) -> np.ndarray:
        """(N, H, W, C) -> this layout (no batch axis: N is 1; no channel axis: C is 1)."""
        have = "byxc"
        x = nhwc
        for key in ("c", "b"):
            if key not in self.order:
                x = x.take(0, axis=have.index(key))
                have = have.replace(key, "")
        x = x.transpose([have.index(k) for k in self._kept])
        for i, key in enumerate(self.order):
            if key == SINGLETON:
                x = np.expand_dims(x, i)
        return np.ascontiguousarray(x)

    def to_nhwc(self, array: np.ndarray) -> np.ndarray:
        ones = tuple(i for i, key in enumerate(self.order) if key == SINGLETON)
        x, have = np.squeeze(array, axis=ones) if ones else array, self._kept
        for key in ("b", "c"):
            if key not in have:
                x, have = x[None], key + have
        return x.transpose([have.index(k) for k in "byxc"])


class _Unbatched:
    """A model with no batch axis on onnxruntime: one tile a call (engines run batches)."""

    name = "onnx"
    batchable = False
    resizable = False

    def __init__(self, path: Path, num_threads: int | None) -> None:
        self._session = onnx_session(path, num_threads)
        self._input = self._session.get_inputs()[0].name

    def run(self, tile: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: tile.astype(np.float32, copy=False)})[0]


class ZooModel:
    """A runtime engine behind the package's axes: (N, H, W, C) in and out, as the runtime runs."""

    def __init__(
        self,
        engine: Backend | _Unbatched,
        inputs: Layout,
        outputs: Layout,
        post: OutputSteps,
        resizable: bool,
        crop: int = 0,
    ) -> None:
        self.engine, self.inputs, self.outputs, self.post = engine, inputs, outputs, post
        self.name = engine.name
        self.batchable = inputs.batchable
        self.resizable = resizable
        self.crop = crop  # the output halo a tile drops: the tiling sees a 'valid' model

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output without its halo, which the tiling fills from padded context."""
        out = self.forward(batch)
        c = self.crop
        return out[:, c : out.shape[1] - c, c : out.shape[2] - c] if c else out

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The model's whole output, halo included (its test tensors are that)."""
        if "b" in self.inputs.order:
            outs = [self.engine.run(self.inputs.to_model(batch))]
        else:
            outs = [self.engine.run(self.inputs.to_model(tile[None])) for tile in batch]
        out = np.concatenate([self.outputs.to_nhwc(np.asarray(o)) for o in outs])
        return self.post(out)


@dataclasses.dataclass(frozen=True)
class Package:
    """What the runtime needs of a package: the manifest it runs by, the model and its tests."""

    path: Path
    manifest: Manifest
    artifact: Artifact
    model_file: Path
    inputs: Layout
    outputs: Layout
    post: OutputSteps
    overlap: int
    crop: int  # output halo dropped from every tile (fixed tiles only)
    files: Files
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


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The model's sides: its input rule (a fixed side, or `min` + n `step`) and how much
    smaller its output is (0 for 'same' models; a 'valid' model's output is centred)."""

    side: int | None  # a fixed input side, None when it takes min + n step
    min: int
    step: int
    offset: int

    @property
    def resizable(self) -> bool:
        return self.side is None and self.offset == 0

    def valid_at_least(self, target: int) -> int:
        if self.side is not None:
            return self.side
        return self.min + math.ceil(max(0, target - self.min) / self.step) * self.step


def _input_rule(layout: Layout, tensor_id: str, path: Path) -> tuple[int | None, int, int]:
    """(fixed side or None, min, step) of the square input; y and x must agree."""
    rules = []
    for key in "yx":
        size = layout.axis(key).size
        if isinstance(size, dict) and "tensor_id" in size:  # x sized by y, or y by x
            other = next((a for a in layout.axes if a.id == size.get("axis_id")), None)
            if size.get("tensor_id") != tensor_id or other is None or other.key not in "yx":
                raise UserError(f"{path}: input axis {key} refers to {size}: fix its rdf")
            if int(size.get("offset") or 0):
                raise UserError(f"{path}: its input is not square: the runtime tiles square inputs")
            size = other.size
        if isinstance(size, int):
            rules.append((size, size, 1))
        elif isinstance(size, dict) and "step" in size:
            rules.append((None, int(size.get("min") or 1), int(size["step"])))
        else:
            raise UserError(f"{path}: input axis {key} has size {size!r}: fix its rdf")
    if rules[0] != rules[1]:
        raise UserError(
            f"{path}: input y and x take {rules[0]} and {rules[1]} (side, min, step): the runtime "
            "tiles square inputs"
        )
    return rules[0]


def geometry(inputs: Layout, outputs: Layout, tensor_id: str, path: Path) -> Geometry:
    side, low, step = _input_rule(inputs, tensor_id, path)
    offsets = set()
    for key in "yx":
        axis, source = outputs.axis(key), inputs.axis(key)
        size = axis.size
        if isinstance(size, dict) and "tensor_id" in size:
            ref = next((a for a in inputs.axes if a.id == size.get("axis_id")), None)
            if size.get("tensor_id") != tensor_id or ref is None or ref.key not in "yx":
                raise UserError(
                    f"{path}: output axis {axis.id} refers to {size}, not an input y or x axis: "
                    "the runtime runs one input"
                )
            if ref.scale != axis.scale:
                raise UserError(
                    f"{path}: output axis {axis.id} has {ref.scale / axis.scale:g}x the input's "
                    f"resolution (pixel scale {axis.scale:g} against {ref.scale:g}): the runtime "
                    "segments at the input's resolution"
                )
            offsets.add(int(size.get("offset") or 0))
        elif isinstance(size, int) and side is not None and source.scale == axis.scale:
            offsets.add(size - side)
        else:
            raise UserError(
                f"{path}: output axis {axis.id} has size {size!r}, which does not follow the "
                "input: the runtime segments at the input's size"
            )
    offset = offsets.pop()
    if offsets or offset > 0 or offset % 2:
        raise UserError(
            f"{path}: its output is {offset:+d} px against the input: the runtime runs outputs "
            "as large as the input or smaller by the same even count on both axes"
        )
    return Geometry(side, low, step, offset)


def _affine(ops: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(a, b): the pre-processing as a * raw + b, or None when it is not one."""
    a, b = 1.0, 0.0
    for op in ops:
        name, kwargs = op.get("id"), op.get("kwargs") or {}
        if name not in _FOLDABLE or "axis" in kwargs:
            return None
        if name == "ensure_dtype" and not str(kwargs.get("dtype", "float32")).startswith("float"):
            return None
        if name == "scale_linear":
            gain, offset = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            a, b = a * gain, b * gain + offset
        elif name == "fixed_zero_mean_unit_variance":
            std = float(kwargs["std"]) + _ZOO_EPS
            a, b = a / std, (b - float(kwargs["mean"])) / std
    return (a, b) if a > 0 else None


def preprocessing(
    tensor: dict[str, Any], inputs: Layout, own: dict[str, Any] | None, path: Path
) -> Preprocessing | WholeImage:
    """How the runtime pre-processes the package's images.

    A package this toolkit wrote (its `config.unet_edge`) keeps the bundle's `Preprocessing`:
    the zoo's affine steps on raw values are the runtime's (x / range - mean) / std with mean and
    std rescaled by the declared type's range, and the bundle's own figures are used when they
    agree, so its masks are bit for bit the bundle's. Any other package runs its steps as the
    zoo does, on raw values of the whole image (`ImageSteps`).
    """
    ops = tensor.get("preprocessing") or []
    folded = _affine(ops) if own and inputs.channels in (1, 3) else None
    if folded is None:
        dims = inputs.dims(path, "pre-processing", batched=False)
        return ImageSteps.of(tensor, dims, inputs.channels)
    a, b = folded
    scale = _RANGE.get(str((tensor.get("data") or {}).get("type", "float32")), 1.0)
    std = 1.0 / (a * scale)
    derived = Preprocessing(channels=inputs.channels, mean=-b * std, std=std)
    if own.get("preprocessing"):
        theirs = Preprocessing.from_dict(own["preprocessing"])
        if np.allclose(
            [theirs.mean, theirs.std], [derived.mean, derived.std], rtol=1e-5, atol=1e-7
        ):
            return theirs
    return derived


def _unpacked(files: Files, name: str, data: bytes, extra: list[tuple[str, bytes]]) -> Path:
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


@dataclasses.dataclass(frozen=True)
class Sides:
    """The manifest's tile: input and output sides, pooling grid, whether it takes any size,
    and the output halo each tile drops (0 where the whole image runs)."""

    input: int
    output: int
    multiple: int
    resizable: bool
    crop: int


def _sides(shape: Geometry, own: dict[str, Any], test_side: int, halo: int, path: Path) -> Sides:
    """A model that takes any size runs the whole image where this toolkit measured its memory;
    without a memory line it runs fixed tiles: the test tensor's side, or 512 px where that is
    smaller (a small tile repeats its overlap often). A model of fixed input drops its output
    halo from every tile, so the tiling pads the image border by it (symmetric), as
    bioimageio.core's blocks do; one that takes any size may get a device's memory line and run
    whole images, so it keeps its halo and shares it at seams (`_overlap`)."""
    multiple = int(own.get("multiple") or shape.step)
    if shape.resizable and own.get("memory"):
        side = align_up(max(test_side, shape.min), shape.step)
        return Sides(side, side, multiple, True, 0)
    side = shape.valid_at_least(max(test_side, _UNMEASURED_TILE))
    crop = 0 if shape.resizable else halo
    output = side + shape.offset - 2 * crop
    if output <= 0:
        raise UserError(f"{path}: its halo of {halo} px leaves nothing of a {side} px tile")
    return Sides(side, output, multiple, shape.resizable, crop)


def open_package(path: str | Path) -> Package:
    """Reads and checks a package; everything it cannot honour is a one-line UserError."""
    path = Path(path)
    files = Files(path)
    rdf = read_rdf(files)
    _check_outputs_are_probabilities(rdf, path)
    tensor_in, tensor_out = _one(rdf, "inputs", path), _one(rdf, "outputs", path)
    inputs, outputs = Layout.of(tensor_in, path), Layout.of(tensor_out, path)
    own = (rdf.get("config") or {}).get("unet_edge") or {}
    shape = geometry(inputs, outputs, str(tensor_in.get("id", "input")), path)
    post = OutputSteps.of(tensor_out, outputs.dims(path, "post-processing", batched=True))
    prep = preprocessing(tensor_in, inputs, own, path)
    sides = _sides(shape, own, _test_side(files, tensor_in, inputs), outputs.halo, path)
    _note_padding(tensor_in, sides, path)
    # The weights last: a package refused for its tensors says so before asking for ONNX.
    onnx = onnx_entry(rdf, path)
    name, data = files.checked(onnx, "weights")
    extra = (
        [files.checked(onnx["external_data"], "weights data")] if onnx.get("external_data") else []
    )
    channels, classes = inputs.channels, outputs.channels
    artifact = Artifact(
        file=name,
        format="onnx",
        precision=str(own.get("precision", "onnx")),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        input=TensorInfo("float32"),
        output=TensorInfo("float32"),
        shape=(
            -1 if inputs.batchable else 1,
            *([-1, -1] if sides.resizable else [sides.input] * 2),
            channels,
        ),
        memory=ModelMemory(**own["memory"]) if own.get("memory") else None,
    )
    threshold = post.threshold if post.threshold is not None else float(own.get("threshold", 0.5))
    default_names = (
        ["background", "foreground"] if classes == 1 else [f"class{i}" for i in range(classes)]
    )
    manifest = Manifest(
        input_size=sides.input,
        output_size=sides.output,
        size_multiple=sides.multiple,
        channels=channels,
        classes=classes,
        preprocessing=prep,  # type: ignore[arg-type]  # a WholeImage for foreign packages
        activation="sigmoid" if classes == 1 else "softmax",
        threshold=threshold,
        class_names=tuple(own.get("class_names") or default_names),
        artifacts=(artifact,),
        quality=_quality(own, path),
        digest=hashlib.sha256(files.read(files.rdf)).hexdigest(),
    )
    model_file = _unpacked(files, name, data, extra)
    overlap = _overlap(outputs.halo, sides, path)
    return Package(
        path, manifest, artifact, model_file, inputs, outputs, post, overlap, sides.crop, files, rdf
    )


def _quality(own: dict[str, Any], path: Path) -> Reference | None:
    """The training images' quality reference of a package this toolkit wrote, if it has one."""
    if not own.get("quality"):
        return None
    try:
        return Reference.from_dict(own["quality"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{path}: config.unet_edge.quality is malformed ({error}): re-export the package"
        ) from None


def _check_outputs_are_probabilities(rdf: dict[str, Any], path: Path) -> None:
    """A StarDist model (format 0.4 says so in `config.stardist`; 0.5 names its post-processing
    step, which `OutputSteps` refuses) outputs object probabilities and ray distances, which
    only StarDist's polygon suppression turns into objects: no per-pixel classes to threshold."""
    if ((rdf.get("config") or {}).get("stardist")) is not None:
        raise UserError(
            f"{path} is a StarDist model (config.stardist): its outputs are object "
            "probabilities and ray distances for StarDist's polygon suppression, not per-pixel "
            "classes the runtime thresholds"
        )


def _overlap(halo: int, sides: Sides, path: Path) -> int:
    """A fixed tile has dropped its halo already, so its tiles need share nothing (core's
    blocks share only the halo). A model that takes any size keeps its halo: its tiles share
    twice the halo, so each keeps only pixels at least a halo from a seam."""
    if sides.crop:
        return 0
    if halo:
        if 2 * halo >= sides.output:
            raise UserError(
                f"{path}: its halo of {halo} px leaves nothing of a {sides.output} px tile"
            )
        return 2 * halo
    overlap = default_overlap(sides.multiple, sides.output, sides.resizable)
    fixed = not sides.resizable or overlap >= sides.output
    return min(overlap, sides.output // 4) if fixed else overlap


def _note_padding(tensor: dict[str, Any], sides: Sides, path: Path) -> None:
    """bioimageio.core pads the image border by the halo as the input's `pad` says (symmetric
    when it says nothing); the runtime's tiling pads symmetric, so say where that differs."""
    mode = (tensor.get("pad") or {}).get("mode", "symmetric")
    if sides.crop and mode != "symmetric":
        log.warning(
            "runtime: %s asks for %s padding at the image border; the runtime pads symmetric, "
            "so the outer %d px may differ from bioimageio.core's",
            path.name,
            mode,
            sides.crop,
        )


def _test_side(files: Files, tensor: dict[str, Any], layout: Layout) -> int:
    """The y size of the package's test input (its header only), 0 when it has none."""
    entry = tensor.get("test_tensor")
    if not entry:
        return 0
    with contextlib.suppress(UserError, ValueError):
        array = _npy(files.read(relative(entry.get("source"), files.path)))
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
    if "b" not in package.inputs.order:
        if backend != "onnx" and backend in ENGINES:
            raise UserError(
                f"{package.path.name}'s model has no batch axis, which only the onnx engine "
                "runs here: use --backend onnx"
            )
        engine: Backend | _Unbatched = _Unbatched(package.model_file, num_threads)
    else:
        engine = load_engine(backend, package.model_file, num_threads)
    log.info("runtime: %s of %s on %s", package.artifact.file, package.path.name, backend)
    resizable = package.artifact.resizable
    return ZooModel(engine, package.inputs, package.outputs, package.post, resizable, package.crop)


def check_package(package: Package, model: ZooModel) -> str:
    """Runs the model once on the package's test input, pre-processed as the runtime does,
    and compares with its test output by the package's tolerance (the zoo's own rule, and its
    test: one pass, no padding). Raises VerificationFailed when more elements than the
    tolerance allows are off; returns the line that says how it went."""
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
    prep = package.manifest.preprocessing
    if declared in _RANGE and isinstance(prep, Preprocessing):
        images = images.astype(declared)  # a float test tensor of integer pixel values
    expected = package.outputs.to_nhwc(_npy(raw_out)).astype(np.float32)
    probabilities = model.forward(np.stack([normalize(image, prep) for image in images]))
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
    """A package this toolkit wrote runs the bundle's pre-processing, which first scales 8- and
    16-bit images to [0, 1]. For an input declared as integers the two agree (the mean and std
    are rescaled); for one declared float they agree on float images only: say so."""
    tensor = _one(package.rdf, "inputs", package.path)
    declared = str((tensor.get("data") or {}).get("type", "float32"))
    prep = package.manifest.preprocessing
    if isinstance(prep, Preprocessing) and declared not in _RANGE and tensor.get("preprocessing"):
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
