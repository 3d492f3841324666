"""One training run: data, model, `fit` with the callbacks that make it resumable, artifacts.

The output folder after a finished run:

    config.json    every config that made the model, the measured pre-processing, versions
    model.keras    the final float32 model (whatever precision it trained in)
    best.keras     the checkpoint with the best validation Dice; best.json says which epoch
    history.csv    one row per epoch; logs/ holds TensorBoard's
    metrics.json   the final and the best model on every validation image at full size

While it runs, backup/ holds Keras' BackupAndRestore state: re-running the same command after
Ctrl-C or kill -9 continues from the last finished epoch. backup/ goes once model.keras is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.io import atomic_path, check_out_folder, write_json_atomic
from runtime.metrics import masks_from_probabilities, segmentation_scores
from runtime.preprocess import Preprocessing, measure_preprocessing, normalize
from runtime.tiling import predict_tiled
from runtime.versions import package_versions
from train import fingerprint, usefulness
from train.config import DataConfig, Loss, ModelConfig, Padding, TrainConfig, Upsampling
from train.data import Sample, load_samples, split_samples
from train.distribute import (
    devices_in_words,
    is_chief,
    make_strategy,
    precision_policy,
    wants_mixed_precision,
)
from train.losses import DiceScore, IoUScore, distilled, make_loss
from train.model import build_unet, checked_output_size, output_size
from train.pipeline import steps_to_cover, train_dataset, validation_dataset, with_teacher
from train.schedule import EpochDice, WeightAverage, make_learning_rate
from train.teacher import load_teacher
from train.tfk import keras

log = logging.getLogger(__name__)

_ARTIFACTS = (
    "model.keras",
    "best.keras",
    "best.json",
    "history.csv",
    "metrics.json",
    "config.json",
)
_FOLDERS = ("logs", "backup")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says what was kept and what to change."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    out: Path
    epochs: int
    metrics: dict[str, Any]  # empty on workers that are not the chief
    weights_sha256: str  # of the final weights: the same on every worker of a cluster
    # One line when the better of final and best does no better than a trivial segmenter.
    useless: str | None = None


def _run_configs(model: ModelConfig, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
    return {"model": model.to_dict(), "data": data.to_dict(), "train": train.to_dict()}


def _check_out_dir(out: Path, configs: dict[str, Any], overwrite: bool) -> bool:
    """Checks the output folder without changing it; returns whether an interrupted run there
    will be resumed."""
    check_out_folder(out, overwrite, "model.keras", what="a trained model")
    if overwrite:
        return False
    resuming = (out / "backup").is_dir() and (out / "config.json").exists()
    if resuming:
        previous = json.loads((out / "config.json").read_text())
        changed = _changed_fields(previous, configs)
        if changed:
            raise UserError(
                f"{out} holds an interrupted run with other settings ({', '.join(changed)}): "
                "re-run with the same settings to resume it, or pass --overwrite"
            )
    return resuming


def _make_out_dir(out: Path, resuming: bool) -> None:
    """Clears what an earlier run left unless it is resumed, and checks the folder takes files.
    Called once the data has loaded: bad data neither writes a folder nor loses a run."""
    if not resuming:
        _remove_artifacts(out)  # an overwritten run, or one that ended before its first epoch
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as error:
        raise UserError(
            f"cannot write to --out {out} ({error.strerror}): choose another folder"
        ) from None


def _changed_fields(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"{section}.{key}"
        for section, fields in current.items()
        for key, value in fields.items()
        if previous.get(section, {}).get(key) != value
    ]


def _remove_artifacts(out: Path) -> None:
    for name in _ARTIFACTS:
        (out / name).unlink(missing_ok=True)
    for name in _FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)


def float32_copy(
    model: keras.Model,
    config: ModelConfig,
    input_size: int | None,
    weights: list[np.ndarray] | None = None,
) -> keras.Model:
    """The same weights (or `weights`) in a float32 model outside any strategy: what later
    stages load."""
    with precision_policy(False):
        copy = build_unet(config, input_size)
    copy.set_weights(model.get_weights() if weights is None else weights)
    return copy


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of the weights' bytes: workers that trained in step print the same one."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def save_model_atomic(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the float32 model whenever validation Dice improves, atomically.

    Unlike ModelCheckpoint it writes through a temporary file and remembers the best score in
    best.json, so a resumed run does not overwrite a better checkpoint of its first part.
    """

    def __init__(self, out: Path, export, write: bool, monitor: str = "val_dice") -> None:
        super().__init__()
        self.path, self.state = out / "best.keras", out / "best.json"
        self.export, self.write, self.monitor = export, write, monitor
        self.best = -math.inf
        if self.state.exists():
            self.best = json.loads(self.state.read_text())[monitor]

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        value, loss = logs.get(self.monitor), logs.get("loss", math.nan)
        if value is None or not math.isfinite(value) or not math.isfinite(loss):
            return  # a diverged epoch never becomes the best
        if value > self.best:
            self.best = value
            # Every worker makes and saves the copy: creating its variables and reading its batch
            # norms' statistics go through the strategy's collectives, which fail or hang when
            # only the chief takes part. The other workers save into scratch.
            best = self.export(self.model)
            if self.write:
                save_model_atomic(best, self.path)
                write_json_atomic(self.state, {"epoch": epoch + 1, self.monitor: value})
            else:
                with tempfile.TemporaryDirectory() as scratch:
                    best.save(Path(scratch) / self.path.name)


