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
    zoo = Segmenter.from_bundle(package, max_memory_mb=31)
    own = Segmenter.from_bundle(
        tiny_quantized_bundle, precision="int8", backend="onnx", max_memory_mb=31
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
        _set(["inputs", 0, "preprocessing", 1], {"id": "zero_mean_unit_variance"}),
        {},
        "pre-processing step 'zero_mean_unit_variance'",
    ),
    "postprocessing": (
        _set(["outputs", 0, "postprocessing"], [{"id": "stardist_postprocessing"}]),
        {},
        "post-processing step",
    ),
    "old-format": (_set(["format_version"], "0.4.10"), {}, "format 0.5"),
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
    with pytest.raises(UserError, match="does not run"):
        Segmenter.from_bundle(package, backend="litert")


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
