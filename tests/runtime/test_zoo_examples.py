"""Every example model of the spec repository (`bioimage-io/spec-bioimage-io` at 63a2ea0,
`example_descriptions/models/`) gets its one-line verdict from the runtime: it runs, or it is
refused with the reason. Only the rdfs are vendored (`tests/data/zoo_examples`, MIT, the
licence of each model noted in its README); `unet2d_nuclei_broad`'s own rdfs, with its ONNX
weights, run in `test_zoo_real.py`.

None of the others has ONNX weights, so the runtime reads each rdf to its end and then names
the weights it lacks; where the rdf is the reason (a StarDist model, two inputs, another
resolution) that comes first. An rdf refused for its weights alone is run with stand-in ONNX
weights of its own layout (a 1x1 convolution), which shows that it runs up to the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from runtime import Segmenter, UserError
from runtime.predict import main, parse_args
from runtime.zoo import Layout, open_package
from runtime.zoo_rdf import Files, read_rdf

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "zoo_examples"

_WEIGHTS_PYTORCH = (
    "{rdf}'s weights are pytorch_state_dict, not ONNX: the runtime reads ONNX weights only; "
    "bioimageio.core's add_weights converts pytorch_state_dict and torchscript to ONNX"
)
_STARDIST = (
    "{rdf} is a StarDist model (config.stardist): its outputs are object probabilities and ray "
    "distances for StarDist's polygon suppression, not per-pixel classes the runtime thresholds"
)
_RESOLUTION = (
    "{rdf}: output axis y has {ratio}x the input's resolution (pixel scale {scale} against 1): "
    "the runtime segments at the input's resolution"
)
# The exact line for each rdf; True where only the weights stop it (it runs up to them).
VERDICTS: dict[str, tuple[str, bool]] = {
    "stardist_example_model/rdf_wrong_shape2_v0_4.yaml": (_STARDIST, False),
    "stardist_example_model/rdf_wrong_shape_v0_4.yaml": (_STARDIST, False),
    "stardist_example_model/v0_4.bioimageio.yaml": (_STARDIST, False),
    "unet2d_diff_output_shape/bioimageio.yaml": (
        _RESOLUTION.replace("{ratio}", "0.5").replace("{scale}", "2"),
        False,
    ),
    "unet2d_fixed_shape/v0_4.bioimageio.yaml": (_WEIGHTS_PYTORCH, True),
    "unet2d_keras_tf/v0_4.bioimageio.yaml": (
        "{rdf}'s weights are keras_hdf5, not ONNX: the runtime reads ONNX weights only; "
        "tf2onnx converts keras_hdf5 and tensorflow_saved_model_bundle to ONNX",
        True,
    ),
    "unet2d_keras_tf2/v0_4.bioimageio.yaml": (
        "{rdf}'s weights are keras_hdf5, tensorflow_saved_model_bundle, not ONNX: the runtime "
        "reads ONNX weights only; tf2onnx converts keras_hdf5 and tensorflow_saved_model_bundle "
        "to ONNX",
        True,
    ),
    "unet2d_multi_tensor/bioimageio.yaml": (
        "{rdf} has 2 inputs: the runtime runs models with one input and one output",
        False,
    ),
    "unet2d_nuclei_broad/expand_output_shape.bioimageio.yaml": (_WEIGHTS_PYTORCH, True),
    "unet2d_nuclei_broad/expand_output_shape_v0_4.bioimageio.yaml": (_WEIGHTS_PYTORCH, True),
    "unet2d_nuclei_broad/invalid_v0_4_0_duplicate_tensor_names.bioimageio.yaml": (
        "{rdf} (format 0.4.0) does not convert to format 0.5: Value error, Duplicate tensor "
        "descriptor names across inputs/outputs; fix its rdf",
        False,
    ),
    "upsample_test_model/v0_4.bioimageio.yaml": (
        _RESOLUTION.replace("{ratio}", "4").replace("{scale}", "0.25"),
        False,
    ),
}


def _rdf(name: str) -> Path:
    path = EXAMPLES / name
    if "v0_4" in name:
        pytest.importorskip("bioimageio.spec", reason="format 0.4: pip install '.[zoo]'")
    return path


def test_every_vendored_rdf_has_a_verdict():
    assert sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml")) == sorted(
        VERDICTS
    )


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_the_runtime_gives_its_verdict(name):
    rdf = _rdf(name)
    with pytest.raises(UserError) as refused:
        open_package(rdf)
    assert str(refused.value) == VERDICTS[name][0].format(rdf=rdf)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_the_cli_says_it_in_one_line(name, tmp_path, capsys):
    """No traceback and no library's notes: `error: ` and the verdict, exit 2, nothing written."""
    rdf = _rdf(name)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    code = main(parse_args([str(rdf), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == f"error: {VERDICTS[name][0].format(rdf=rdf)}\n"
    assert not (tmp_path / "out").exists()


def _stand_in_onnx(inputs: Layout, outputs: Layout) -> bytes:
    """A 1x1 convolution (all weights 1/C) between the rdf's layouts: transposed to (N, C, H,
    W), convolved, transposed to the output's order, axes of size 1 added back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, k = inputs.channels, outputs.channels
    inner = [key for key in outputs.order if key in "bcyx"]
    ones = [i for i, key in enumerate(outputs.order) if key not in "bcyx"]
    weights = np.full((k, c, 1, 1), 1.0 / c, np.float32)
    init = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.arange(k, dtype=np.float32) - k / 2, "b"),
        numpy_helper.from_array(np.array(ones, np.int64), "ones"),
    ]
    nodes = [
        helper.make_node(
            "Transpose", ["input"], ["nchw"], perm=[inputs.order.index(a) for a in "bcyx"]
        ),
        helper.make_node("Conv", ["nchw", "w", "b"], ["nkhw"]),
        helper.make_node("Transpose", ["nkhw"], ["kept"], perm=["bcyx".index(a) for a in inner]),
    ]
    if ones:
        nodes.append(helper.make_node("Unsqueeze", ["kept", "ones"], ["output"]))
    else:
        nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None] * 4)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None] * len(outputs.order))],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("name", sorted(n for n, (_, runs) in VERDICTS.items() if runs))
def test_refused_for_its_weights_alone_it_runs_on_onnx_ones(name, tmp_path):
    """With stand-in ONNX weights of its own layout in place of its weights, the rdf runs: its
    steps, its axis order, its fixed input tiled with its halo, its channels."""
    source = _rdf(name)
    folder = tmp_path / "package"
    folder.mkdir()
    rdf = yaml.safe_load(source.read_text())
    rdf["weights"] = {"onnx": {"source": "weights.onnx", "opset_version": 17}}
    (folder / "bioimageio.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    converted = read_rdf(Files(folder / "bioimageio.yaml"))
    inputs, outputs = (Layout.of(converted[key][0], folder) for key in ("inputs", "outputs"))
    (folder / "weights.onnx").write_bytes(_stand_in_onnx(inputs, outputs))
    segmenter = Segmenter.from_bundle(folder)
    image = np.random.default_rng(0).gamma(2.0, 300.0, (300, 280)).astype(np.float32)
    result = segmenter.predict(image)
    assert result.probabilities.shape == (300, 280, outputs.channels)
    assert np.isfinite(result.probabilities).all() and result.mask.shape == (300, 280)
    assert result.mask.max() <= max(1, outputs.channels - 1)


def test_the_readme_names_the_commit_and_each_licence():
    readme = (EXAMPLES / "README.md").read_text()
    assert "63a2ea093d29277ba168635b6f322123b1da4ada" in readme
    assert "MIT License" in (EXAMPLES / "LICENSE").read_text()
    for name in VERDICTS:
        licence = yaml.safe_load((EXAMPLES / name).read_text())["license"]
        assert f"`{name}` | {licence}" in readme, name
