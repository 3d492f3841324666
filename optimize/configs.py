"""The configs of the optimize stages (`PruneConfig`, `QuantizeConfig`) and the gate's default.

They live apart from the work so that a command parses and checks its arguments, and answers
`--help`, without importing TensorFlow (3-10 s).
"""

from __future__ import annotations

import argparse
import dataclasses

from runtime.config import Choice, ConfigBase, require

# The Dice an int8 model may lose against the labels, unless a command says otherwise.
MAX_DICE_DROP = 0.01


def int8_engines() -> list[str]:
    """The runtime's engines that run a bundle's int8 models (not the bf16 float engine)."""
    from runtime.backends import ENGINES

    return [name for name, e in ENGINES.items() if any(e.runs(f, "int8") for f in e.formats)]


class ParityGateFailed(RuntimeError):
    """An int8 model lost more Dice than allowed; the message names it and the numbers."""


class PruneMethod(Choice):
    MAGNITUDE = "magnitude"  # unstructured zeros: smaller compressed, not faster on CPUs
    TWO_FOUR = "2:4"  # two zeros in every four weights: sparse tensor cores
    FILTER = "filter"  # whole filters removed: fewer MACs, faster everywhere


@dataclasses.dataclass(frozen=True)
class PruneConfig(ConfigBase):
    method: PruneMethod = PruneMethod.MAGNITUDE
    sparsity: float = 0.5  # magnitude
    # magnitude: share of the fine-tuning over which sparsity rises to its target; the rest
    # recovers at the final masks (ISBI, 3 seeds: 0.5 kept 0.0046 more Dice than 1.0).
    ramp: float = 0.5
    keep_ratio: float = 0.0  # filter: fraction of filters kept; 0 = derive from a target
    target_macs: float = 0.5  # filter: fraction of the MACs to keep, unless another target
    # filter: prune in steps until the int8 model measures this on this machine (0 = off) ...
    target_ms: float = 0.0
    target_speedup: float = 0.0  # ... or this many times faster than unpruned (0 = off)
    latency_size: int = 512  # the image side the latency is measured at, one pass
    engine: str = "auto"  # the int8 engine that times it; auto: the runtime's for int8
    # One thread: the per-layer table is steadiest so, and a 2-core machine then keeps a core.
    latency_threads: int = 1
    criterion: str = "l1"  # filter: "l1" (kernel norm) or "bn" (batch-norm scale)
    epochs: int = 3
    # Latency target: the step that meets it fine-tunes this long, cosine-decayed (0: epochs).
    final_epochs: int = 0
    learning_rate: float = 3e-4
    steps_per_epoch: int = 0  # 0: as the training run
    clusters: int = 0  # after pruning: shared nonzero values per kernel (zeros kept); 0 = off
    cluster_epochs: int = 2  # fine-tuning of the centroids
    cluster_learning_rate: float = 1e-4
    # Fine-tuning also learns the float model's probabilities: + distill x KL(float || pruned).
    # 3: the best of 0, 1 and 3 on each of 3 ISBI seeds (50% magnitude; docs/RESULTS.md).
    distill: float = 3.0
    label_free: bool = False  # fine-tune on the float model's probabilities alone
    images: str = ""  # label-free: a folder of images (no labels) to fine-tune on instead

    def check(self) -> None:
        require(0 < self.sparsity < 1, f"sparsity must be in (0, 1), got {self.sparsity}")
        require(0 <= self.keep_ratio <= 1, f"keep-ratio must be in (0, 1], got {self.keep_ratio}")
        require(0 < self.target_macs <= 1, f"target-macs must be in (0, 1], got {self.target_macs}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(0 < self.ramp <= 1, f"ramp must be in (0, 1], got {self.ramp}: e.g. 0.5")
        require(self.final_epochs >= 0, f"final-epochs must be >= 0, got {self.final_epochs}")
        require(self.learning_rate > 0, f"learning-rate must be > 0, got {self.learning_rate}")
        require(
            self.clusters == 0 or 2 <= self.clusters <= 256,
            f"clusters must be 0 (off) or in 2..256, got {self.clusters}: e.g. 16",
        )
        require(self.cluster_epochs >= 1, f"cluster-epochs must be >= 1, got {self.cluster_epochs}")
        require(self.distill >= 0, f"distill must be >= 0, got {self.distill}")
        check_unlabelled_images(self.images, self.label_free)
        self._check_latency_target()
        require(
            self.cluster_learning_rate > 0,
            f"cluster-learning-rate must be > 0, got {self.cluster_learning_rate}",
        )

    @property
    def latency_target(self) -> bool:
        return bool(self.target_ms or self.target_speedup)

    def _check_latency_target(self) -> None:
        require(
            self.target_ms >= 0, f"target-ms must be > 0 (or 0: off), got {self.target_ms}: e.g. 50"
        )
        require(
            self.target_speedup == 0 or self.target_speedup >= 1,
            f"target-speedup must be >= 1 (or 0: off), got {self.target_speedup}: e.g. 2",
        )
        require(
            not (self.target_ms and self.target_speedup),
            "target-ms and target-speedup exclude each other: give one",
        )
        require(
            not self.latency_target or self.method is PruneMethod.FILTER,
            f"a latency target needs method filter, not {self.method}: add --method filter",
        )
        require(
            not (self.latency_target and self.keep_ratio),
            "keep-ratio and a latency target exclude each other: give one",
        )
        engines = int8_engines()
        require(
            self.engine == "auto" or self.engine in engines,
            f"unknown engine {self.engine!r}: choose auto, {', '.join(engines)}",
        )
        require(
            self.latency_size >= 1, f"latency-size must be >= 1, got {self.latency_size}: e.g. 512"
        )
        require(
            self.latency_threads >= 1,
            f"latency-threads must be >= 1, got {self.latency_threads}: e.g. 1",
        )


class Method(Choice):
    QAT = "qat"  # quantization-aware fine-tuning: needs labels
    PTQ = "ptq"  # post-training calibration only: the path when there are no labels
    # Both, and the gated int8 model is the better by the gate's own figures (Dice against the
    # labels, then agreement with float): on real data either can win (ISBI: PTQ; the issue's
    # organelle data: PTQ +0.0008 against QAT -0.0083).
    BEST = "best"


@dataclasses.dataclass(frozen=True)
class QuantizeConfig(ConfigBase):
    method: Method = Method.BEST
    qat_epochs: int = 3
    # Small: QAT only has to adapt the weights to rounding; larger steps retrain the model away
    # from the float model it must agree with. int8 TFLite agreement with float on the held-out
    # tiles: synthetic default 98.8% at 1e-4, 99.2% at 2e-5, 99.45% at 5e-6; ISBI `small`
    # 98.7% at 2e-5 (Dice -0.0078), 99.5% at 5e-6 (Dice -0.0027).
    learning_rate: float = 5e-6
    steps_per_epoch: int = 0  # 0: as many as the training run used per epoch
    max_dice_drop: float = MAX_DICE_DROP
    calibration_tiles: int = 32
    sensitivity: bool = False  # the per-layer Dice cost of int8, into the manifest
    # When the gate fails: leave this many of the most sensitive layers in float, gate again.
    keep_float: int = 0
    # Build even from a float model no better than a trivial segmenter (train.usefulness).
    allow_useless: bool = False
    # QAT also learns the float model's probabilities (see PruneConfig.distill); 0 until
    # measured over seeds: the gate's post-training int8 won all 3 distilled runs measured.
    distill: float = 0.0
    label_free: bool = False
    images: str = ""  # see PruneConfig.images

    def check(self) -> None:
        require(self.qat_epochs >= 1, f"qat-epochs must be >= 1, got {self.qat_epochs}")
        require(self.learning_rate > 0, f"learning-rate must be > 0, got {self.learning_rate}")
        require(
            self.steps_per_epoch >= 0, f"steps-per-epoch must be >= 0, got {self.steps_per_epoch}"
        )
        require(self.max_dice_drop >= 0, f"max-dice-drop must be >= 0, got {self.max_dice_drop}")
        require(
            self.calibration_tiles >= 1,
            f"calibration-tiles must be >= 1, got {self.calibration_tiles}",
        )
        require(self.keep_float >= 0, f"keep-float must be >= 0, got {self.keep_float}")
        require(self.distill >= 0, f"distill must be >= 0, got {self.distill}")
        check_unlabelled_images(self.images, self.label_free)


def check_unlabelled_images(images: str, label_free: bool) -> None:
    """Images without labels can only teach through the teacher: refuse them otherwise."""
    require(
        not images or label_free,
        f"images {images} have no labels: fine-tuning on them needs --label-free",
    )


def add_distillation_flags(parser: argparse.ArgumentParser, distill: float) -> None:
    """--distill (its default `distill`) and --label-free, for every stage that fine-tunes
    (prune, quantize)."""
    parser.add_argument(
        "--distill",
        type=float,
        help="fine-tuning also learns the float model's probabilities: the label loss plus "
        f"this weight x KL(float || compressed), 0 = off (default: {distill:g})",
    )
    parser.add_argument(
        "--label-free",
        action="store_true",
        default=None,
        help="fine-tune on the float model's probabilities alone, labels unused (default: off)",
    )
    parser.add_argument(
        "--images",
        metavar="FOLDER",
        help="with --label-free: fine-tune on this folder's images (or its image/), no labels "
        "needed, e.g. the images the device will see; the run's validation images still score "
        "(default: the run's training images)",
    )
