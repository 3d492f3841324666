"""Distillation in fine-tuning: the teacher's probabilities ride with the labels, and a
label-free fine-tuning pulls a perturbed student back toward its teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimize.finetune import Run, fine_tune
from optimize.prune import main, parse_args
from runtime.errors import UserError
from train.data.folder import ImageOnlySample
from train.data.synthetic import generate_em
from train.pipeline import validation_dataset, with_teacher
from train.tfk import keras

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Run:
    return Run.load(tiny_run)


def test_batches_carry_the_label_then_the_teachers_probabilities(run: Run) -> None:
    teacher = run.load_model()
    tiles = validation_dataset(
        run.splits[1], run.preprocessing, run.tile_size, run.output_tile_size, 4
    )
    images, targets = next(iter(with_teacher(tiles, teacher)))
    assert targets.shape[-1] == 2  # label, then the sigmoid's probability
    np.testing.assert_array_equal(targets[..., :1], next(iter(tiles))[1].numpy())
    np.testing.assert_allclose(targets[..., 1:], teacher(images, training=False), atol=1e-6)


def _agreement(a: keras.Model, b: keras.Model, tiles: np.ndarray) -> float:
    return float(np.mean((a(tiles).numpy() >= 0.5) == (b(tiles).numpy() >= 0.5)))


def _unlabelled(root: Path, count: int = 6, size: int = 80) -> Path:
    """EM-like images the model never saw (another seed), with no label folder."""
    images, _ = generate_em(count, size, seed=123)
    (root / "image").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "image" / f"field-{i}.png")
    return root


@pytest.mark.parametrize("images", ["the run's", "an unlabelled folder"])
def test_label_free_fine_tuning_pulls_the_student_toward_its_teacher(
    run: Run, images: str, tmp_path: Path
) -> None:
    teacher = run.load_model()
    folder = _unlabelled(tmp_path / "field") if images != "the run's" else ""
    taught = run.distilling(teacher, 0.0, labels=False, images=folder)
    if folder:  # those images train; the run's labelled validation images still score
        assert all(isinstance(s, ImageOnlySample) for s in taught.splits[0])
        assert [s.name for s in taught.splits[1]] == [s.name for s in run.splits[1]]
    student = keras.models.clone_model(teacher)
    rng = np.random.default_rng(0)
    student.set_weights([w + rng.normal(0, 0.3 * (w.std() + 1e-3), w.shape).astype(w.dtype)
                         for w in teacher.get_weights()])  # fmt: skip
    tiles = run.validation_tiles()[0]
    before = _agreement(student, teacher, tiles)
    fine_tune(student, taught, 2, 3e-3, 10, verbose=0)
    assert _agreement(student, teacher, tiles) > before + 0.02, before


def test_a_negative_weight_and_unlabelled_images_with_labels_are_refused(run: Run) -> None:
    with pytest.raises(UserError, match="distill must be >= 0"):
        run.distilling(run.load_model(), -1.0)
    with pytest.raises(UserError, match="needs --label-free"):
        run.distilling(run.load_model(), 1.0, labels=True, images="field")


def test_prune_distills_from_the_float_model(tiny_run: Path, tmp_path: Path) -> None:
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "pruned"),
            "--sparsity", "0.5", "--epochs", "1", "--steps-per-epoch", "4", "--distill", "1"]  # fmt: skip
    assert main(parse_args(argv)) == 0
    assert (tmp_path / "pruned" / "model.keras").is_file()


def test_prune_fine_tunes_label_free_on_a_folder(tiny_run: Path, tmp_path: Path) -> None:
    folder = _unlabelled(tmp_path / "field")
    argv = ["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "pruned"),
            "--sparsity", "0.5", "--epochs", "1", "--steps-per-epoch", "3",
            "--label-free", "--images", str(folder)]  # fmt: skip
    assert main(parse_args(argv)) == 0
    assert (tmp_path / "pruned" / "model.keras").is_file()
