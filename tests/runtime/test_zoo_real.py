"""runtime.zoo on a package nobody here wrote: the zoo's `unet2d_nuclei_broad` (vendored in
tests/data with its licence), judged by its own test tensors and by bioimageio.core's prediction.

The model takes exactly 512 x 512 (batch, channel, y, x; no `id` on x), normalizes each image
by its own mean and std, and declares an output halo of 32 px: an image runs in 512 px tiles
that keep their inner 448 px, the image border padded by the halo (symmetric) as
bioimageio.core's blocks pad it, normalized once over the whole image.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from runtime import Segmenter
from runtime.predict import main, parse_args
from runtime.zoo import is_package, open_package

PACKAGE = Path(__file__).resolve().parents[1] / "data" / "unet2d_nuclei_broad"
RDFS = ("bioimageio.yaml", "v0_4_9.bioimageio.yaml", "v0_4_0.bioimageio.yaml")
TOLERANCE = 1e-3  # the package gives none: bioimageio.spec's default, absolute and relative
INNER = (slice(32, -32), slice(32, -32))  # beyond the package's output halo


def _has_spec() -> bool:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        return False
    return True


def _source(name: str) -> Path:
    if name.startswith("v0_4") and not _has_spec():
        pytest.skip("format 0.4 needs bioimageio.spec (pip install '.[zoo]')")
    return PACKAGE / name


@pytest.fixture(scope="module")
def test_input() -> np.ndarray:
    return np.load(PACKAGE / "test_input.npy")[0, 0]  # float32 raw intensities, 122-4095


@pytest.fixture(scope="module")
def test_output() -> np.ndarray:
    return np.load(PACKAGE / "test_output.npy")[0, 0]


@pytest.fixture(scope="module")
def large(test_input) -> np.ndarray:
    """4x the test input's area: its four orientations side by side, so tiles meet at seams
    across real nuclei and at hard edges between the quarters."""
    x = test_input
    return np.block([[x, np.rot90(x)], [x[::-1], x[::-1, ::-1]]])


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_bundle(PACKAGE)


def beyond_tolerance(actual: np.ndarray, expected: np.ndarray) -> float:
    """Elements per million further off than the zoo's rule: |a - e| > atol + rtol |e|."""
    wrong = np.abs(actual - expected) > TOLERANCE + TOLERANCE * np.abs(expected)
    return float(wrong.mean() * 1e6)


@pytest.mark.parametrize("rdf", ["folder", "zip", *RDFS])
def test_predict_cli_verifies_it_and_writes_its_mask(rdf, tmp_path, test_input, test_output):
    """`runtime.predict PKG IMAGE --verify`: exit 0 for the folder, a zip of it, and each rdf
    named directly (0.5.4, and 0.4.9 and 0.4.0 converted by bioimageio.spec)."""
    if rdf == "folder":
        package = PACKAGE
    elif rdf == "zip":
        package = tmp_path / "nuclei.zip"
        with zipfile.ZipFile(package, "w") as archive:
            for file in PACKAGE.iterdir():
                archive.write(file, file.name)
    else:
        package = _source(rdf)
    assert is_package(package)
    tifffile.imwrite(tmp_path / "nuclei.tif", test_input)  # float32 raw values, as the zoo's
    args = [str(package), str(tmp_path / "nuclei.tif"), "--out", str(tmp_path / "out")]
    assert main(parse_args([*args, "--verify"])) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "nuclei_mask.png")) > 0
    # The test output is one pass with the model's own border; the runtime pads the border.
    assert np.mean(mask[INNER] == (test_output > 0.5)[INNER]) == 1.0
    assert np.mean(mask == (test_output > 0.5)) >= 0.999  # measured: 99.967%


def test_probabilities_match_its_test_output(segmenter, test_input, test_output):
    """One pass of the model, as the package's own test ran it (and `--verify` runs it), is
    within its tolerance (measured: 1.7e-6 at most, onnxruntime 1.31 on this CPU). A
    prediction pads the border by the halo, as core's blocks do: 4 tiles of 448 px kept, which
    agree with the one pass beyond the halo within the zoo's default of 100 elements per million
    beyond tolerance (measured: 25; 2.5e-3 at most: the tiles see other context there)."""
    m = segmenter.manifest
    assert (m.input_size, m.output_size, segmenter.overlap) == (512, 448, 0)
    one_pass = segmenter.backend.forward(segmenter.prepare(test_input).input[None])[0, ..., 0]
    assert beyond_tolerance(one_pass, test_output) == 0
    assert np.abs(one_pass - test_output).max() < 1e-4
    result = segmenter.predict(test_input)
    assert result.tiles == 4
    assert beyond_tolerance(result.probabilities[INNER][..., 0], test_output[INNER]) < 100


def test_whole_image_statistics_before_tiles(segmenter, large):
    """zero_mean_unit_variance is the whole image's: the image scaled and shifted gives the
    same probabilities (per-tile statistics would not make a tile depend on the others)."""
    result = segmenter.predict(large)
    assert result.tiles == 9
    np.testing.assert_allclose(
        segmenter.predict(large * 3 + 100).probabilities, result.probabilities, atol=1e-4
    )
    x = segmenter.prepare(large).input
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4


def _core():
    pytest.importorskip("bioimageio.core", reason="the zoo extra: pip install '.[zoo]'")
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    description = load_model_description(PACKAGE / "bioimageio.yaml", perform_io_checks=False)
    return create_prediction_pipeline(description, weight_format="onnx"), predict


@pytest.fixture(scope="module")
def core():
    return _core()


