"""runtime.zoo: a bioimage.io package with ONNX weights runs like the bundle it came from, its
test tensors verify it, and what the runtime cannot honour is one line, exit 2.

The packages are the ones `optimize.bioimageio` writes from the tiny bundle; nothing is
downloaded.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from optimize.bioimageio import Options, write_package
from runtime import Segmenter, UserError, VerificationFailed
from runtime.bundle import read_manifest
from runtime.golden import golden_of
from runtime.predict import main, parse_args
from runtime.verify import verify_bundle
from runtime.zoo import is_package, open_package


@pytest.fixture(scope="module")
def package(tiny_quantized_bundle, tmp_path_factory) -> Path:
    return write_package(
        tiny_quantized_bundle, tmp_path_factory.mktemp("zoo") / "unet.zip", Options()
    ).path


@pytest.fixture(scope="module")
def image(tiny_quantized_bundle) -> np.ndarray:
    """A 165 x 149 image from the golden tiles: no multiple of the pooling grid."""
    golden = golden_of(tiny_quantized_bundle, read_manifest(tiny_quantized_bundle))
    tiles = golden.images[..., 0]
    big = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    return np.pad(big, ((0, 37), (0, 21)), mode="reflect")


def rewrite(
    source: Path, target: Path, rdf: Callable[[dict], None] | None = None, **files: bytes
) -> Path:
    """A copy of a package with rdf.yaml edited and some files replaced (hashes kept)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            data = files.get(name.replace(".", "_"), old.read(name))
            if name == "rdf.yaml" and rdf is not None:
                content = yaml.safe_load(data)
                rdf(content)
                data = yaml.safe_dump(content, sort_keys=False).encode()
            new.writestr(name, data)
    return target


def test_a_package_segments_like_its_bundle(package, tiny_quantized_bundle, image):
    assert is_package(package) and not is_package(tiny_quantized_bundle)
    zoo = Segmenter.from_bundle(package, verify=True)
    own = Segmenter.from_bundle(tiny_quantized_bundle, precision="int8", backend="onnx")
    assert zoo.precision == "int8" and zoo.manifest.preprocessing == own.manifest.preprocessing
    whole = zoo.predict(image)
    assert whole.tiles == 1
    np.testing.assert_array_equal(whole.mask, own.predict(image).mask)
    np.testing.assert_array_equal(whole.probabilities, own.predict(image).probabilities)


def test_tiles_as_the_bundle_tiles(package, tiny_quantized_bundle, image):
    """A budget too small for one pass: the same tiles, the same stitched mask."""
    # Halfway between what the whole image and the smallest tile need by the memory line this
    # machine measured: a fixed 31 MB fitted one machine's line and was too small on another.
    probe = Segmenter.from_bundle(package)
    smallest = (probe.overlap + 2 * probe.manifest.size_multiple) ** 2
    budget = (probe.memory.mb(image.shape[0] * image.shape[1]) + probe.memory.mb(smallest)) / 2
    zoo = Segmenter.from_bundle(package, max_memory_mb=budget)
    own = Segmenter.from_bundle(
        tiny_quantized_bundle, precision="int8", backend="onnx", max_memory_mb=budget
    )
    assert zoo.overlap == own.overlap
    tiled = zoo.predict(image)
    assert tiled.tiles > 1
    np.testing.assert_array_equal(tiled.mask, own.predict(image).mask)


def test_an_unpacked_folder_is_a_package(package, tmp_path, image):
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path / "unet")
    assert is_package(tmp_path / "unet")
    from_folder = Segmenter.from_bundle(tmp_path / "unet", verify=True).predict(image)
    np.testing.assert_array_equal(
        from_folder.mask, Segmenter.from_bundle(package).predict(image).mask
    )


def test_predict_cli_verifies_and_writes_the_bundles_mask(
    package, tiny_quantized_bundle, image, tmp_path
):
    Image.fromarray(image).save(tmp_path / "slice.png")
    zoo_args = [str(package), str(tmp_path / "slice.png"), "--out", str(tmp_path / "zoo")]
    assert main(parse_args([*zoo_args, "--verify"])) == 0
    own_args = [
        str(tiny_quantized_bundle),
        str(tmp_path / "slice.png"),
        "--out",
        str(tmp_path / "own"),
    ]
    assert main(parse_args([*own_args, "--precision", "int8", "--backend", "onnx"])) == 0
    zoo_mask = np.asarray(Image.open(tmp_path / "zoo" / "slice_mask.png"))
    own_mask = np.asarray(Image.open(tmp_path / "own" / "slice_mask.png"))
    np.testing.assert_array_equal(zoo_mask, own_mask)


