"""The configs of the model, the data and the training run: frozen, checked, JSON round-trip."""

from __future__ import annotations

import dataclasses

from runtime.config import Choice, ConfigBase, require
from runtime.errors import UserError
from runtime.preprocess import Normalization


class Padding(Choice):
    SAME = "same"  # any input whose sides are multiples of 2**depth; output = input size
    VALID = "valid"  # the paper: unpadded convolutions, cropped skips, output smaller than input


class Upsampling(Choice):
    NEAREST = "nearest"  # nearest up-sampling then a 2x2 convolution (the source article)
    TRANSPOSE = "transpose"  # a 2x2 stride-2 transposed convolution


class Loss(Choice):
    AUTO = "auto"  # the data's fingerprint decides (train.fingerprint); without one, bce/ce_dice
    BCE_DICE = "bce_dice"  # cross-entropy + soft Dice per image (sigmoid head)
    CE_DICE = "ce_dice"  # the same for a softmax head
    BATCH_DICE = "batch_dice"  # cross-entropy + soft Dice over the whole batch (nnU-Net's)
    TVERSKY = "tversky"  # cross-entropy + batch Tversky, misses weigh more than false alarms
    FOCAL = "focal"


class Foreground(Choice):
    BRIGHT = "bright"  # in a two-valued mask, the higher value is class 1
    DARK = "dark"  # the lower value is class 1 (ISBI 2012: membranes are 0)


class Strategy(Choice):
    AUTO = "auto"  # mirrored over several local GPUs, else the default device
    ONE_DEVICE = "one-device"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


class Schedule(Choice):
    COSINE = "cosine"  # from the start rate down to 5% over the planned epochs
    PLATEAU = "plateau"  # halved whenever the validation Dice stalls for 3 epochs


