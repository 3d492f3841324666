"""One YAML for the whole chain: each command reads its own sections and ignores the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import stage_config
from runtime.errors import UserError

CHAIN = """
model: {base_filters: 8, depth: 3}
data: {source: synthetic, synthetic_count: 12}
train: {input_size: 128, epochs: 2}
prune: {method: magnitude, sparsity: 0.7}
quantize: {qat_epochs: 1, learning_rate: 1.0e-5}
runtime: {precision: int8, max_memory_mb: 200, overlay: true}
benchmarks: {sizes: [256], end_to_end_sizes: [256, 512], min_runs: 3}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(text)
    return path


def test_every_command_reads_its_own_sections_of_one_file(tmp_path):
    from benchmarks.config import BenchmarkConfig
    from optimize.prune import PruneConfig
    from optimize.quantize import QuantizeConfig
    from runtime.predict import PredictConfig, parse_args
    from train.cli import parse_args as train_args
    from train.cli import resolve_configs

    chain = _write(tmp_path, CHAIN)
    model, data, train = resolve_configs(train_args(["--config", str(chain), "--dry-run"]))
    assert (model.base_filters, model.depth, data.synthetic_count) == (8, 3, 12)
    assert (train.input_size, train.epochs) == (128, 2)
    assert stage_config(PruneConfig, chain, "prune", {}).sparsity == 0.7
    assert stage_config(QuantizeConfig, chain, "quantize", {}).qat_epochs == 1
    bench = stage_config(BenchmarkConfig, chain, "benchmarks", {})
    assert bench.sizes == (256,) and bench.end_to_end_sizes == (256, 512)
    flags = vars(parse_args(["b", "i.png", "--out", "o", "--config", str(chain), "--threads", "2"]))
    runtime = stage_config(PredictConfig, chain, "runtime", flags)
    assert (runtime.precision, runtime.max_memory_mb, runtime.overlay) == ("int8", 200, True)
    assert runtime.threads == 2  # a flag overrides the file


def test_an_unknown_key_is_an_error_only_for_the_command_whose_section_has_it(tmp_path):
    from optimize.prune import PruneConfig
    from optimize.quantize import QuantizeConfig

    chain = _write(tmp_path, CHAIN.replace("sparsity: 0.7", "sparsity: 0.7, sparsty: 0.9"))
    with pytest.raises(UserError, match=r"unknown PruneConfig field.* sparsty"):
        stage_config(PruneConfig, chain, "prune", {})
    assert stage_config(QuantizeConfig, chain, "quantize", {}).qat_epochs == 1  # not its section


def test_a_key_outside_every_section_is_named(tmp_path):
    from optimize.prune import PruneConfig

    chain = _write(tmp_path, CHAIN + "sparsity: 0.9\n")
    with pytest.raises(UserError, match="sparsity is no section: put each setting under one of"):
        stage_config(PruneConfig, chain, "prune", {})


def test_a_per_stage_file_without_sections_still_works(tmp_path):
    from optimize.prune import PruneConfig

    flat = _write(tmp_path, "method: magnitude\nsparsity: 0.6\n")
    assert stage_config(PruneConfig, flat, "prune", {"sparsity": 0.8}).sparsity == 0.8
    assert stage_config(PruneConfig, flat, "prune", {}).sparsity == 0.6


def test_predict_reads_its_runtime_section(tiny_bundle, tmp_path):
    import numpy as np
    from PIL import Image

    from runtime.predict import main, parse_args

    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "a.png")
    argv = [str(tiny_bundle), str(images), "--out", str(tmp_path / "out"), "--config"]
    chain = _write(tmp_path, CHAIN.replace("precision: int8", "precision: fp32"))
    assert main(parse_args([*argv, str(chain)])) == 0
    assert (tmp_path / "out" / "a_overlay.png").exists()  # the section's overlay: true
    bad = _write(tmp_path, "runtime: {max_memory_mb: 0}\n")
    assert main(parse_args([*argv, str(bad), "--overwrite"])) == 2


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("train:\n  epochs: 3\n  lr: [1, 2\nmodel: {a: b}\n", "line 4, column 6"),
        ("runtime:\n\tprecision: int8\n", "line 2, column 1"),
        ("prune: {sparsity: 0.5}\nmethod\n", "line 3, column 1"),
    ],
)
def test_a_file_that_does_not_parse_is_one_line_naming_where(tmp_path, text, place):
    from optimize.prune import PruneConfig

    chain = _write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        stage_config(PruneConfig, chain, "prune", {})
    message = str(caught.value)
    assert "\n" not in message  # PyYAML's own message spans several lines with a caret
    assert message.startswith(f"--config {chain} {place}: ")
