"""Label-free fine-tuning on a folder of images without labels (`--label-free --images`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimize.finetune import Run, fine_tune
from optimize.prune import main, parse_args
from runtime.errors import UserError
from runtime.image_io import write_tiff_stack
from train.data.folder import ImageOnlySample, load_images
from train.data.synthetic import generate_em
from train.tfk import keras


def _unlabelled(root: Path, count: int = 6, size: int = 80) -> Path:
    """EM-like images the model never saw (another seed), with no label folder."""
    images, _ = generate_em(count, size, seed=123)
    (root / "image").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "image" / f"field-{i}.png")
    return root


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


def _agreement(a: keras.Model, b: keras.Model, tiles: np.ndarray) -> float:
    return float(np.mean((a(tiles).numpy() >= 0.5) == (b(tiles).numpy() >= 0.5)))


@pytest.mark.slow
def test_label_free_fine_tuning_learns_from_an_unlabelled_folder(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = Run.load(tiny_run)
    teacher = run.load_model()
    folder = _unlabelled(tmp_path / "field")
    taught = run.distilling(teacher, 0.0, labels=False, images=folder)
    train, validation = taught.splits
    assert all(isinstance(s, ImageOnlySample) for s in train) and len(train) == 6
    assert [s.name for s in validation] == [s.name for s in run.splits[1]]  # the run's, labelled

    student = keras.models.clone_model(teacher)
    rng = np.random.default_rng(0)
    student.set_weights([w + rng.normal(0, 0.3 * (w.std() + 1e-3), w.shape).astype(w.dtype)
                         for w in teacher.get_weights()])  # fmt: skip
    tiles = run.validation_tiles()[0]
    before = _agreement(student, teacher, tiles)
    fine_tune(student, taught, 2, 3e-3, 10, verbose=0)
    assert _agreement(student, teacher, tiles) > before + 0.02, before

    with pytest.raises(UserError, match="needs --label-free"):
        run.distilling(teacher, 1.0, labels=True, images=folder)


@pytest.mark.slow
def test_prune_fine_tunes_label_free_on_a_folder(tiny_run: Path, tmp_path: Path) -> None:
    folder = _unlabelled(tmp_path / "field")
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "pruned"),
            "--sparsity", "0.5", "--epochs", "1", "--steps-per-epoch", "3",
            "--label-free", "--images", str(folder)]  # fmt: skip

    assert main(parse_args(argv)) == 0

    assert (tmp_path / "pruned" / "model.keras").is_file()
