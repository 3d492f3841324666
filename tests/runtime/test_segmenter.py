"""The on-device segmenter on real bundles of a tiny U-Net: parity, tiling, any input, errors."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import Segmenter, UserError
from runtime.bundle import read_manifest, sha256_of
from runtime.preprocess import normalize

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    from train.data.synthetic import generate_em

    return generate_em(1, (height, width), seed)[0][0]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_manifest_hashes_and_sizes_match_the_files(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    assert {(a.precision, a.format) for a in manifest.artifacts} == {
        ("fp32", "tflite"),
        ("int8", "tflite"),
        ("fp32", "onnx"),
    }
    for artifact in manifest.artifacts:
        path = tiny_bundle / artifact.file
        assert artifact.sha256 == sha256_of(path) and artifact.size == path.stat().st_size
    int8 = manifest.artifact("int8", "tflite")
    assert (
        int8.input.dtype == "int8" and int8.input.scale > 0 and int8.output.zero_point is not None
    )


def test_fp32_tflite_fp32_onnx_and_keras_agree_to_1e_4(tiny_bundle):
    from train.tfk import keras

    run = tiny_bundle.parent / "run-same"
    model = keras.models.load_model(run / "model.keras", compile=False)
    manifest = read_manifest(tiny_bundle)
    tile = normalize(_image(64, 64), manifest.preprocessing)[None]
    keras_probs = model(tile, training=False).numpy()
    for backend in ("litert", "onnx"):
        seg = Segmenter.from_bundle(tiny_bundle, precision="fp32", backend=backend)
        np.testing.assert_allclose(seg.backend.run(tile), keras_probs, atol=1e-4, err_msg=backend)


def test_int8_masks_agree_with_fp32_in_batch_prediction(tiny_bundle):
    images = [_image(64, 64, seed=5), _image(80, 72, seed=6)]
    fp32 = Segmenter.from_bundle(tiny_bundle, precision="fp32", backend="litert").predict_batch(
        images
    )
    int8 = Segmenter.from_bundle(tiny_bundle, precision="int8", backend="litert").predict_batch(
        images
    )
    assert [p.mask.shape for p in int8] == [(64, 64), (80, 72)]
    for a, b in zip(fp32, int8, strict=True):
        assert np.mean(a.mask == b.mask) >= 0.97  # post-training int8 of the 80-step tiny run


def test_tiled_prediction_matches_the_whole_image_through_keras(tiny_bundle):
    """A 'same' model sees zero padding at tile borders; overlap keeps those pixels out.

    A bundle made before run-time sizes has fixed 64 px tiles; this one's models take any
    size, so a tile size is forced by a memory budget. With 48 px of overlap every kept pixel
    has >= 24 px of real context on each side, about the tiny model's receptive field (47 px),
    so what remains is float noise: mean |error| <= 1e-3, masks agree on >= 99.9%.
    """
    from train.tfk import keras

    model = keras.models.load_model(tiny_bundle.parent / "run-same" / "model.keras", compile=False)
    fp32 = read_manifest(tiny_bundle).artifact("fp32", "tflite")
    seg = Segmenter.from_bundle(
        tiny_bundle, "fp32", "litert", overlap=48, max_memory_mb=fp32.memory.mb(112 * 112)
    )
    image = _image(160, 136, seed=3)
    whole = model(normalize(image, seg.manifest.preprocessing)[None], training=False).numpy()[0]
    tiled = seg.predict(image)
    assert tiled.tiles > 1
    assert np.mean(np.abs(tiled.probabilities - whole)) <= 1e-3
    assert np.mean(tiled.mask == (whole[..., 0] >= seg.manifest.threshold)) >= 0.999


def test_valid_model_tiles_carry_their_context(tiny_valid_bundle):
    seg = Segmenter.from_bundle(tiny_valid_bundle, precision="fp32", backend="onnx")
    assert (seg.manifest.input_size, seg.manifest.output_size) == (60, 20)
    image = _image(50, 70)
    result = seg.predict(image)
    assert result.mask.shape == (50, 70) and result.probabilities.shape == (50, 70, 1)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    height=st.integers(1, 80),
    width=st.integers(1, 80),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    channels=st.sampled_from([None, 1, 2, 3, 4]),
)
def test_any_size_dtype_and_channel_count_gives_a_mask_of_the_input_shape(
    tiny_bundle, height, width, dtype, channels
):
    seg = _segmenter(tiny_bundle)
    rng = np.random.default_rng(height * 100 + width)
    shape = (height, width) if channels is None else (height, width, channels)
    image = rng.random(shape).astype(np.float32)
    if dtype is not np.float32:
        image = (image * np.iinfo(dtype).max).astype(dtype)
    result = seg.predict(image)
    prepared = seg.prepare(image)
    assert (prepared.note is not None) == (channels in (3, 4))
    if prepared.note:
        assert "RGB image to grey" in prepared.note
    assert result.mask.shape == (height, width) and set(np.unique(result.mask)) <= {0, 1}
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))


_CACHE: dict[Path, Segmenter] = {}


def _segmenter(bundle: Path) -> Segmenter:
    if bundle not in _CACHE:
        _CACHE[bundle] = Segmenter.from_bundle(bundle, precision="int8", backend="litert")
    return _CACHE[bundle]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.full((8, 8), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((8, 8), np.int64), "unsupported pixel type"),
    ],
)
def test_bad_arrays_are_user_errors(tiny_bundle, bad, message):
    with pytest.raises(UserError, match=message):
        _segmenter(tiny_bundle).predict(bad)


def test_a_file_that_is_not_an_image_is_a_user_error(tiny_bundle, tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read"):
        _segmenter(tiny_bundle).predict(tmp_path / "x.png")


def test_tampered_truncated_and_missing_model_files_are_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    model = bundle / "model_int8.tflite"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UserError, match="does not match its SHA-256"):
        Segmenter.from_bundle(bundle, precision="int8")
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="does not match its SHA-256"):
        Segmenter.from_bundle(bundle, precision="int8")
    model.unlink()
    with pytest.raises(UserError, match="is missing"):
        Segmenter.from_bundle(bundle, precision="int8")


def test_bad_manifests_are_refused_with_the_reason(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(UserError, match=r"format version 99.*upgrade"):
        Segmenter.from_bundle(bundle, precision="int8")
    del manifest["preprocessing"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="lacks preprocessing"):
        Segmenter.from_bundle(bundle, precision="int8")
    (bundle / "manifest.json").unlink()
    with pytest.raises(UserError, match=r"has no manifest\.json"):
        Segmenter.from_bundle(bundle, precision="int8")


def test_unknown_precision_and_backend_list_the_known_ones(tiny_bundle):
    with pytest.raises(
        UserError, match=r"unknown precision 'int4': the bundle has auto, fp32, int8"
    ):
        Segmenter.from_bundle(tiny_bundle, precision="int4")
    with pytest.raises(UserError, match=r"unknown backend 'tpu': choose auto, litert, onnx"):
        Segmenter.from_bundle(tiny_bundle, backend="tpu")
    with pytest.raises(UserError, match="no int8 onnx model"):
        Segmenter.from_bundle(tiny_bundle, precision="int8", backend="onnx")


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'train', 'optimize', 'benchmarks'):
            raise ImportError(f'blocked import of {name}')
sys.meta_path.insert(0, Block())
import numpy as np
from runtime import Segmenter
seg = Segmenter.from_bundle(sys.argv[1], precision=sys.argv[2])
print(seg.predict(np.zeros((40, 50), np.uint8)).mask.shape)
"""


