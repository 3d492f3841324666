"""OpenVINO as a third engine: the (format, engine) registry, verification and precision="auto"
per (file, engine) pair, and the bad-input paths (engine missing, file it cannot read)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime.backends
import runtime.choice
from runtime import Segmenter
from runtime.backends import ENGINES, load
from runtime.bundle import read_manifest, sha256_of
from runtime.cache import cache_folder
from runtime.golden import runnable
from runtime.predict import main as predict_main
from runtime.predict import parse_args as predict_args
from runtime.verify import main as verify_main
from runtime.verify import parse_args as verify_args
from runtime.verify import verify_bundle

pytestmark = pytest.mark.slow
needs_openvino = pytest.mark.skipif(
    not importlib.util.find_spec("openvino"),
    reason="openvino is not installed (pip install '.[runtime-openvino]')",
)

needs_native_bf16 = pytest.mark.skipif(
    not ENGINES["openvino-bf16"].installed,
    reason="openvino-bf16 needs openvino and a CPU with AVX-512 BF16 or AMX",
)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _rehash(bundle: Path, file: str) -> None:
    """The manifest's hash made to match a changed file: only the engines can tell."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    path = bundle / file
    for artifact in manifest["artifacts"]:
        if artifact["file"] == file:
            artifact["sha256"], artifact["size"] = sha256_of(path), path.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _perturb_int8_kernels(bundle: Path, file: str) -> None:
    """Noise on every int8 4-D kernel (they stay int8), as a bad copy would leave them."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / file))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if len(init.dims) == 4 and w.dtype == np.int8:
            noisy = np.clip(w.astype(np.int32) + rng.integers(-40, 41, w.shape), -127, 127)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.int8), init.name))
    onnx.save(model, str(bundle / file))
    _rehash(bundle, file)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_onnx_file_is_a_pair_on_each_engine_that_reads_it(tiny_quantized_bundle):
    assert [e for e in ENGINES if "onnx" in ENGINES[e].formats] == [
        "onnx",
        "openvino",
        "openvino-bf16",
    ]
    manifest = read_manifest(tiny_quantized_bundle)
    pairs = {(a.file, name) for a, name in runnable(manifest, None, "openvino")}
    assert pairs == {(a.file, "openvino") for a in manifest.artifacts if a.format == "onnx"}
    everything = {(a.file, name) for a, name in runnable(manifest, None, "auto")}
    installed = [name for name, e in ENGINES.items() if e.installed]
    for artifact in manifest.artifacts:
        for name in installed:
            wanted = ENGINES[name].runs(artifact.format, artifact.precision)
            assert ((artifact.file, name) in everything) == wanted


def test_backend_openvino_without_the_package_names_the_extra(
    tiny_bundle, tmp_path, monkeypatch, capsys
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    argv = [str(tiny_bundle), "--backend", "openvino", "--precision", "fp32"]
    assert verify_main(verify_args(argv)) == 2
    assert "unet-edge[runtime-openvino]" in _one_line(capsys.readouterr().err)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    argv = [str(tiny_bundle), str(image), "--out", str(tmp_path / "out"), "--backend", "openvino"]
    assert predict_main(predict_args([*argv, "--precision", "fp32"])) == 2
    assert "unet-edge[runtime-openvino]" in _one_line(capsys.readouterr().err)


@needs_openvino
def test_openvino_computes_what_onnxruntime_does_at_run_time_sizes(tiny_bundle):
    """The same fp32 file on both engines, at two sizes and a batch of 2 (each a reshape and
    compile). Both compute in float32 and differ only in summation order through ~20 layers:
    1e-4 on probabilities in [0, 1] bounds that with room (seen: ~2e-6 on the demo U-Net)."""
    manifest = read_manifest(tiny_bundle)
    path = tiny_bundle / manifest.artifact("fp32", "onnx").file
    ov, ort = load("openvino", path, 2), load("onnx", path, 2)
    assert ov.resizable and ov.batchable
    rng = np.random.default_rng(0)
    for shape in [(1, 64, 64, 1), (2, 96, 128, 1), (1, 64, 64, 1)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        np.testing.assert_allclose(ov.run(x), ort.run(x), atol=1e-4)
    compiled = next(iter(ov._compiled.values())).get_compiled_model()
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert len(ov._compiled) == 2  # the last two shapes stay compiled
    # No thread of this process is tied to one core (a pinned worker waits out another's load).
    tasks = Path("/proc/self/task")
    if tasks.is_dir() and len(os.sched_getaffinity(0)) > 1:
        allowed = [(t / "status").read_text() for t in tasks.iterdir()]
        lists = [line for s in allowed for line in s.splitlines() if "Cpus_allowed_list" in line]
        assert all("-" in line or "," in line for line in lists), lists


@needs_openvino
def test_verify_on_openvino_passes_and_perturbed_int8_weights_fail(
    tiny_quantized_bundle, tmp_path, capsys
):
    checks = verify_bundle(tiny_quantized_bundle, backend="openvino")
    onnx = {a.file for a in read_manifest(tiny_quantized_bundle).artifacts if a.format == "onnx"}
    assert {c.file for c in checks} == onnx >= {"model_fp32.onnx", "model_int8.onnx"}
    assert all(c.passed and c.backend == "openvino" for c in checks)
    bundle = _copy(tiny_quantized_bundle, tmp_path)
    _perturb_int8_kernels(bundle, "model_int8.onnx")
    assert verify_main(verify_args([str(bundle), "--backend", "openvino"])) == 1
    err = capsys.readouterr().err
    assert "model_int8.onnx on openvino fails on this device" in err
    assert "model_fp32.onnx on openvino fails" not in err


@needs_openvino
def test_a_file_openvino_cannot_read_is_exit_2_and_auto_passes_over_it(
    tiny_quantized_bundle, tmp_path, monkeypatch, capsys, caplog
):
    """OpenVINO refusing a file that onnxruntime reads: named alone, one line naming the file;
    precision="auto" and verify's default pass over that pair with a note."""
    import runtime.openvino_engine

    def refuse(path: Path):
        raise RuntimeError("Exception from src/frontends/onnx/x.cpp:1:\nunsupported operator")

    monkeypatch.setattr(runtime.openvino_engine, "_read_onnx", refuse)
    bundle = tiny_quantized_bundle
    assert verify_main(verify_args([str(bundle), "--backend", "openvino"])) == 2
    line = _one_line(capsys.readouterr().err)
    assert "OpenVINO cannot read" in line and "model_fp32.onnx (unsupported operator)" in line
    caplog.set_level(logging.INFO, logger="runtime")
    checks = verify_bundle(bundle)
    assert {c.backend for c in checks} == {"litert", "onnx"}
    assert "passing over model_fp32.onnx on openvino" in caplog.text
    choice = runtime.choice.choose(bundle, read_manifest(bundle), refresh=True)
    assert choice.backend != "openvino"
    assert "model_int8.onnx on openvino (the engine cannot read it)" in choice.reason


