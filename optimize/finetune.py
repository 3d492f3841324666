"""A training run, loaded back, and short fine-tuning on its own data (for pruning and QAT).

Fine-tuning reuses the training pipeline as is: the same samples, split, pre-processing, crops
and augmentation, so a pruned or quantized model sees exactly what the float model saw.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from optimize.configs import check_unlabelled_images
from runtime.errors import UserError
from runtime.preprocess import Preprocessing
from train.config import DataConfig, ModelConfig, TrainConfig
from train.data import Sample, load_samples, split_samples
from train.data.folder import load_images
from train.losses import DiceScore, IoUScore, distilled, make_loss
from train.model import output_size
from train.pipeline import (
    raw_validation_tiles,
    steps_to_cover,
    train_dataset,
    validation_dataset,
    validation_tiles,
    with_teacher,
)
from train.tfk import keras


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished `python -m train` folder: its configs, pre-processing and data."""

    folder: Path
    model_config: ModelConfig
    data_config: DataConfig
    train_config: TrainConfig
    preprocessing: Preprocessing
    # Distillation: fine-tuning also learns the teacher's probabilities (the float model being
    # compressed), weighted by `distill`; without `labels`, from them alone (label-free).
    teacher: keras.Model | None = None
    distill: float = 0.0
    labels: bool = True
    images: Path | None = None  # label-free: fine-tune on this folder's images, not the run's

    def distilling(
        self, teacher: keras.Model, weight: float, labels: bool = True, images: str | Path = ""
    ) -> Run:
        """This run with fine-tuning that learns from `teacher` (weight 0 and labels: none),
        on the images of folder `images` when given (label-free only: they have no labels)."""
        if weight < 0:
            raise UserError(f"distill must be >= 0, got {weight:g}")
        check_unlabelled_images(str(images), label_free=not labels)
        return dataclasses.replace(
            self,
            teacher=teacher,
            distill=weight,
            labels=labels,
            images=Path(images) if images else None,
        )

    @property
    def distills(self) -> bool:
        return self.teacher is not None and (self.distill > 0 or not self.labels)

    @classmethod
    def load(cls, folder: str | Path) -> Run:
        folder = Path(folder)
        path = folder / "config.json"
        if not path.is_file():
            raise UserError(
                f"{folder} has no config.json: give the --out folder of a finished `python -m train`"
            )
        try:
            raw = json.loads(path.read_text())
            return cls(
                folder,
                ModelConfig.from_dict(raw["model"]),
                DataConfig.from_dict(raw["data"]),
                TrainConfig.from_dict(raw["train"]),
                Preprocessing.from_dict(raw["preprocessing"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UserError(
                f"{path} is not a training run's config ({error}): re-run the training"
            ) from None

    @property
    def raw_config(self) -> dict:
        return json.loads((self.folder / "config.json").read_text())

    @property
    def tile_size(self) -> int:
        return self.train_config.input_size

    @property
    def output_tile_size(self) -> int:
        return output_size(self.model_config, self.tile_size)

    @cached_property
    def splits(self) -> tuple[list[Sample], list[Sample]]:
        """Training and validation samples; with `images`, those images train (and calibrate)
        instead, and the run's own validation images still score."""
        samples = load_samples(self.data_config, self.model_config.classes, self.train_config.seed)
        train, validation = split_samples(samples, self.data_config.val_fraction)
        return (load_images(self.images) if self.images else train), validation

    def load_model(self, name: str = "model.keras") -> keras.Model:
        return load_keras_model(self.folder / name)

    def calibration_tiles(self, limit: int = 32) -> list[np.ndarray]:
        """Normalized input tiles of the training images, as the runtime will feed them: of at
        most `limit` images spread over the set, so a large data set is not read whole."""
        train = self.splits[0]
        chosen = train[:: max(1, -(-len(train) // limit))]
        images, _ = validation_tiles(
            chosen, self.preprocessing, self.tile_size, self.output_tile_size
        )
        step = max(1, len(images) // limit)
        return list(images[::step][:limit])

    def steps_per_epoch(self, given: int | None = None) -> int:
        """Fine-tuning steps per epoch: as given, else as the training run had them."""
        return (
            given
            or self.train_config.steps_per_epoch
            or steps_to_cover(self.splits[0], self.output_tile_size, self.train_config.batch_size)
        )

    def raw_validation_tiles(self) -> np.ndarray:
        """The validation tiles as raw pixels, in the order of `validation_tiles`."""
        return raw_validation_tiles(
            self.splits[1], self.tile_size, self.output_tile_size, self.preprocessing.channels
        )[0]

    def validation_tiles(self) -> tuple[np.ndarray, np.ndarray]:
        return validation_tiles(
            self.splits[1], self.preprocessing, self.tile_size, self.output_tile_size
        )


def load_keras_model(path: Path) -> keras.Model:
    """Loads a .keras model for inference; a missing or corrupt file is a UserError."""
    if not path.is_file():
        raise UserError(f"model {path} does not exist: train one with `python -m train`")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise UserError(
            f"cannot load model {path} ({type(error).__name__}: corrupt or not a Keras model): retrain or re-copy it"
        ) from None


def compile_for_fine_tuning(
    model: keras.Model,
    run: Run,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
) -> None:
    classes = run.model_config.classes
    loss = make_loss(run.train_config.loss, classes)
    if run.distills:
        loss = distilled(loss, classes, run.distill, run.labels)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=[DiceScore(classes), IoUScore(classes)],
    )


def fine_tune(
    model: keras.Model,
    run: Run,
    epochs: int,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    steps_per_epoch: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | None = None,
) -> keras.callbacks.History:
    """Trains `model` (pruning- or QAT-wrapped) on the run's data for a few epochs."""
    train_cfg = run.train_config
    batch = train_cfg.batch_size
    train_samples, val_samples = run.splits
    compile_for_fine_tuning(model, run, learning_rate)
    train = train_dataset(train_samples, run.preprocessing, train_cfg, run.output_tile_size, batch)
    validation = validation_dataset(
        val_samples, run.preprocessing, run.tile_size, run.output_tile_size, batch
    )
    if run.distills:
        train, validation = with_teacher(train, run.teacher), with_teacher(validation, run.teacher)
    return model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=run.steps_per_epoch(steps_per_epoch),
        validation_data=validation,
        callbacks=callbacks or [],
        verbose=_keras_verbosity(verbose),
    )


def _keras_verbosity(verbose: int | None) -> int:
    """Keras' per-epoch lines (2), unless -q raised the package's logging above INFO."""
    if verbose is not None:
        return verbose
    return 2 if logging.getLogger(__name__).isEnabledFor(logging.INFO) else 0