@pytest.mark.parametrize("precision", ["int8", "fp32", "auto"])
def test_runtime_never_imports_tensorflow(tiny_bundle, precision):
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(tiny_bundle), precision],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(40, 50)"


def test_predict_cli_writes_masks_and_overlays(tiny_bundle, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(_image(40 + i, 48, seed=i)).save(images / f"{i}.png")
    out = tmp_path / "masks"
    done = subprocess.run(
        [sys.executable, "-m", "runtime.predict", str(tiny_bundle), str(images), "--out", str(out), "--overlay", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ms" in done.stdout and "6 mask(s)" in done.stdout
    mask = np.array(Image.open(out / "5_mask.png"))
    assert mask.shape == (45, 48) and set(np.unique(mask)) <= {0, 255}
    assert np.array(Image.open(out / "5_overlay.png")).shape == (45, 48, 3)
    # The pipeline (reading ahead, writing behind) keeps each mask with its own image.
    seg = Segmenter.from_bundle(tiny_bundle, num_threads=1)  # auto: the choice cached above
    assert seg.artifact.file in done.stderr
    for i in range(6):
        expected = seg.predict(images / f"{i}.png").mask * 255
        assert np.array_equal(np.array(Image.open(out / f"{i}_mask.png")), expected), i


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priority: Linux")
def test_the_folder_pipeline_reads_and_writes_at_low_priority():
    """Decoding and writing take the cores' idle moments, not the interpreter's threads'."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from runtime.predict import PIPELINE_NICENESS, _yield_to_the_interpreter

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = niceness()
    with ThreadPoolExecutor(1, initializer=_yield_to_the_interpreter) as pool:
        assert pool.submit(niceness).result() == PIPELINE_NICENESS
    assert niceness() == before  # the interpreter's (the caller's) own is untouched


def test_a_colour_note_is_logged_once_per_run_then_counted(tiny_bundle, tmp_path, caplog):
    from PIL import Image

    from runtime.predict import segment_files

    images = tmp_path / "rgb"
    images.mkdir()
    paths = []
    for i in range(3):
        paths.append(images / f"{i}.png")
        Image.fromarray(np.repeat(_image(32, 32, seed=i)[..., None], 3, -1)).save(paths[-1])
    seg = Segmenter.from_bundle(tiny_bundle, precision="int8", backend="litert", num_threads=1)
    out = tmp_path / "masks"
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="runtime"):
        segment_files(seg, paths, out)
        seg.predict(np.asarray(Image.open(paths[0])))  # the same Segmenter: said already
    lines = [r.getMessage() for r in caplog.records if "to grey" in r.getMessage()]
    assert lines == [
        "0.png: converted a RGB image to grey for this 1-channel model (said once)",
        "3 of 3 files: converted a RGB image to grey for this 1-channel model",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{bundle}", "/no/such.png"], "input /no/such.png does not exist"),
        (["/no/bundle", "{image}"], "bundle /no/bundle is not a folder"),
        (["{bundle}", "{image}", "--precision", "int3"], "unknown precision 'int3'"),
        (["{bundle}", "{image}", "--max-memory-mb", "0"], "max_memory_mb must be positive"),
        (["{bundle}", "{image}", "--max-memory-mb", "1"], "max_memory_mb 1 leaves no room"),
    ],
)
def test_predict_cli_errors_are_one_line_with_exit_2(tiny_bundle, tmp_path, argv, message):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(_image(20, 20)).save(image)
    args = [a.format(bundle=tiny_bundle, image=image) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "runtime.predict", *args, "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_onnx_sessions_do_not_spin_after_a_run(tiny_bundle):
    from runtime.backends import onnx_session

    options = onnx_session(tiny_bundle / "model_fp32.onnx", 2).get_session_options()
    # Spinning threads slowed the next model on 2 cores by half (see onnx_session).
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2
    assert options.enable_mem_pattern is False  # one block per input size held 2x the memory


def test_predict_cli_turns_a_tiff_stack_into_a_mask_stack(tiny_bundle, tmp_path):
    import tifffile

    images = tmp_path / "images"
    images.mkdir()
    pages = [_image(40, 48, seed=i) for i in range(3)]
    tifffile.imwrite(images / "stack.tif", np.stack(pages), photometric="minisblack")
    out = tmp_path / "masks"
    done = subprocess.run(
        [sys.executable, "-m", "runtime.predict", str(tiny_bundle), str(images), "--out", str(out), "--precision", "int8", "--backend", "litert", "--overlay"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stack.tif (3 pages)" in done.stdout
    assert "XNNPACK" not in done.stderr  # LiteRT's C++ notice is a debug message (-v)
    masks = tifffile.imread(out / "stack_mask.tif")
    assert masks.shape == (3, 40, 48) and set(np.unique(masks)) <= {0, 255}
    # Each page is the mask of that page, as one image alone would give it.
    single = Segmenter.from_bundle(tiny_bundle, precision="int8", backend="litert")
    assert np.array_equal(masks[1] > 0, single.predict(pages[1]).mask > 0)
    assert tifffile.imread(out / "stack_overlay.tif").shape == (3, 40, 48, 3)


def test_predict_never_replaces_masks_silently(tiny_bundle, tmp_path):
    from PIL import Image

    from runtime.predict import main, parse_args

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_image(40, 40)).save(images / "a.png")
    out = tmp_path / "masks"
    argv = [str(tiny_bundle), str(images), "--out", str(out), "--precision", "int8"]
    assert main(parse_args(argv)) == 0
    before = (out / "a_mask.png").stat().st_mtime_ns
    assert main(parse_args(argv)) == 2  # already there
    assert (out / "a_mask.png").stat().st_mtime_ns == before
    assert main(parse_args([*argv, "--overwrite"])) == 0


def test_predict_output_errors_name_the_files(tiny_bundle, tmp_path, capsys):
    from PIL import Image

    from runtime.predict import main, parse_args

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        Image.fromarray(_image(20, 20)).save(tmp_path / folder / "a.png")
    argv = [str(tiny_bundle), str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path)]
    assert main(parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would both write a_mask" in err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a_mask.png").write_bytes(b"")
    argv = [str(tiny_bundle), str(tmp_path / "x"), "--out", str(tmp_path / "m")]
    assert main(parse_args(argv)) == 2
    assert "already holds a_mask.png: pass --overwrite" in capsys.readouterr().err


def test_quiet_and_verbose_set_what_the_library_says(tiny_bundle, tmp_path, capsys):
    from PIL import Image

    from runtime.predict import main, parse_args

    Image.fromarray(_image(32, 32)).save(tmp_path / "a.png")
    argv = [str(tiny_bundle), str(tmp_path / "a.png"), "--precision", "fp32", "--overwrite"]
    assert main(parse_args([*argv, "--out", str(tmp_path / "o")])) == 0
    assert "runtime: model_fp32.tflite on litert" in capsys.readouterr().err  # INFO
    assert main(parse_args([*argv, "--out", str(tmp_path / "o"), "-q"])) == 0
    captured = capsys.readouterr()
    assert "runtime:" not in captured.err and "1 mask(s)" in captured.out  # results stay
    with pytest.raises(SystemExit):
        parse_args([*argv, "--out", "o", "-q", "-v"])  # one or the other


@pytest.mark.parametrize("threshold", ["1.5", "0", "-0.2", "1", "nan"])
def test_a_threshold_outside_zero_one_is_refused(tiny_bundle, tmp_path, capsys, threshold):
    """At 0 or above 1 every pixel would be one class: the masks would say nothing."""
    from PIL import Image

    from runtime.predict import main, parse_args

    Image.fromarray(_image(32, 32)).save(tmp_path / "a.png")
    out = tmp_path / "o"
    argv = [str(tiny_bundle), str(tmp_path / "a.png"), "--out", str(out), "--threshold", threshold]
    assert main(parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"threshold {float(threshold):g} is outside (0, 1)" in err
    assert not out.exists()  # refused before anything was written
    with pytest.raises(UserError, match="outside"):
        Segmenter.from_bundle(tiny_bundle, precision="fp32").predict(_image(32, 32), 1.5)


@pytest.mark.parametrize(("precision", "backend"), [("fp32", "onnx"), ("int8", "litert")])
def test_tta_is_the_mean_of_the_segmenter_over_the_eight_views(tiny_bundle, precision, backend):
    """On an image on the pooling grid (one pass, no padding), d4 equals running the plain
    segmenter on each flipped and transposed image and mapping its output back, whether the
    views run as one batch or, with a budget too small for that, one by one."""
    image = _image(64, 48)
    plain = Segmenter.from_bundle(tiny_bundle, precision, backend)
    views = []
    for transposed in (False, True):
        x = image.T if transposed else image
        for axes in ((), (0,), (1,), (0, 1)):
            y = plain.predict(np.ascontiguousarray(np.flip(x, axes))).probabilities
            y = np.flip(y, axes)
            views.append(y.transpose(1, 0, 2) if transposed else y)
    expected = np.mean(views, axis=0)
    for budget in (384.0, plain.memory.mb(64 * 48) * 1.5):
        seg = Segmenter.from_bundle(tiny_bundle, precision, backend, max_memory_mb=budget, tta="d4")
        result = seg.predict(image)
        assert result.probabilities.shape == (64, 48, 1) and result.tiles == 1
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
        # Masks may differ only where a batch's other summation order crosses the threshold.
        threshold = seg.manifest.threshold
        differ = result.mask != (expected[..., 0] >= threshold)
        assert np.all(np.abs(expected[..., 0][differ] - threshold) <= 1e-5)
    assert not np.allclose(expected, plain.predict(image).probabilities, atol=1e-3)


def test_predict_cli_tta_and_the_threshold_it_uses(tiny_bundle, tmp_path):
    from PIL import Image

    Image.fromarray(_image(37, 53)).save(tmp_path / "a.png")  # off the grid: padded, then views
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-m", "runtime.predict", str(tiny_bundle), str(tmp_path / "a.png"), "--out", str(out), "--tta", "flips", "--precision", "fp32"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    threshold = read_manifest(tiny_bundle).threshold
    assert f"masks: threshold {threshold:g} (the bundle's), mean of 4 views" in done.stderr
    expected = Segmenter.from_bundle(tiny_bundle, "fp32", tta="flips").predict(tmp_path / "a.png")
    assert np.array_equal(np.array(Image.open(out / "a_mask.png")), expected.mask * 255)