class MixedPrecision(Choice):
    AUTO = "auto"  # on when a GPU is present
    ON = "on"
    OFF = "off"


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigBase):
    """The U-Net's shape (Ronneberger et al., 2015); the defaults are the paper's widths."""

    depth: int = 4
    base_filters: int = 64
    classes: int = 1
    channels: int = 1
    padding: Padding = Padding.SAME
    batch_norm: bool = True
    # 0.9, not Keras' 0.99: short CPU trainings leave 0.99's moving statistics far behind.
    bn_momentum: float = 0.9
    dropout: float = 0.5
    upsampling: Upsampling = Upsampling.NEAREST
    # Side of the pixel patch the U-Net starts from: 2 runs every level at half resolution (a
    # 2x2 stride-2 convolution in, a 2x2 stride-2 transposed convolution as the head), on a
    # quarter of the pixels; 4 on a sixteenth. On ISBI a patch-4 U-Net distilled from `small`
    # ran 4.7x faster in int8 at its Dice (RESULTS "Patch-2 and patch-4 U-Nets"). 1: the paper's layout.
    patch: int = 1

    def check(self) -> None:
        require(1 <= self.depth <= 6, f"depth must be 1..6, got {self.depth}")
        require(self.patch in (1, 2, 4), f"patch must be 1, 2 or 4, got {self.patch}")
        require(
            self.patch == 1 or self.padding is Padding.SAME,
            f"patch {self.patch} needs padding 'same' (the paper's 'valid' crops assume patch 1)",
        )
        require(self.base_filters >= 1, f"base-filters must be >= 1, got {self.base_filters}")
        require(self.classes >= 1, f"classes must be >= 1, got {self.classes}")
        require(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(
            0.0 <= self.bn_momentum < 1.0, f"bn-momentum must be in [0, 1), got {self.bn_momentum}"
        )

    @property
    def size_multiple(self) -> int:
        """A 'same' model takes any side that is a multiple of this (its pooling grid)."""
        return self.patch * 2**self.depth

    @property
    def head_activation(self) -> str:
        return "sigmoid" if self.classes == 1 else "softmax"


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigBase):
    """Where images come from and how masks map to classes."""

    # "synthetic" (EM), "synthetic-defects" (small, rare defects; images of several sizes around
    # synthetic_size) or a folder with image/ and label/ (or masks/)
    source: str = "synthetic"
    foreground: Foreground = Foreground.BRIGHT
    # Binarize masks first: values >= this are the bright class (for anti-aliased binary masks).
    mask_threshold: float | None = None
    cache: str = ""  # file prefix for an on-disk cache of the prepared training images
    # The training set's mean and std, or each image's own (runtime.preprocess.Normalization);
    # None: the data's fingerprint decides (train.fingerprint).
    normalization: Normalization | None = None
    val_fraction: float = 0.2  # the last images in natural order; adjacent slices stay together
    synthetic_count: int = 40
    synthetic_size: int = 256

    def check(self) -> None:
        require(
            0.0 < self.val_fraction < 1.0,
            f"val-fraction must be in (0, 1), got {self.val_fraction}",
        )
        require(
            self.synthetic_count >= 2, f"synthetic-count must be >= 2, got {self.synthetic_count}"
        )
        require(
            self.synthetic_size >= 16, f"synthetic-size must be >= 16, got {self.synthetic_size}"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """How to train: crops, batch, schedule, loss, augmentation and devices."""

    # Side of the training crops (the model's input for 'valid'); 0: the data's fingerprint
    # decides (the CLI's default), at most 256 and no larger than the median image.
    input_size: int = 256
    batch_size: int = 8  # per replica: the global batch is this times the replicas
    epochs: int = 20
    steps_per_epoch: int = 0  # 0: enough crops to cover the training pixels once
    learning_rate: float = 1e-3
    schedule: Schedule = Schedule.COSINE
    # Stop once the validation Dice has not improved for this many epochs; 0: run every epoch.
    # Off by default: on ISBI the cosine rate's last epochs made the best model (see RESULTS).
    patience: int = 0
    # Validate and keep the moving average of the weights over this many epochs; 0: the weights.
    average_epochs: float = 2.0
    loss: Loss = Loss.AUTO
    # Share of crops centred on a foreground pixel (nnU-Net: a third); None: the fingerprint
    # decides (0 for common foreground, a third for rare), 0: uniform crops only.
    foreground_crops: float | None = None
    augment: bool = True  # flips, 90-degree rotations, brightness and contrast
    elastic: bool = True  # the paper's elastic deformation (3x3 grid, bicubic)
    # The field's changes: noise, blur, wider contrast, low resolution, gamma (train.augment.FIELD).
    # On ISBI with per-image normalization (3 seeds): clean Dice -0.0025, every mild shift of
    # issue 29's suite within 0.01, every strong one within 0.03 (RESULTS "Shifted images").
    field_augment: bool = True
    # Distillation from a trained model (its model.keras): the loss adds distill x
    # KL(teacher || student) on every crop, so a fast layout (`patch` 2) learns from a slower,
    # better model (RESULTS "Patch-2 and patch-4 U-Nets"). "": labels alone.
    teacher: str = ""
    distill: float = 3.0
    seed: int = 0
    strategy: Strategy = Strategy.AUTO
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    jit: bool = False

    def check(self) -> None:
        require(
            self.input_size == 0 or self.input_size >= 8,
            f"input-size must be >= 8 (0: from the data), got {self.input_size}",
        )
        require(
            self.foreground_crops is None or 0.0 <= self.foreground_crops <= 1.0,
            f"foreground-crops must be in [0, 1], got {self.foreground_crops}",
        )
        require(self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(
            self.steps_per_epoch >= 0, f"steps-per-epoch must be >= 0, got {self.steps_per_epoch}"
        )
        require(self.learning_rate > 0, f"learning-rate must be > 0, got {self.learning_rate}")
        require(self.distill >= 0, f"distill must be >= 0, got {self.distill}")
        require(self.patience >= 0, f"patience must be >= 0 (0: off), got {self.patience}")
        require(
            self.average_epochs >= 0,
            f"average-epochs must be >= 0 (0: off), got {self.average_epochs}",
        )


def resolve_loss(loss: Loss, classes: int) -> Loss:
    """The loss for the head: binary losses with sigmoid, categorical ones with softmax."""
    if loss is Loss.AUTO:  # no fingerprint: the per-image Dice of the ISBI recipe
        return Loss.BCE_DICE if classes == 1 else Loss.CE_DICE
    if loss is Loss.BCE_DICE and classes > 1:
        raise UserError(
            f"loss bce_dice needs a sigmoid head (classes 1), got classes {classes}: use ce_dice"
        )
    if loss is Loss.CE_DICE and classes == 1:
        raise UserError("loss ce_dice needs a softmax head (classes >= 2): use bce_dice")
    return loss


PRESETS: dict[str, tuple[str, ModelConfig]] = {
    "paper": ("the full U-Net of the paper: base 64 filters, depth 4", ModelConfig()),
    "small": ("base 16, depth 4 (1.9 M parameters): CPUs and demos", ModelConfig(base_filters=16)),
    "tiny": ("base 4, depth 2: tests", ModelConfig(base_filters=4, depth=2, dropout=0.0)),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name][1]
