"""The paper's U-Net layout (valid padding, 2-class softmax, no batch norm) at tiny widths through
every stage: train, prune, quantize, the runtime and the benchmarks, each through its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_the_paper_layout_goes_through_the_whole_chain(tmp_path):
    from benchmarks.cli import main as bench_main
    from benchmarks.cli import parse_args as bench_args
    from benchmarks.compare import load_report
    from optimize.prune import main as prune_main
    from optimize.prune import parse_args as prune_args
    from optimize.quantize import main as quantize_main
    from optimize.quantize import parse_args as quantize_args
    from runtime import Segmenter
    from runtime.bundle import read_manifest
    from train.cli import main as train_main
    from train.cli import parse_args as train_args

    run, sparse, bundle = tmp_path / "run", tmp_path / "sparse", tmp_path / "bundle"
    paper = ["--preset", "tiny", "--padding", "valid", "--no-batch-norm", "--classes", "2"]
    data = ["--synthetic-count", "8", "--synthetic-size", "96"]
    steps = ["--batch-size", "4", "--steps-per-epoch", "10", "--learning-rate", "0.01"]
    argv = [*paper, *data, *steps, "--input-size", "60", "--epochs", "4", "--out", str(run)]
    assert train_main(train_args(argv)) == 0
    config = json.loads((run / "config.json").read_text())["model"]
    assert (config["padding"], config["batch_norm"], config["classes"]) == ("valid", False, 2)

    argv = ["--model", str(run / "model.keras"), "--out", str(sparse), "--method", "magnitude"]
    assert prune_main(prune_args([*argv, "--sparsity", "0.5", "--epochs", "1"])) == 0

    argv = ["--model", str(sparse / "model.keras"), "--out", str(bundle), "--qat-epochs", "1"]
    # Four epochs of a tiny paper layout find no membrane yet: the gate would refuse the model
    # as useless (tests/test_rare_objects.py checks that); here the chain's plumbing is tested.
    argv += ["--allow-useless"]
    assert quantize_main(quantize_args([*argv, "--steps-per-epoch", "5"])) == 0
    manifest = read_manifest(bundle)
    assert (manifest.input_size, manifest.output_size, manifest.classes) == (60, 20, 2)
    assert manifest.activation == "softmax" and manifest.golden is not None
    parity = json.loads((bundle / "manifest.json").read_text())["parity"]["models"]
    assert parity["int8"]["agreement_with_float"] >= 0.9
    assert parity["int8-onnx"]["agreement_with_float"] >= 0.9

    image = np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8)
    for precision, backend in (("int8", "litert"), ("int8", "onnx"), ("auto", "auto")):
        segmenter = Segmenter.from_bundle(bundle, precision, backend, verify=precision != "auto")
        result = segmenter.predict(image)
        assert result.mask.shape == (50, 70) and result.probabilities.shape == (50, 70, 2)
        assert np.allclose(result.probabilities.sum(-1), 1, atol=0.02)  # softmax, dequantized
    verify = subprocess.run(
        [sys.executable, "-m", "runtime.verify", str(bundle)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stderr[-2000:]

    out = tmp_path / "report"
    argv = ["--bundle", str(bundle), "--out", str(out), "--sizes", "60", "--threads", "1"]
    argv += ["--min-runs", "3", "--seconds", "0", "--images", "2", "--batch", "0"]
    # End to end at small sides: a 20 px output tile makes a 2048 px image 10^4 runs.
    argv += ["--end-to-end-sizes", "60,100", "--folder-images", "2"]
    # Tiny models need not meet the speed targets: the chain, not the speed, is under test.
    assert bench_main(bench_args([*argv, "--no-cold-start", "--no-fail-on-target"])) == 0
    report = load_report(out)
    assert {"keras fp32", "tflite int8", "onnx int8"} <= {v.name for v in report.variants}
    assert report.accuracy.variants["tflite int8"].overall.agreement_with_float > 0.5
    # Fixed 60 px tiles with 20 px outputs: a 100 px image is several runs, stitched.
    runs = {(e.variant, e.size): e.count for e in report.end_to_end.sizes}
    assert runs[("tflite int8", 60)] >= 1 and runs[("tflite int8", 100)] > 1