def _diverged(history: keras.callbacks.History) -> bool:
    losses = history.history.get("loss", [])
    return bool(losses) and not math.isfinite(losses[-1])


def full_image_probabilities(
    model: keras.Model,
    samples: list[Sample],
    prep: Preprocessing,
    config: ModelConfig,
    in_size: int,
) -> Iterator[tuple[Sample, np.ndarray]]:
    """Each image's (H, W, K) probabilities at its full size, one image at a time: the whole
    image for 'same', overlap-tile for 'valid'."""
    out_size = output_size(config, in_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        return model(batch, training=False).numpy()

    for sample in samples:
        image = normalize(sample.image, prep)
        if config.padding is Padding.SAME:
            multiple = config.size_multiple
            h, w = image.shape[:2]
            pad = ((0, -h % multiple), (0, -w % multiple), (0, 0))
            yield sample, predict(np.pad(image, pad, mode="symmetric")[None])[0, :h, :w]
        else:
            yield (
                sample,
                predict_tiled(
                    image,
                    predict,
                    in_size,
                    out_size,
                    overlap=out_size // 8,
                    align=config.size_multiple,
                ),
            )


def evaluate_full_images(
    model: keras.Model,
    samples: list[Sample],
    prep: Preprocessing,
    config: ModelConfig,
    in_size: int,
) -> dict[str, Any]:
    """Scores every image at its full size (threshold 0.5 for a sigmoid head)."""
    per_image, preds, truths = {}, [], []
    for sample, probs in full_image_probabilities(model, samples, prep, config, in_size):
        mask, truth = masks_from_probabilities(probs), sample.mask
        per_image[sample.name] = segmentation_scores(mask, truth, config.classes)
        preds.append(mask.ravel())
        truths.append(truth.ravel())
    pred = np.concatenate(preds)
    overall = segmentation_scores(pred, np.concatenate(truths), config.classes)
    return {
        "overall": overall,
        "predicted_foreground": int(np.count_nonzero(pred)),
        "per_image": per_image,
    }


def usefulness_warning(
    metrics: dict[str, Any],
    val_samples: list[Sample],
    prep: Preprocessing,
    classes: int,
    config: TrainConfig,
) -> tuple[dict[str, Any], str | None]:
    """The trivial segmenters' scores on the validation images, and one line when even the
    better of the run's models (final, best) does no better than they do."""
    base = usefulness.baseline(((normalize(s.image, prep), s.mask) for s in val_samples), classes)
    name = max(metrics, key=lambda m: metrics[m]["overall"]["dice"])
    scores = metrics[name]
    line = usefulness.verdict(scores["overall"]["dice"], scores["predicted_foreground"], base)
    if line is None:
        return base.to_dict(), None
    return base.to_dict(), f"{line} ({name} model): {_likely_fix(config, base)}"


def _likely_fix(config: TrainConfig, base: usefulness.Baseline) -> str:
    """The likeliest fix for a useless model, given its data and the recipe it trained with."""
    rare_recipe = config.loss in (Loss.BATCH_DICE, Loss.TVERSKY) and config.foreground_crops
    if base.foreground_share < fingerprint.RARE_SHARE and not rare_recipe:
        return (
            "for small, rare objects leave --loss and --foreground-crops to the data "
            "(batch_dice, a third of the crops on foreground)"
        )
    return "train more epochs, label more images, or check that the labels mark the objects"


def _stopping(config: TrainConfig) -> str:
    """How the run's length and rate are decided, for the log."""
    if config.patience:
        return f" at most ({config.schedule} rate, early stop after {config.patience} epochs without a better Dice)"
    return f" ({config.schedule} rate)"


def _check_jit(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """XLA has no kernel for the gradient of nearest up-sampling (ResizeNearestNeighborGrad):
    the first step would fail deep in TensorFlow."""
    if train_config.jit and model_config.upsampling is Upsampling.NEAREST:
        raise UserError(
            "--jit cannot compile the gradient of nearest up-sampling (XLA has no "
            "ResizeNearestNeighborGrad kernel): add --upsampling transpose, or leave out --jit"
        )


def _planned(
    samples: list[Sample],
    images: list[np.ndarray],
    model_config: ModelConfig,
    data_config: DataConfig,
    train_config: TrainConfig,
) -> tuple[TrainConfig, DataConfig, dict[str, Any]]:
    """The recipe with the fields left to the data decided by its fingerprint (said in one
    line), and the fingerprint with the plan, for config.json."""
    data_print = fingerprint.measure(samples, model_config.channels, images)
    plan = fingerprint.plan(data_print, model_config, train_config, data_config.normalization)
    log.info(fingerprint.describe(data_print, plan))
    return (
        fingerprint.planned(train_config, plan),
        data_config.replace(normalization=plan.normalization),
        {**data_print.to_dict(), "plan": plan.to_dict()},
    )


def run_training(
    model_config: ModelConfig,
    data_config: DataConfig,
    train_config: TrainConfig,
    out: str | Path,
    overwrite: bool = False,
    verbose: int | None = None,
) -> TrainResult:
    """Trains a U-Net and writes the artifacts described in the module docstring.

    Raises:
        UserError: bad data, sizes, or an output folder that cannot be used.
        TrainingDiverged: the loss became NaN; best.keras keeps the last good checkpoint.
    """
    # First: multi-worker collectives can only be configured before TensorFlow runs an op.
    strategy = make_strategy(train_config.strategy)
    out = Path(out)
    _check_jit(model_config, train_config)
    make_loss(train_config.loss, model_config.classes)  # a loss that misfits the head: now
    if train_config.input_size:
        checked_output_size(model_config, train_config.input_size)
    # Only the chief touches the run folder; other workers' logs go to a scratch folder (Keras
    # keeps their BackupAndRestore state in backup/workertemp_N itself).
    chief = is_chief(strategy)
    if chief:  # a finished run fails now; an interrupted one is compared once the plan is made
        check_out_folder(out, overwrite, "model.keras", what="a trained model")
    train_samples, val_samples = split_samples(
        load_samples(data_config, model_config.classes, train_config.seed),
        data_config.val_fraction,
    )
    # Decoded once for the fingerprint and the mean and std: up to 64 images, spread.
    measured = [s.image for s in fingerprint.spread(train_samples)]
    train_config, data_config, data_print = _planned(
        train_samples, measured, model_config, data_config, train_config
    )
    prep = measure_preprocessing(measured, model_config.channels, data_config.normalization)
    loss = make_loss(train_config.loss, model_config.classes)
    in_size = train_config.input_size
    out_size = checked_output_size(model_config, in_size)
    teacher = None
    if train_config.teacher:  # checked before the run folder is touched
        teacher = load_teacher(train_config.teacher, prep, model_config, in_size, out_size)
        loss = distilled(loss, model_config.classes, train_config.distill)
    configs = _run_configs(model_config, data_config, train_config)
    resuming = _check_out_dir(out, configs, overwrite) if chief else (out / "backup").is_dir()
    if chief:
        _make_out_dir(out, resuming)
    logs = out if chief else Path(tempfile.mkdtemp(prefix="unet-worker-"))
    mixed = wants_mixed_precision(train_config.mixed_precision)
    global_batch = train_config.batch_size * strategy.num_replicas_in_sync
    steps = train_config.steps_per_epoch or steps_to_cover(train_samples, out_size, global_batch)
    model_input = in_size if model_config.padding is Padding.VALID else None
    if chief:
        write_json_atomic(
            out / "config.json",
            {
                **configs,
                "preprocessing": prep.to_dict(),
                "fingerprint": data_print,
                "versions": package_versions(),
            },
        )
    log.info(
        f"{'resuming' if resuming else 'training'} in {out}: {len(train_samples)} training and "
        f"{len(val_samples)} validation images, {strategy.num_replicas_in_sync} replica(s) on "
        f"{devices_in_words()}, "
        f"global batch {global_batch}, {steps} steps x {train_config.epochs} epochs"
        f"{_stopping(train_config)}, "
        f"{'mixed float16' if mixed else 'float32'}"
        f"{f', distilled from {train_config.teacher}' if teacher is not None else ''}"
    )
    keras.utils.set_random_seed(train_config.seed)
    with precision_policy(mixed), strategy.scope():
        model = build_unet(model_config, model_input)
        rate = make_learning_rate(
            train_config.schedule, train_config.learning_rate, train_config.epochs * steps
        )
        model.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss=loss,
            metrics=[DiceScore(model_config.classes), IoUScore(model_config.classes)],
            jit_compile=train_config.jit,
        )
        epoch_dice = EpochDice(
            model,
            train_config.schedule,
            train_config.learning_rate,
            train_config.epochs,
            train_config.patience,
        )
        average = (
            WeightAverage(model, steps, train_config.average_epochs, train_config.epochs * steps)
            if train_config.average_epochs
            else None
        )

    def export(trained: keras.Model) -> keras.Model:
        weights = average.averaged() if average else None
        return float32_copy(trained, model_config, model_input, weights)

    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        *([average] if average else []),
        BestCheckpoint(out, export, write=chief),
        epoch_dice,
        keras.callbacks.CSVLogger(str(logs / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(logs / "logs"), profile_batch=0, write_graph=False),
        # Last, so an epoch counts as finished only once the callbacks above have done their part.
        keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
    ]
    train = train_dataset(
        train_samples, prep, train_config, out_size, global_batch, data_config.cache
    )
    validation = validation_dataset(val_samples, prep, in_size, out_size, global_batch)
    if teacher is not None:
        train, validation = with_teacher(train, teacher), with_teacher(validation, teacher)
    history = model.fit(
        train,
        epochs=train_config.epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
    )
    if _diverged(history):
        shutil.rmtree(out / "backup", ignore_errors=True)  # never resume from NaN weights
        kept = (
            f"{out / 'best.keras'} is kept"
            if (out / "best.keras").exists()
            else "no checkpoint was good"
        )
        raise TrainingDiverged(
            f"the loss became NaN or infinite after {len(history.history['loss'])} epoch(s); "
            f"{kept}: lower --learning-rate or check the data"
        )
    final = export(model)
    metrics: dict[str, Any] = {}
    warning = None
    if chief:
        save_model_atomic(final, out / "model.keras")
        models = {"final": final}
        if (out / "best.keras").exists():
            models["best"] = keras.models.load_model(out / "best.keras", compile=False)
        metrics = {
            name: evaluate_full_images(m, val_samples, prep, model_config, in_size)
            for name, m in models.items()
        }
        trivial, warning = usefulness_warning(
            metrics, val_samples, prep, model_config.classes, train_config
        )
        write_json_atomic(out / "metrics.json", {**metrics, "trivial": trivial})
    shutil.rmtree(out / "backup", ignore_errors=True)
    if not chief:
        shutil.rmtree(logs, ignore_errors=True)
    ran = history.epoch[-1] + 1 if history.epoch else train_config.epochs  # early stop: fewer
    return TrainResult(out, ran, metrics, weights_digest(final), warning)