def test_agrees_with_bioimageio_core(core, segmenter, test_input, large):
    """bioimageio.core 0.11 on the same ONNX: its one pass (how its test runs the package)
    within the package's tolerance; its 512 px blocks with the halo, on the test input and on
    the 4x image (1024 px), >= 99.9% of the whole mask, border included: both pad the image
    border by the halo (symmetric). Measured: 100% of both masks; probabilities within 1.9e-3
    (tiles at other places than core's blocks see other context beyond the halo), 10 per
    million beyond the package's tolerance on the 1024 px image."""
    from bioimageio.core import Sample, Tensor

    pipeline, predict = core
    sample = Sample(
        members={
            "raw": Tensor.from_numpy(test_input[None, None], dims=("batch", "channel", "y", "x"))
        },
        stat={},
        id="test",
    )
    one_pass = pipeline.predict_sample_without_blocking(
        sample, skip_input_padding=True, skip_output_cropping=True
    )
    theirs = one_pass.members["probability"].data.values[0, 0]
    ours = segmenter.backend.forward(segmenter.prepare(test_input).input[None])[0, ..., 0]
    assert beyond_tolerance(ours, theirs) == 0
    block = {"raw": {"batch": 1, "channel": 1, "y": 512, "x": 512}}
    for image in (test_input, large):
        blocked = predict(model=pipeline, inputs=image[None, None], input_block_shape=block)
        theirs = blocked.members["probability"].data.values[0, 0]
        ours = segmenter.predict(image)
        assert np.mean(ours.mask == (theirs > 0.5)) >= 0.9999
        assert np.abs(ours.probabilities[..., 0] - theirs).max() < 1e-2
        assert beyond_tolerance(ours.probabilities[..., 0], theirs) < 100  # the zoo's default


def _edited(tmp_path: Path, edit, rdf: str = "bioimageio.yaml") -> Path:
    """A copy of the package (its large files linked) with its rdf edited."""
    folder = tmp_path / "package"
    folder.mkdir()
    for file in PACKAGE.iterdir():
        if not file.name.endswith(".yaml"):
            (folder / file.name).symlink_to(file)
    content = yaml.safe_load((PACKAGE / rdf).read_text())
    edit(content)
    (folder / "bioimageio.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return folder


def _two_inputs(rdf: dict) -> None:
    rdf["inputs"].append({**rdf["inputs"][0], "id": "mask"})


def _three_d(rdf: dict) -> None:
    rdf["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": 16})


def _weights(rdf: dict) -> None:
    rdf["weights"]["onnx"]["sha256"] = "0" * 64


def _dataset(rdf: dict) -> None:
    rdf["type"] = "dataset"


def _torchscript(rdf: dict) -> None:
    del rdf["weights"]["onnx"]


def _reference_statistics(rdf: dict) -> None:
    step = {"id": "scale_mean_variance", "kwargs": {"reference_tensor": "raw"}}
    rdf["outputs"][0]["postprocessing"].insert(1, step)


def _data_dependent(rdf: dict) -> None:
    rdf["outputs"][0]["axes"][2]["size"] = {"min": 1}


BAD = {
    "two-inputs": (_two_inputs, "2 inputs: the runtime runs models with one input"),
    "3-d": (_three_d, "3-D or time-series model"),
    "hash": (_weights, "does not match its SHA-256"),
    "not-a-model": (_dataset, "describes a 'dataset', not a model"),
    "torchscript": (
        _torchscript,
        "weights are pytorch_state_dict, torchscript, not ONNX: the runtime reads ONNX",
    ),
    "reference-statistics": (_reference_statistics, "'scale_mean_variance'"),
    "data-dependent": (_data_dependent, "does not follow the input"),
}


def _one_line_exit_2(package: Path, tmp_path: Path, capsys) -> str:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    code = main(parse_args([str(package), str(tmp_path / "x.png"), "--out", str(out)]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_it_cannot_run_is_one_line(case, tmp_path, capsys):
    edit, words = BAD[case]
    err = _one_line_exit_2(_edited(tmp_path, edit), tmp_path, capsys)
    assert words in err, err


def test_a_zip_cut_short_is_one_line(tmp_path, capsys):
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        for file in PACKAGE.iterdir():
            archive.write(file, file.name)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "not a readable zip" in _one_line_exit_2(cut, tmp_path, capsys)


def test_format_0_4_without_bioimageio_spec_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # import raises ImportError
    package = _edited(tmp_path, lambda rdf: None, rdf="v0_4_9.bioimageio.yaml")
    err = _one_line_exit_2(package, tmp_path, capsys)
    assert "format 0.4 needs bioimageio.spec, pip install '.[zoo]'" in err, err


def test_a_named_rdf_alone_in_a_folder_is_a_package(tmp_path):
    """`NAME.bioimageio.yaml` is an rdf name (bioimageio.spec's rule): the folder is a package,
    not a bundle without manifest.json."""
    folder = tmp_path / "named"
    shutil.copytree(PACKAGE, folder, ignore=shutil.ignore_patterns("*.yaml"))
    shutil.copy(PACKAGE / "bioimageio.yaml", folder / "nuclei.bioimageio.yaml")
    assert is_package(folder)
    assert open_package(folder).files.rdf == "nuclei.bioimageio.yaml"


def test_a_border_padding_other_than_symmetric_is_said(tmp_path, caplog):
    """Core pads the border as the input's `pad` says; the runtime pads symmetric and says so."""

    def reflect(rdf: dict) -> None:
        rdf["inputs"][0]["pad"] = {"mode": "reflect"}

    with caplog.at_level("WARNING", logger="runtime.zoo"):
        open_package(_edited(tmp_path, reflect))
    assert "asks for reflect padding at the image border" in caplog.text
