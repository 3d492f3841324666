"""`python -m train --teacher MODEL`: a distilled training learns the teacher's probabilities,
and a teacher that cannot teach this run is one line and exit code 2, before the run folder
is touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.preprocess import Normalization, Preprocessing
from train.cli import main, parse_args
from train.config import DataConfig, TrainConfig, preset
from train.data import load_samples, split_samples
from train.model import build_unet
from train.pipeline import validation_tiles
from train.tfk import keras
from train.trainer import run_training

TINY = preset("tiny")
RUN = ["--preset", "tiny", "--synthetic-count", "4", "--synthetic-size", "32", "--epochs", "1"]


def _saved(model: keras.Model, folder: Path, normalization: str | None = None) -> Path:
    folder.mkdir()
    model.save(folder / "model.keras")
    if normalization:
        prep = {"channels": 1, "mean": 0.5, "std": 0.2, "normalization": normalization}
        (folder / "config.json").write_text(json.dumps({"preprocessing": prep}))
    return folder / "model.keras"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "none.keras", "is not a file: give a trained run's model.keras"),
        (
            lambda d: (d / "junk.keras").write_text("no") and d / "junk.keras",
            "is not a Keras model",
        ),
        (
            lambda d: _saved(build_unet(TINY.replace(classes=3)), d / "three"),
            "to (1, 32, 32, 3), the student to (1, 32, 32, 1)",
        ),
        (
            lambda d: _saved(build_unet(TINY), d / "per-image", "image"),
            "was trained on other inputs (image normalization",
        ),
    ],
    ids=["missing", "not-keras", "other-classes", "other-normalization"],
)
def test_a_teacher_that_cannot_teach_is_one_line_and_touches_nothing(
    make, message, tmp_path, capsys
):
    teacher = make(tmp_path)
    out = tmp_path / "out"
    argv = [*RUN, "--input-size", "32", "--normalize", "dataset", "--teacher", str(teacher)]
    assert main(parse_args([*argv, "--out", str(out)])) == 2
    err = capsys.readouterr().err  # the data's summary line, then the error
    assert err.splitlines()[-1].startswith("error: ") and message in err.splitlines()[-1]
    assert "Traceback" not in err and not out.exists()


def _divergence(teacher: keras.Model, student: keras.Model, tiles: np.ndarray) -> float:
    """Mean binary KL(teacher || student) per pixel."""
    t = np.clip(teacher(tiles, training=False).numpy(), 1e-6, 1 - 1e-6)
    s = np.clip(student(tiles, training=False).numpy(), 1e-6, 1 - 1e-6)
    return float(np.mean(t * np.log(t / s) + (1 - t) * np.log((1 - t) / (1 - s))))


def _inverted(path: Path) -> Path:
    """The model at `path` with its head negated: it calls background what the labels call
    foreground, so only a student that listens to it can agree with it."""
    model = keras.models.load_model(path, compile=False)
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([-kernel, -bias])
    out = path.parent.parent / "inverted"
    out.mkdir()
    model.save(out / "model.keras")
    (out / "config.json").write_text((path.parent / "config.json").read_text())
    return out / "model.keras"


@pytest.mark.slow
def test_a_distilled_student_follows_its_teacher_against_the_labels(tmp_path):
    """A patch-2 student of a patch-1 teacher that contradicts the labels: the same steps with
    the teacher's probabilities in the loss bring the student's towards them."""
    data = DataConfig(synthetic_count=8, synthetic_size=96, normalization=Normalization.DATASET)
    train = TrainConfig(
        input_size=64,
        batch_size=4,
        epochs=3,
        steps_per_epoch=10,
        learning_rate=1e-2,
        field_augment=False,
    )
    run_training(TINY, data, train, tmp_path / "teacher", verbose=0)
    teacher_path = _inverted(tmp_path / "teacher" / "model.keras")
    student = TINY.replace(patch=2)
    run_training(student, data, train, tmp_path / "plain", verbose=0)
    taught = train.replace(teacher=str(teacher_path), distill=10.0)
    run_training(student, data, taught, tmp_path / "taught", verbose=0)
    recorded = json.loads((tmp_path / "taught" / "config.json").read_text())["train"]
    assert recorded["teacher"] == str(teacher_path) and recorded["distill"] == 10.0
    prep = Preprocessing.from_dict(
        json.loads((tmp_path / "plain" / "config.json").read_text())["preprocessing"]
    )
    _, validation = split_samples(load_samples(data, 1, 0), data.val_fraction)
    tiles, _ = validation_tiles(validation, prep, 64, 64)
    load = keras.models.load_model
    teacher = load(teacher_path, compile=False)
    plain = _divergence(teacher, load(tmp_path / "plain" / "model.keras", compile=False), tiles)
    near = _divergence(teacher, load(tmp_path / "taught" / "model.keras", compile=False), tiles)
    assert near < 0.5 * plain, (near, plain)