@needs_openvino
def test_a_file_no_engine_reads_fails_verify(tiny_quantized_bundle, tmp_path, capsys):
    bundle = _copy(tiny_quantized_bundle, tmp_path)
    (bundle / "model_int8.onnx").write_bytes(b"not an onnx model")
    _rehash(bundle, "model_int8.onnx")
    assert verify_main(verify_args([str(bundle)])) == 2
    assert "cannot load" in _one_line(capsys.readouterr().err)
    assert verify_main(verify_args([str(bundle), "--backend", "openvino"])) == 2
    line = _one_line(capsys.readouterr().err)
    assert "OpenVINO cannot read" in line and "model_int8.onnx (Model can't be parsed)" in line


def _plant(monkeypatch, planted: dict[str, float], timed: list[str]) -> None:
    def fake_time(models, tile):
        timed.extend(models)
        return {key: planted.get(key, 10.0) for key in models}

    monkeypatch.setattr(runtime.choice, "time_per_tile", fake_time)


@needs_openvino
def test_auto_picks_across_engines_and_retimes_a_choice_made_under_load(
    tiny_quantized_bundle, monkeypatch, caplog
):
    """Timings and load are planted (speed is not a test's business): the same int8 file is
    fastest on OpenVINO, the choice says so and records when and under what load it was made;
    made under load, it is timed again once the machine is quiet, and kept while it is not."""
    timed: list[str] = []
    _plant(monkeypatch, {"model_int8.onnx on openvino": 1.0, "model_int8.onnx on onnx": 2.0}, timed)
    load = [4.0]  # 2 per core on a 2-core machine
    monkeypatch.setattr(runtime.choice, "_load_now", lambda: load[0])
    monkeypatch.setattr(runtime.choice.os, "cpu_count", lambda: 2)
    caplog.set_level(logging.INFO, logger="runtime")
    seg = Segmenter.from_bundle(tiny_quantized_bundle)
    assert (seg.artifact.file, seg.backend.name) == ("model_int8.onnx", "openvino")
    assert "auto chose model_int8.onnx on openvino" in caplog.text
    assert "model_int8.onnx on onnx 2.0 ms" in caplog.text
    (cached,) = cache_folder().glob("choice-*.json")
    record = json.loads(cached.read_text())
    assert record["load_1m"] == 4.0 and record["cores"] == 2 and record["made_at"]
    timed.clear()
    Segmenter.from_bundle(tiny_quantized_bundle)  # still busy: the cached choice stands
    assert timed == [] and "still busy" in caplog.text
    load[0] = 0.2
    Segmenter.from_bundle(tiny_quantized_bundle)  # quiet now: timed again, then cached
    assert "model_int8.onnx on openvino" in timed
    timed.clear()
    Segmenter.from_bundle(tiny_quantized_bundle)
    assert timed == []
    Segmenter.from_bundle(tiny_quantized_bundle, rechoose=True)
    assert timed