def test_a_binarized_fp32_package_verifies(tiny_quantized_bundle, tmp_path, image):
    path = write_package(
        tiny_quantized_bundle, tmp_path / "b.zip", Options(precision="fp32", binarize=True)
    ).path
    seg = Segmenter.from_bundle(path, verify=True)
    own = Segmenter.from_bundle(tiny_quantized_bundle, precision="fp32", backend="onnx")
    assert seg.precision == "fp32"
    np.testing.assert_array_equal(seg.predict(image).mask, own.predict(image).mask)


def test_test_tensors_it_does_not_reproduce_fail_verification(package, tmp_path):
    """A test output with a block of pixels changed, its hash updated: exit 1 with --verify."""
    with zipfile.ZipFile(package) as archive:
        expected = np.load(io.BytesIO(archive.read("test_output.npy")))
    expected[0, :32, :32] = 1 - expected[0, :32, :32]
    buffer = io.BytesIO()
    np.save(buffer, expected)
    data = buffer.getvalue()

    def new_hash(rdf: dict) -> None:
        rdf["outputs"][0]["test_tensor"]["sha256"] = hashlib.sha256(data).hexdigest()

    changed = rewrite(package, tmp_path / "changed.zip", new_hash, test_output_npy=data)
    with pytest.raises(VerificationFailed, match="elements per million"):
        Segmenter.from_bundle(changed, verify=True)
    Segmenter.from_bundle(changed)  # without verify it loads


def _set(path: list, value) -> Callable[[dict], None]:
    def edit(rdf: dict) -> None:
        node = rdf
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _weights_as(kind: str) -> Callable[[dict], None]:
    def edit(rdf: dict) -> None:
        rdf["weights"] = {kind: rdf["weights"]["onnx"]}

    return edit


