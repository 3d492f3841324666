"""The teacher of a distilled training (`python -m train --teacher MODEL`): a trained model
whose probabilities on every crop join the labels (`train.pipeline.with_teacher`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.preprocess import Normalization, Preprocessing
from train.config import ModelConfig
from train.tfk import keras


def _check_same_inputs(path: Path, prep: Preprocessing) -> None:
    """The teacher must see the crops as it was trained to: the same normalization."""
    config = path.parent / "config.json"
    if not config.is_file():
        return  # a model without its run: nothing to compare, the shapes are still checked
    theirs = Preprocessing.from_dict(json.loads(config.read_text())["preprocessing"])
    same = theirs.normalization == prep.normalization and theirs.channels == prep.channels
    if same and prep.normalization is Normalization.DATASET:
        same = np.allclose((theirs.mean, theirs.std), (prep.mean, prep.std), rtol=0.01)
    if not same:
        raise UserError(
            f"--teacher {path} was trained on other inputs ({theirs.normalization} "
            f"normalization, mean {theirs.mean:g}, std {theirs.std:g}) than this run "
            f"({prep.normalization}, mean {prep.mean:g}, std {prep.std:g}): distil from a "
            "model trained on the same data with the same --normalize"
        )


def load_teacher(
    path: str, prep: Preprocessing, config: ModelConfig, in_size: int, out_size: int
) -> keras.Model:
    """The teacher at `path`, checked to map this run's crops to the student's output shape.

    Raises:
        UserError: an unreadable model, other inputs, or another output shape.
    """
    where = Path(path)
    if not where.is_file():
        raise UserError(f"--teacher {path} is not a file: give a trained run's model.keras")
    try:
        teacher = keras.models.load_model(where, compile=False)
    except Exception as error:  # Keras raises many types for files it cannot read
        raise UserError(
            f"--teacher {path} is not a Keras model ({type(error).__name__}): give a trained "
            "run's model.keras"
        ) from None
    _check_same_inputs(where, prep)
    crop = np.zeros((1, in_size, in_size, config.channels), np.float32)
    want = (1, out_size, out_size, config.classes)
    try:
        got = tuple(teacher(crop, training=False).shape)
    except (ValueError, TypeError) as error:
        got = f"an error ({str(error).splitlines()[0][:80]})"
    if got != want:
        raise UserError(
            f"--teacher {path} maps a {in_size} px crop of {config.channels} channel(s) to "
            f"{got}, the student to {want}: distil from a model with the same channels, "
            "classes and padding"
        )
    teacher.trainable = False
    return teacher