@needs_openvino
def test_rechoose_on_the_command_lines_times_again(
    tiny_quantized_bundle, tmp_path, monkeypatch, capsys
):
    timed: list[str] = []
    _plant(monkeypatch, {"model_fp32.onnx on openvino": 1.0}, timed)
    monkeypatch.setattr(runtime.choice, "_load_now", lambda: 0.0)
    bundle = str(tiny_quantized_bundle)
    assert verify_main(verify_args([bundle, "--rechoose"])) == 0
    assert "precision=auto: model_fp32.onnx on openvino" in capsys.readouterr().out
    timed.clear()
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    argv = [bundle, str(image), "--out", str(tmp_path / "out")]
    assert predict_main(predict_args(argv)) == 0
    assert timed == []  # the choice verify made
    assert predict_main(predict_args([*argv, "--overwrite", "--rechoose"])) == 0
    assert "model_fp32.onnx on openvino" in timed


@needs_openvino
def test_a_device_with_openvino_alone_measures_onnx_memory_through_it(tiny_bundle, monkeypatch):
    import runtime.backends
    from runtime.memory import _measure_one_run

    used = []
    real_load = runtime.backends.load
    monkeypatch.setattr(runtime.backends, "installed_backends", lambda: ["openvino"])
    monkeypatch.setattr(
        runtime.backends, "load", lambda name, *a: used.append(name) or real_load(name, *a)
    )
    path = tiny_bundle / read_manifest(tiny_bundle).artifact("fp32", "onnx").file
    assert _measure_one_run(path, "onnx", (1, 64, 64, 1)) >= 0
    assert used == ["openvino"]


@needs_openvino
def test_the_runtime_imports_openvino_without_its_converter_which_stays_importable(tiny_bundle):
    """A fresh process: the converter (and the telemetry, urllib and ssl it brings, 13 MB of a
    150 MB budget) stays out while a model runs, and imports normally afterwards."""
    import subprocess
    import sys

    script = f"""
import sys
import numpy as np
from runtime.backends import load
model = load("openvino", __import__("pathlib").Path({str(tiny_bundle / "model_fp32.onnx")!r}), 1)
assert model.run(np.zeros((1, 16, 16, 1), np.float32)).shape[0] == 1
assert "openvino_telemetry" not in sys.modules and "openvino.tools.ovc" not in sys.modules
from openvino.tools.ovc import convert_model
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_openvino_bf16_is_offered_for_the_float_model_where_the_cpu_has_bf16(
    tiny_quantized_bundle, monkeypatch, capsys
):
    bf16 = ENGINES["openvino-bf16"]
    assert bf16.runs("onnx", "fp32") and not bf16.runs("onnx", "int8")
    assert not bf16.runs("tflite", "fp32")
    manifest = read_manifest(tiny_quantized_bundle)
    monkeypatch.setattr(runtime.backends, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not bf16.installed
    if importlib.util.find_spec("openvino"):
        assert bf16.missing() == "openvino-bf16 needs a CPU with amx_bf16 or avx512_bf16"
    assert all(name != "openvino-bf16" for _, name in runnable(manifest, None, "auto"))
    argv = [str(tiny_quantized_bundle), "--backend", "openvino-bf16", "--precision", "int8"]
    assert verify_main(verify_args(argv)) == 2
    assert "openvino-bf16 runs the bundle's fp32 model, not int8" in _one_line(
        capsys.readouterr().err
    )


@needs_openvino
def test_openvino_bf16_on_a_cpu_without_it_is_one_line(tiny_bundle, monkeypatch, capsys):
    """Asked for by name where the CPU plugin lists no BF16 (OpenVINO would run f32)."""
    import runtime.openvino_engine

    class NoBf16Core:
        def get_property(self, device: str, name: str) -> list[str]:
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return ["FP32", "INT8"]

    monkeypatch.setattr(runtime.openvino_engine, "_core", NoBf16Core)
    argv = [str(tiny_bundle), "--backend", "openvino-bf16", "--precision", "fp32"]
    assert verify_main(verify_args(argv)) == 2
    assert "this CPU has no native bf16" in _one_line(capsys.readouterr().err)


@needs_native_bf16
def test_openvino_bf16_computes_in_bf16_and_verifies_within_the_budget(tiny_quantized_bundle):
    """A control that bf16 ran: its probabilities differ from f32's by more than f32 engines
    differ from each other (1e-4 above); the golden tiles bound the difference."""
    path = tiny_quantized_bundle / "model_fp32.onnx"
    f32, bf16 = load("openvino", path, 2), load("openvino-bf16", path, 2)
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 1), dtype=np.float32)
    assert np.abs(bf16.run(x) - f32.run(x)).max() > 1e-3
    compiled = next(iter(bf16._compiled.values())).get_compiled_model()
    assert "bfloat16" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    checks = verify_bundle(tiny_quantized_bundle, backend="openvino-bf16")
    assert [(c.file, c.backend) for c in checks] == [("model_fp32.onnx", "openvino-bf16")]
    assert checks[0].passed
