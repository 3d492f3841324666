"""Images without labels for label-free fine-tuning (`--label-free --images`): how a folder is
read, and the refusal without --label-free (the fine-tuning itself: test_distill.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimize.prune import main, parse_args
from runtime.errors import UserError
from runtime.image_io import write_tiff_stack
from train.data.folder import load_images


def test_images_load_in_name_order_with_stack_pages_and_an_empty_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30), np.uint8)).save(tmp_path / "slice10.png")
    Image.fromarray(rng.integers(0, 255, (20, 50, 3), np.uint8)).save(tmp_path / "slice2.png")
    write_tiff_stack(tmp_path / "stack.tif", [rng.integers(0, 255, (16, 16), np.uint8)] * 2)

    samples = load_images(tmp_path)

    assert [s.name for s in samples] == ["slice2", "slice10", "stack#0", "stack#1"]
    assert [s.shape for s in samples] == [(20, 50), (40, 30), (16, 16), (16, 16)]
    assert samples[0].image.shape == (20, 50, 3)
    assert not samples[1].mask.any() and samples[1].mask.shape == (40, 30)


def test_a_missing_or_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist: give a folder of images"):
        load_images(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"no images \(\.png"):
        load_images(tmp_path)


def test_cli_images_without_label_free_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    argv = ["--model", str(tmp_path / "model.keras"), "--out", str(tmp_path / "out")]

    assert main(parse_args([*argv, "--images", str(tmp_path)])) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"images {tmp_path} have no labels" in err and "--label-free" in err
