"""`python -m train`: presets, dry run, config files, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train.cli import main, parse_args, resolve_configs

ROOT = Path(__file__).resolve().parents[2]


def test_list_presets_names_paper_small_and_tiny(capsys):
    assert main(parse_args(["--list-presets"])) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["paper", "small", "tiny"]


def test_dry_run_of_the_paper_unet_prints_parameters_and_output_size():
    done = subprocess.run(
        [sys.executable, "-m", "train", "--preset", "paper", "--padding", "valid", "--no-batch-norm",
         "--classes", "2", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "31,030,658 parameters" in done.stdout
    assert "input 572x572x1 -> output 388x388x2" in done.stdout


def test_config_file_sets_defaults_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {preset: tiny, classes: 3}\ntrain: {epochs: 7, batch_size: 2}\ndata: {val_fraction: 0.5}\n"
    )
    model, data, train = resolve_configs(parse_args(["--config", str(config), "--epochs", "9"]))
    assert (model.classes, model.base_filters, train.epochs, train.batch_size) == (3, 4, 9, 2)
    assert data.val_fraction == 0.5 and train.input_size == 0  # the data decide


def test_written_run_config_is_a_valid_config_file(tmp_path):
    written = tmp_path / "config.json"
    written.write_text(
        '{"model": {"depth": 2}, "data": {}, "train": {"padding_typo": 1}, "versions": {"numpy": "2"}}'
    )
    assert main(parse_args(["--config", str(written), "--dry-run"])) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--preset", "huge"], "unknown preset 'huge': choose one of paper, small, tiny"),
        (["--data", "/no/such/folder"], "data folder /no/such/folder does not exist"),
        (["--padding", "valid", "--input-size", "570", "--preset", "paper"], "use 556 or 572"),
        (["--loss", "ce_dice"], "ce_dice needs a softmax head"),
        (["--config", "/no/such.yaml"], "cannot read --config /no/such.yaml"),
        (["--jit"], "--jit cannot compile the gradient of nearest up-sampling"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    assert main(parse_args([*argv, "--out", str(tmp_path / "out")])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_data_folder_from_the_command_line_exits_2_without_traceback(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "train", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "holds no PNG or TIFF images" in done.stderr and "Traceback" not in done.stderr
