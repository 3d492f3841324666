"""optimize.bioimageio: the package of a tiny bundle passes the zoo's own tester, and bad input
is one line, exit 2, nothing written.

The judge is `bioimageio.core.test_model` (the `zoo` extra), not a check of our own. It runs
offline: its cache is a test folder and any download would go to a closed port (a proxy on
127.0.0.1:9) and fail at once instead of reaching the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from optimize.bioimageio import (
    MAX_OPSET,
    Options,
    budget_flips_per_million,
    main,
    parse_args,
    write_package,
)
from runtime.bundle import read_manifest
from runtime.golden import golden_of
from tests.zoo_package import zoo_test


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


@pytest.fixture(scope="module")
def packages(tiny_quantized_bundle, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("zoo")
    made = {}
    for label, options in {
        "default": Options(),
        "fp32": Options(precision="fp32"),
        "int8-binarized": Options(precision="int8", binarize=True),
    }.items():
        made[label] = write_package(tiny_quantized_bundle, out / f"{label}.zip", options).path
    return made


@pytest.mark.parametrize("label", ["default", "fp32", "int8-binarized"])
def test_the_package_passes_the_zoo_tester(packages, offline, label):
    zoo_test(packages[label])


def test_the_default_is_the_gated_int8_model(packages, tiny_quantized_bundle):
    rdf = _rdf(packages["default"])
    assert rdf["weights"]["onnx"]["source"] == "model_int8.onnx"
    assert _rdf(packages["fp32"])["weights"]["onnx"]["source"] == "model_fp32.onnx"


def test_the_rdf_says_what_the_manifest_says(packages, tiny_quantized_bundle):
    manifest = read_manifest(tiny_quantized_bundle)
    rdf = _rdf(packages["default"])
    assert rdf["format_version"].startswith("0.5.")
    assert rdf["documentation"] == "README.md"  # a plain string, as deepImageJ reads it
    assert rdf["weights"]["onnx"]["opset_version"] <= MAX_OPSET
    assert any(c.get("doi") == "10.1007/978-3-319-24574-4_28" for c in rdf["cite"])
    (tensor_in,), (tensor_out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in tensor_in["axes"]] == ["batch", "y", "x", "channel"]
    assert [a.get("id", a["type"]) for a in tensor_out["axes"]] == ["batch", "y", "x", "channel"]
    y = tensor_in["axes"][1]["size"]
    assert y["step"] == manifest.size_multiple  # 2**depth
    halo = tensor_out["axes"][1]["halo"]
    assert y["min"] > 2 * halo and y["min"] % y["step"] == 0  # the zoo needs min > 2 x halo
    kwargs = tensor_in["preprocessing"][1]["kwargs"]
    assert tensor_in["preprocessing"][1]["id"] == "fixed_zero_mean_unit_variance"
    assert kwargs["mean"] == pytest.approx(manifest.preprocessing.mean * 255)
    assert kwargs["std"] == pytest.approx(manifest.preprocessing.std * 255)
    (tolerance,) = rdf["config"]["bioimageio"]["reproducibility_tolerance"]
    assert tolerance["weights_formats"] == ["onnx"]
    # One step of the int8 output's 1/256 grid passes, two do not.
    assert 1 / 256 < tolerance["absolute_tolerance"] < 2 / 256


def test_the_int8_tolerance_is_the_dice_budget_in_pixels(tiny_quantized_bundle):
    manifest = read_manifest(tiny_quantized_bundle)
    golden = golden_of(tiny_quantized_bundle, manifest)
    ppm = budget_flips_per_million(golden, 0.01)
    foreground = float(np.mean(golden.masks > 0))
    assert ppm == int(0.01 * foreground * 1e6)
    # Flipping that many pixels of the golden masks (all lost from the foreground, the worst
    # case) keeps Dice within the budget.
    from runtime.metrics import dice

    masks = golden.masks.copy().reshape(-1)
    flips = int(ppm * masks.size / 1e6)
    masks[np.flatnonzero(masks)[:flips]] = 0
    assert dice(masks.reshape(golden.masks.shape), golden.masks) >= 1 - 0.01


def test_files_and_attachments(packages, tiny_quantized_bundle):
    manifest = read_manifest(tiny_quantized_bundle)
    with zipfile.ZipFile(packages["default"]) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
        cover = Image.open(io.BytesIO(archive.read("cover.png")))
        test_input = np.load(io.BytesIO(archive.read("test_input.npy")))
        for entry in rdf["attachments"]:
            data = archive.read(entry["source"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert {"rdf.yaml", "README.md", "cover.png", "model_int8.onnx"} <= names
    assert {"sample_input.png", "sample_output.png"} <= names  # the zoo's FAIR pictures
    tflite = {a.file for a in manifest.artifacts if a.format == "tflite"} & names
    assert tflite == {"model_fp32.tflite", "model_int8.tflite"}
    for name in tflite:
        assert f"`{name}`" in readme
    assert cover.width == 2 * cover.height
    golden = golden_of(tiny_quantized_bundle, manifest)
    assert np.array_equal(test_input, golden.images)  # the golden tiles, raw pixels
    assert "Parity gate" in readme and "Reproducibility tolerance" in readme


def test_the_valid_layout_gets_fixed_sizes(tiny_valid_bundle, offline, tmp_path):
    package = write_package(tiny_valid_bundle, tmp_path / "valid.zip", Options()).path
    manifest = read_manifest(tiny_valid_bundle)
    (tensor_in,), (tensor_out,) = _rdf(package)["inputs"], _rdf(package)["outputs"]
    assert tensor_in["axes"][1]["size"] == manifest.input_size
    assert tensor_out["axes"][1]["size"] == manifest.output_size
    zoo_test(package)


def test_keep_float_int8_falls_back_to_fp32(tiny_quantized_bundle, tmp_path, capsys):
    """onnxruntime in every consumer would re-quantize the layers kept in float: the default
    packages fp32 instead, and asking for int8 is refused."""
    bundle = _copy(tiny_quantized_bundle, tmp_path / "bundle")
    _edit_manifest(bundle, lambda m: m.update(keep_float=["enc1_conv_a"]))
    written = write_package(bundle, tmp_path / "a.zip", Options())
    assert written.precision == "fp32"
    capsys.readouterr()  # the warning that says so
    code = main(parse_args([str(bundle), "--out", str(tmp_path / "b.zip"), "--precision", "int8"]))
    _one_line_exit_2(code, capsys, "keeps layers in float")
    assert not (tmp_path / "b.zip").exists()


def _copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _one_line_exit_2(code: int, capsys, words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


def _no_onnx(manifest: dict) -> None:
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] != "onnx"]


@pytest.mark.parametrize(
    "edit, words",
    [
        (_no_onnx, "no ONNX model"),
        (lambda m: m.pop("golden"), "no golden tiles"),
    ],
    ids=["no-onnx", "no-golden"],
)
def test_a_bundle_it_cannot_package_is_one_line(
    tiny_quantized_bundle, tmp_path, capsys, edit, words
):
    bundle = _copy(tiny_quantized_bundle, tmp_path / "bundle")
    _edit_manifest(bundle, edit)
    out = tmp_path / "out.zip"
    _one_line_exit_2(main(parse_args([str(bundle), "--out", str(out)])), capsys, words)
    assert list(tmp_path.iterdir()) == [bundle]  # nothing written, not even a temporary file


def test_an_existing_out_needs_overwrite(packages, tiny_quantized_bundle, tmp_path, capsys):
    out = tmp_path / "model.zip"
    out.write_bytes(b"someone's file")
    _one_line_exit_2(
        main(parse_args([str(tiny_quantized_bundle), "--out", str(out)])), capsys, "--overwrite"
    )
    assert out.read_bytes() == b"someone's file"
    assert main(parse_args([str(tiny_quantized_bundle), "--out", str(out), "--overwrite"])) == 0
    assert zipfile.is_zipfile(out)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--out", "x.tar"], ".zip"),
        (["--out", "x.zip", "--name", "U-Net, v2"], "--name"),
        (["--out", "x.zip", "--bundle-missing"], "not a folder"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, args, words, tiny_quantized_bundle):
    missing = "--bundle-missing" in args
    bundle = str(tmp_path / "nothing") if missing else str(tiny_quantized_bundle)
    argv = [
        bundle,
        "--out",
        str(tmp_path / args[1]),
        *[a for a in args[2:] if a != "--bundle-missing"],
    ]
    _one_line_exit_2(main(parse_args(argv)), capsys, words)
    assert not list(tmp_path.iterdir())


def test_a_crash_while_writing_leaves_nothing(tiny_quantized_bundle, tmp_path, monkeypatch):
    def broken(self, name, data, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken)
    code = main(parse_args([str(tiny_quantized_bundle), "--out", str(tmp_path / "model.zip")]))
    assert code == 2
    assert list(tmp_path.iterdir()) == []


def test_quantize_writes_the_package_too(tiny_run, tiny_quantized_bundle, tmp_path, monkeypatch):
    """optimize.quantize --bioimageio: the wiring (the QAT run itself is the fixture's)."""
    import optimize.gated_bundle
    from optimize import quantize

    calls = []

    def made(model, out, *args):
        calls.append(out)
        shutil.copytree(tiny_quantized_bundle, out)

    monkeypatch.setattr(optimize.gated_bundle, "quantize", made)
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "bundle")]
    assert quantize.main(quantize.parse_args([*argv, "--bioimageio", str(tmp_path / "a.tar")])) == 2
    assert calls == []  # refused before any work
    assert quantize.main(quantize.parse_args([*argv, "--bioimageio", str(tmp_path / "a.zip")])) == 0
    assert _rdf(tmp_path / "a.zip")["weights"]["onnx"]["source"] == "model_int8.onnx"


def test_the_package_carries_the_quality_reference(packages, tiny_quantized_bundle):
    """The toolkit's runtime flags drifted images of the packages it wrote, as of its bundles."""
    from runtime.segmenter import Segmenter
    from train.data.synthetic import generate_em

    reference = read_manifest(tiny_quantized_bundle).quality
    assert reference is not None
    segmenter = Segmenter.from_bundle(packages["default"])
    assert segmenter.manifest.quality == reference
    assert segmenter.predict(generate_em(1, 96, seed=3)[0][0]).quality is not None