BAD = {
    "not-a-model": (_set(["type"], "dataset"), {}, "not a model"),
    "torchscript": (_weights_as("torchscript"), {}, "not ONNX"),
    "hash": (None, {"model_int8_onnx": b"not the model"}, "SHA-256"),
    "preprocessing": (
        _set(["inputs", 0, "preprocessing", 1], {"id": "stardist_normalize"}),
        {},
        "pre-processing step 'stardist_normalize'",
    ),
    "postprocessing": (
        _set(["outputs", 0, "postprocessing"], [{"id": "stardist_postprocessing"}]),
        {},
        "post-processing step",
    ),
    "old-format": (_set(["format_version"], "0.3.2"), {}, "formats 0.5 and 0.4"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_it_cannot_honour_is_one_line(package, tmp_path, capsys, case):
    edit, files, words = BAD[case]
    bad = rewrite(package, tmp_path / "bad.zip", edit, **files)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    code = main(parse_args([str(bad), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_not_a_zip_and_another_precision_are_one_line(package, tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(UserError, match="not a readable zip"):
        Segmenter.from_bundle(tmp_path / "broken.zip")
    with pytest.raises(UserError, match="holds one model"):
        Segmenter.from_bundle(package, precision="fp32")
    with pytest.raises(UserError, match="which litert does not run: use --backend auto or onnx"):
        Segmenter.from_bundle(package, backend="litert")
    # bf16 is for float weights, on any CPU: the int8 package is refused before loading.
    with pytest.raises(UserError, match="holds int8 ONNX weights, which openvino-bf16 does not"):
        Segmenter.from_bundle(package, backend="openvino-bf16")
    with pytest.raises(UserError, match=r"is a bioimage\.io package, not a bundle: .*--verify"):
        verify_bundle(package)  # runtime.verify checks bundles; predict --verify packages


def test_the_package_reads_as_a_manifest(package, tiny_quantized_bundle):
    zoo, own = open_package(package).manifest, read_manifest(tiny_quantized_bundle)
    for field in ("size_multiple", "channels", "classes", "threshold", "class_names", "activation"):
        assert getattr(zoo, field) == getattr(own, field), field


def test_running_a_package_imports_neither_tensorflow_nor_bioimageio(package):
    code = f"""
import sys
import numpy as np
from runtime import Segmenter
Segmenter.from_bundle({str(package)!r}, verify=True).predict(np.zeros((64, 64), np.uint8))
bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "bioimageio", "tf_keras", "keras", "torch")]
assert not bad, bad
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _channels_first_logits(onnx_bytes: bytes) -> bytes:
    """The model as a PyTorch-style zoo model: (N, C, H, W) in, logits (N, K, H, W) out."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    old_in, old_out = graph.input[0], graph.output[0]
    new_in = helper.make_tensor_value_info("raw", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    new_out = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    one = helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
    graph.initializer.append(one)
    nodes = [
        helper.make_node("Transpose", ["raw"], [old_in.name], perm=[0, 2, 3, 1]),
        *graph.node,
        helper.make_node("Sub", ["one", old_out.name], ["q"]),
        helper.make_node("Div", [old_out.name, "q"], ["odds"]),
        helper.make_node("Log", ["odds"], ["logit"]),
        helper.make_node("Transpose", ["logit"], ["logits"], perm=[0, 3, 1, 2]),
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(new_in)
    del graph.output[:]
    graph.output.append(new_out)
    return model.SerializeToString()


def test_a_channels_first_package_with_its_own_steps(tiny_quantized_bundle, tmp_path, image):
    """Another zoo layout: axes b, c, y, x, `scale_linear` then a unit-range mean and std,
    logits out and a `sigmoid` step: the runtime folds, transposes and applies them."""
    source = write_package(tiny_quantized_bundle, tmp_path / "a.zip", Options(precision="fp32"))
    manifest = read_manifest(tiny_quantized_bundle)
    with zipfile.ZipFile(source.path) as archive:
        onnx_bytes = _channels_first_logits(archive.read("model_fp32.onnx"))
        test_in = np.load(io.BytesIO(archive.read("test_input.npy"))).transpose(0, 3, 1, 2)
        test_out = np.load(io.BytesIO(archive.read("test_output.npy"))).transpose(0, 3, 1, 2)
    arrays = {"model_fp32_onnx": onnx_bytes}
    for key, array in (("test_input_npy", test_in), ("test_output_npy", test_out)):
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array))
        arrays[key] = buffer.getvalue()

    def channels_first(rdf: dict) -> None:
        prep = manifest.preprocessing
        for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
            tensor["axes"].insert(1, tensor["axes"].pop())
            tensor.pop("config", None)
        rdf["inputs"][0]["preprocessing"] = [
            {"id": "scale_linear", "kwargs": {"gain": 1 / 255}},
            {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": prep.mean, "std": prep.std}},
        ]
        rdf["outputs"][0]["postprocessing"] = [{"id": "sigmoid"}]
        rdf["outputs"][0]["data"] = {"type": "float32"}
        del rdf["config"]["unet_edge"]  # a package this toolkit did not write
        for key, entry in (
            ("model_fp32_onnx", rdf["weights"]["onnx"]),
            ("test_input_npy", rdf["inputs"][0]["test_tensor"]),
            ("test_output_npy", rdf["outputs"][0]["test_tensor"]),
        ):
            entry["sha256"] = hashlib.sha256(arrays[key]).hexdigest()

    foreign = rewrite(source.path, tmp_path / "foreign.zip", channels_first, **arrays)
    seg = Segmenter.from_bundle(foreign, verify=True)
    own = Segmenter.from_bundle(tiny_quantized_bundle, precision="fp32", backend="onnx")
    x = seg.prepare(image).input
    # The zoo divides by std + 1e-6: 5e-6 of a unit-range std of 0.18.
    np.testing.assert_allclose(x, own.prepare(image).input, rtol=1e-5, atol=1e-6)
    x = np.pad(x, ((0, 3), (0, 3), (0, 0)), mode="reflect")[None]  # on the pooling grid
    np.testing.assert_allclose(seg.backend.run(x), own.backend.run(x), atol=1e-5)
    # No memory line: one 512 px tile, mirrored further out than the bundle model's whole
    # image (padded to the pooling grid only), so pixels near the border may differ.
    # A package without this toolkit's config says no threshold: 0.5, not the bundle's.
    theirs, ours = seg.predict(image), own.predict(image, threshold=seg.manifest.threshold)
    assert theirs.tiles == ours.tiles == 1 and seg.manifest.input_size == 512
    assert np.mean(theirs.mask == ours.mask) > 0.99
