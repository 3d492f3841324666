"""Golden tiles, `python -m runtime.verify`, `verify=True` and `precision="auto"` on real bundles."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.crosscpu.run import perturbed_copy
from runtime import Segmenter, UserError
from runtime.bundle import read_manifest, sha256_of
from runtime.cache import cache_folder
from runtime.choice import choose
from runtime.golden import GOLDEN_FILE, VerificationFailed, load_golden
from runtime.verify import verify_bundle

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _verify_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.verify", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bundles_carry_hashed_golden_tiles_scored_by_the_build(tiny_quantized_bundle):
    manifest = read_manifest(tiny_quantized_bundle)
    info = manifest.golden
    assert info is not None and info.file == GOLDEN_FILE
    golden = load_golden(tiny_quantized_bundle, info.file, info.sha256)
    size, out = manifest.input_size, manifest.output_size
    assert golden.images.dtype == np.uint8  # raw pixels: the device normalizes them itself
    assert golden.images.shape[1:] == (size, size, 1)
    assert golden.masks.shape == (len(golden.images), out, out)
    assert (tiny_quantized_bundle / GOLDEN_FILE).stat().st_size < 300_000
    # Every model was scored on them by the build, with its gate figure beside it.
    assert set(info.models) == {a.file for a in manifest.artifacts}
    # The same float model in another engine: masks differ only where a probability lies
    # within float rounding of the threshold (none on one CPU, 1 pixel in 30,000 with Keras on
    # oneDNN's AVX2 kernels and LiteRT on AVX-512).
    assert info.models["model_fp32.tflite"].dice_vs_float >= 0.999
    # Post-training int8 is the float model rounded (QAT int8 is a fine-tuned model, whose
    # agreement with float depends on the training kernels: 0.97-0.99; the gate bounds it).
    assert info.models["model_int8_ptq.tflite"].agreement_with_float >= 0.97
    assert info.models["model_int8.onnx"].gate_dice_drop <= info.max_dice_drop
    assert info.max_dice_drop == 0.01 and info.built_on["int8"]
    # The export refused weights that could saturate AVX2 int8 kernels, and says so.
    raw = json.loads((tiny_quantized_bundle / "manifest.json").read_text())
    assert raw["onnx_int8_saturation"]["risky_weight_pairs"] == 0


def test_verify_passes_here_prints_the_table_and_writes_nothing(tiny_quantized_bundle):
    before = {p.name: (p.stat().st_mtime_ns, sha256_of(p)) for p in tiny_quantized_bundle.iterdir()}
    done = _verify_cli(tiny_quantized_bundle)
    assert done.returncode == 0, done.stderr[-2000:]
    for artifact in read_manifest(tiny_quantized_bundle).artifacts:
        assert artifact.file in done.stdout
    assert "this device:" in done.stdout and "build machine:" in done.stdout
    assert "FAIL" not in done.stdout
    after = {p.name: (p.stat().st_mtime_ns, sha256_of(p)) for p in tiny_quantized_bundle.iterdir()}
    assert after == before


def test_the_same_kernels_reproduce_the_build_figures(tiny_quantized_bundle):
    """On the machine that built it, verification measures the build's figures again (bf16
    arithmetic, where the CPU has it, is another computation: the budget bounds it)."""
    built = read_manifest(tiny_quantized_bundle).golden.models
    for check in verify_bundle(tiny_quantized_bundle):
        assert check.passed
        if check.backend == "openvino-bf16":
            continue
        assert check.dice_vs_float == pytest.approx(built[check.file].dice_vs_float, abs=1e-3)


def test_perturbed_int8_onnx_weights_fail_by_name(tiny_quantized_bundle, tmp_path):
    bundle = perturbed_copy(tiny_quantized_bundle, tmp_path)  # model_int8.onnx's weights
    done = _verify_cli(bundle)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "model_int8.onnx on onnx fails on this device" in done.stderr
    assert "Traceback" not in done.stderr
    assert "model_int8.tflite on litert fails" not in done.stderr  # only the changed model
    # The one-model paths: --precision/--backend, and verify=True at load.
    assert _verify_cli(bundle, "--precision", "int8", "--backend", "litert").returncode == 0
    with pytest.raises(VerificationFailed, match=r"model_int8\.onnx on onnx fails"):
        Segmenter.from_bundle(bundle, precision="int8", backend="onnx", verify=True)
    Segmenter.from_bundle(bundle, precision="int8", backend="litert", verify=True)


def test_old_and_tampered_golden_tiles_are_exit_2(tiny_quantized_bundle, tmp_path):
    bundle = _copy(tiny_quantized_bundle, tmp_path)
    golden = bundle / GOLDEN_FILE
    data = golden.read_bytes()
    golden.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    done = _verify_cli(bundle)
    assert done.returncode == 2 and "golden tile file" in done.stderr
    assert "does not match its SHA-256" in done.stderr
    assert "Traceback" not in done.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["golden"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _verify_cli(bundle)
    assert done.returncode == 2 and "has no golden tiles" in done.stderr
    assert "rebuild it with python -m optimize.quantize" in done.stderr
    # precision="auto" on such a bundle takes the gated int8 model and says why.
    assert Segmenter.from_bundle(bundle, backend="litert").precision == "int8"


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_golden_tiles_cut_short_but_rehashed_are_one_line_exit_2(
    tiny_quantized_bundle, tmp_path, keep
):
    """A copy cut short whose manifest hash was updated to match (a bad sync tool, or a hand
    fix) passes the hash check; reading it must still fail as one line, not a zip traceback."""
    bundle = _copy(tiny_quantized_bundle, tmp_path)
    golden = bundle / GOLDEN_FILE
    golden.write_bytes(golden.read_bytes()[: int(golden.stat().st_size * keep)])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["golden"]["sha256"] = sha256_of(golden)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _verify_cli(bundle)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"cannot read golden tiles {golden}" in done.stderr and "re-copy" in done.stderr


def test_auto_picks_the_fastest_verified_model_and_caches_it(
    tiny_quantized_bundle, tmp_path, monkeypatch, caplog
):
    """Timings are planted (speed is not a test's business): the perturbed ONNX int8 would be
    fastest, but fails verification; the next fastest verified model wins, the choice is
    cached outside the bundle and read back without measuring again."""
    import runtime.choice

    bundle = perturbed_copy(tiny_quantized_bundle, tmp_path)  # model_int8.onnx's weights
    planted = {
        "model_int8.onnx on onnx": 1.0,
        "model_fp32.onnx on onnx": 2.0,
        "model_int8.tflite on litert": 3.0,
    }
    timed = []

    def fake_time(models, tile):
        timed.extend(models)
        return {file: planted.get(file, 10.0) for file in models}

    monkeypatch.setattr(runtime.choice, "time_per_tile", fake_time)
    caplog.set_level(logging.INFO, logger="runtime")
    seg = Segmenter.from_bundle(bundle)
    assert (seg.precision, seg.backend.name) == ("fp32", "onnx")
    said = caplog.text
    assert "auto chose model_fp32.onnx on onnx" in said and "fails verification here" in said
    assert not [k for k in timed if k.startswith("model_int8.onnx")]  # failed: not timed
    cached = list(cache_folder().glob("choice-*.json"))
    assert len(cached) == 1 and not list(bundle.glob("choice-*"))
    timed.clear()
    caplog.clear()
    assert Segmenter.from_bundle(bundle).precision == "fp32"
    assert timed == [] and "cached in" in caplog.text
    # Another bundle (another manifest digest) is measured on its own.
    manifest = read_manifest(tiny_quantized_bundle)
    chosen = choose(tiny_quantized_bundle, manifest, refresh=True)
    assert f"{chosen.file} on {chosen.backend}" in planted


def test_auto_with_no_passing_model_is_a_clear_error(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for figures in manifest["golden"]["models"].values():
        figures["dice_vs_float"] = 2.0  # no device can reach these
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"no model of .* passes verification on this device"):
        Segmenter.from_bundle(bundle)


def test_manifest_digest_identifies_the_bundle(tiny_bundle):
    text = (tiny_bundle / "manifest.json").read_bytes()
    assert read_manifest(tiny_bundle).digest == hashlib.sha256(text).hexdigest()


def test_contenders_take_turns_and_each_gets_its_median(monkeypatch):
    import runtime.choice

    monkeypatch.setattr(runtime.choice, "_MIN_SECONDS", 0.0)
    calls = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, batch):
            calls.append(self.name)
            return batch

    times = runtime.choice.time_per_tile({"a": Fake("a"), "b": Fake("b")}, np.zeros((4, 4, 1)))
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    assert calls == ["a", "b"] * 5  # turn by turn, five runs each


def test_memory_measured_on_the_device_is_what_the_runtime_plans_with(tiny_quantized_bundle):
    from runtime.cache import device_lines, save_device_lines
    from runtime.memory import MB, ModelMemory

    done = _verify_cli(tiny_quantized_bundle, "--precision", "int8", "--memory")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "measured here" in done.stdout and "model_int8.onnx" in done.stdout
    manifest = read_manifest(tiny_quantized_bundle)
    lines = device_lines(manifest)  # the cache the runtime reads (a test folder here)
    assert set(lines) == {"model_int8.tflite", "model_int8.onnx"}
    assert all(line.bytes_per_pixel > 0 for line in lines.values())
    # A device whose kernels need more memory a pixel (twice the budget for a 256 px image):
    # the budget that runs it in one pass on the manifest's line tiles it on this device's.
    built = manifest.artifact("int8", "tflite").memory
    budget = built.mb(256 * 256) * 1.5
    before = Segmenter.from_bundle(tiny_quantized_bundle, "int8", "litert", max_memory_mb=budget)
    assert before.plan(256, 256).count == 1
    hungry = ModelMemory(built.base_mb, (2 * budget - built.base_mb) * MB / (256 * 256))
    save_device_lines(manifest, {"model_int8.tflite": hungry})
    after = Segmenter.from_bundle(tiny_quantized_bundle, "int8", "litert", max_memory_mb=budget)
    assert after.memory == hungry and after.plan(256, 256).count > 1
