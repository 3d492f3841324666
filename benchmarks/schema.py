"""The benchmark report's schema: frozen dataclasses that the measuring code builds, the report
writers render and `compare` reads, and their JSON form (`report.json`, through
`runtime.typed_json`).

A field that changes meaning bumps `SCHEMA`. Fields a measurement may lack (a failed process,
an older report) are optional and default to None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from runtime.choice import Choice
from runtime.metrics import Scores
from runtime.tiling import TilePlan
from runtime.typed_json import JsonRecord, json_name

SCHEMA = 1
MAIN = "main"  # the label of the first --bundle; its float Keras model is the reference


# --------------------------------------------------------------------------------------------
# The report


@dataclasses.dataclass(frozen=True)
class GitState:
    revision: str | None = None
    dirty: bool | None = None  # uncommitted changes


@dataclasses.dataclass(frozen=True)
class Environment:
    """The machine a report was measured on (`benchmarks.environment.environment`)."""

    cpu: str | None = None
    microarchitecture: str | None = None
    int8_capability: str | None = None  # `runtime.cpu.cpu_info`: "AVX-512 VNNI", "AVX2 only ..."
    machine: str | None = None
    cores: int | None = None
    flags: Mapping[str, bool] = dataclasses.field(default_factory=dict)  # SIMD features
    os: str | None = None
    python: str | None = None
    packages: Mapping[str, str] = dataclasses.field(default_factory=dict)
    git: GitState = dataclasses.field(default_factory=GitState)


@dataclasses.dataclass(frozen=True)
class VariantInfo:
    """One measured model: its file and what an image of each measured size costs."""

    name: str  # "tflite int8", "onnx fp32 [thin]", "keras fp32"
    bundle: str = MAIN  # the bundle's label
    key: str | None = None  # the bundle key (fp32, int8, int8-onnx, ...) or "keras"
    file: str | None = None
    format: str | None = None  # tflite | onnx | keras
    precision: str | None = None
    engine: str | None = None  # litert | onnx | openvino | keras
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    tile: int | None = None  # the model's input side
    macs: Mapping[int, int] = dataclasses.field(default_factory=dict)  # image side -> MACs
    plans: Mapping[int, TilePlan] = dataclasses.field(default_factory=dict)  # side -> runs


@dataclasses.dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """The float32 GEMM rate at a thread count: what a model's GMAC/s is measured against;
    and the int8 GEMM rate (`benchmarks.int8_ceiling`), what an int8 model's is."""

    threads: int
    gmacs_per_s: float
    int8_gmacs_per_s: float | None = None  # None: no engine ran an integer GEMM here
    int8_kernel: str | None = None  # the engine's primitive: AMX, VNNI, ...
    # The two float32 GEMMs `gmacs_per_s` is the better of: numpy's BLAS, OpenVINO's f32 kernel.
    blas_gmacs_per_s: float | None = None
    engine_f32_gmacs_per_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Latency:
    """One variant's interpreter time for one image (or a batch) of `size` px."""

    variant: str
    size: int
    threads: int
    p50_ms: float
    batch: int = 1
    tiles: int | None = None  # interpreter inputs per image
    batched: bool = True  # False: a batch that ran tile by tile (the model takes batch 1)
    runs: int | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    ms_per_image: float | None = None
    images_per_s: float | None = None
    gmacs_per_s: float | None = None
    of_ceiling: float | None = None  # gmacs_per_s over the GEMM ceiling at these threads
    of_int8_ceiling: float | None = None  # an int8 model's, over the int8 GEMM ceiling

    @property
    def setting(self) -> tuple[int, int, int]:
        """(size, threads, batch): entries of one setting are compared with each other."""
        return self.size, self.threads, self.batch


@dataclasses.dataclass(frozen=True)
class ColdStart:
    """A fresh process that imports, loads a model and segments one image; or its error."""

    variant: str
    size: int | None = None
    seconds: float | None = None  # the whole process, Python's start included
    import_s: float | None = None
    load_s: float | None = None
    first_inference_s: float | None = None
    peak_rss_mb: float | None = None  # VmHWM, MB = 10^6 bytes
    tensorflow_imported: bool | None = None
    error: str | None = None  # the last line the process printed, when it failed


@dataclasses.dataclass(frozen=True)
class ProcessMemory(ColdStart):
    """A cold start at one image size, with the runtime's plan under its memory budget."""

    tile: tuple[int, int] | None = None
    count: int | None = None
    batch: int | None = None
    max_memory_mb: float | None = None


@dataclasses.dataclass(frozen=True)
class EndToEndSize:
    """`Segmenter.predict` on one image against the interpreter alone on its runs (p50)."""

    variant: str
    size: int
    threads: int
    runtime_ms: float
    interpreter_ms: float
    tile: tuple[int, int]
    count: int
    batch: int
    runs: int | None = None
    other_cores: float | None = None  # other processes' CPU while it ran (`benchmarks.load`)
    smallest_runtime_ms: float | None = None  # the runtime on the smallest size, taking turns


@dataclasses.dataclass(frozen=True)
class FolderRun:
    """`runtime.predict`'s pipeline over a folder of `images` PNGs of `size` px."""

    variant: str
    size: int
    images: int
    images_per_s: float
    # The pipeline's own work on an image (decoding, pre-processing, writing the mask), timed
    # one stage after another on the same files, and the cores the process may use: on fewer
    # cores than the interpreter's threads plus that work, the cores cap the folder's rate.
    pipeline_ms: float | None = None
    cores: int | None = None
    other_cores: float | None = None  # other processes' CPU during the passes
    interpreter_ms: float | None = None  # the interpreter alone an image, between the passes


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    sizes: tuple[EndToEndSize, ...] = ()
    folder: tuple[FolderRun, ...] = ()
    memory: tuple[ProcessMemory, ...] = ()


@dataclasses.dataclass(frozen=True)
class SizeBin:
    """Labelled objects of one size (`benchmarks.objects.BINS`: equivalent diameter in px)."""

    bin: str  # "<4", "4-8", "8-16", "16-32", ">=32"
    count: int
    found: int
    recall: float
    mean_dice: float  # each object's Dice against the predicted components that overlap it


@dataclasses.dataclass(frozen=True)
class ObjectScores:
    """Per-object scores over many images (`benchmarks.objects.summarize`): labelled objects
    found (any predicted pixel on them), and predicted components that touch no label."""

    images: int = 0
    labelled: int = 0
    found: int = 0
    recall: float | None = None  # found / labelled, pooled; None: no labelled objects
    false: int = 0
    false_per_image: float | None = None
    labelled_images: int = 0  # images with at least one labelled object
    blank_images: int = 0  # of those, the ones whose prediction has no foreground at all
    bins: tuple[SizeBin, ...] = ()  # the bins that have objects, smallest first


@dataclasses.dataclass(frozen=True)
class VariantScores:
    overall: Scores = dataclasses.field(default_factory=Scores)  # all pixels of all images
    per_image: Mapping[str, Scores] = dataclasses.field(default_factory=dict)
    objects: ObjectScores | None = None  # against the labels; None: no labels, older report


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The sigmoid threshold a bundle's masks are made at (its manifest's, as the runtime
    uses it) and, where the bundle calibrated it (`postprocessing.calibration`), the float
    model's Dice on the validation images at full size at that threshold and at 0.5."""

    threshold: float | None = None  # None: a softmax model, whose mask is the argmax
    dice: float | None = None
    dice_at_default: float | None = None  # at 0.5
    images: int | None = None  # validation images calibrated on; None: not calibrated


@dataclasses.dataclass(frozen=True)
class Int8Choice:
    """Which int8 method made the bundle's int8 model (`optimize.quantize --method best`, the
    manifest's `int8_choice`), and the gate's figures of both."""

    chosen: str | None = None  # "qat" or "ptq"
    by: str | None = None  # what decided: Dice against the labels, or agreement with float
    qat: Scores | None = None  # dice_vs_truth and agreement_with_float
    ptq: Scores | None = None


@dataclasses.dataclass(frozen=True)
class Accuracy:
    images: tuple[str, ...] = ()
    has_labels: bool = False
    float_model: VariantScores | None = dataclasses.field(
        default=None, metadata=json_name("float")
    )  # the reference's scores against the labels
    variants: Mapping[str, VariantScores] = dataclasses.field(default_factory=dict)
    data: str | None = None
    reference: str | None = None  # the variant every other is compared with
    # Bundle label -> the threshold its masks are made at; empty in reports made before.
    thresholds: Mapping[str, Threshold] = dataclasses.field(default_factory=dict)
    int8_choice: Int8Choice | None = None  # the main bundle's, when it records one


@dataclasses.dataclass(frozen=True)
class TtaLatency:
    """One runtime model's `Segmenter.predict` on one image of `size` px with test-time
    augmentation `tta` (p50), timed taking turns with the other kinds."""

    variant: str
    size: int
    threads: int
    tta: str  # none | flips | d4 (`runtime.tta.TTA_KINDS`)
    p50_ms: float
    runs: int | None = None


@dataclasses.dataclass(frozen=True)
class Tta:
    """Test-time augmentation (`runtime.tta`) per runtime model: what it gains on the
    held-out images and what it costs per image; `benchmarks.tta`."""

    kinds: tuple[str, ...] = ()  # the kinds measured, "none" first
    # Variant -> kind -> its overall scores on the accuracy images ("none": the accuracy
    # table's own), masks at its bundle's threshold, agreement against float without TTA.
    scores: Mapping[str, Mapping[str, Scores]] = dataclasses.field(default_factory=dict)
    latency: tuple[TtaLatency, ...] = ()
    wall_seconds: float | None = None  # what measuring TTA added to the run


@dataclasses.dataclass(frozen=True)
class ParetoPoint:
    """One verified (model, engine) pair: its p50 at the trade's setting and its Dice."""

    variant: str
    ms: float
    dice: float
    bundle: str = MAIN
    engine: str | None = None


@dataclasses.dataclass(frozen=True)
class Pareto:
    """Dice against measured milliseconds of every (model, engine) pair of every bundle that
    verified on this device (`benchmarks.pareto`): the front and the pair recommended under the
    Dice budget. None in a report: made before it, or nothing was both timed and scored."""

    size: int  # px: 512 where it was measured, else the largest size
    threads: int  # the most threads measured (every core where --threads had 0); batch 1
    score: str = "dice_vs_truth"  # the Scores field that is "Dice"; dice_vs_float without labels
    float_dice: float | None = None  # the float model's, which the budget is counted from
    reference: str | None = None  # the float model's variant ("keras fp32")
    budget: float = 0.01  # the Dice a recommended pair may lose against the float model
    budget_from: str = ""  # where the budget came from (the main bundle's manifest, a default)
    points: tuple[ParetoPoint, ...] = ()
    front: tuple[str, ...] = ()  # the pairs on the Pareto front, fastest first
    recommended: str | None = None  # the fastest pair within the budget; None: no pair is
    left_out: tuple[Skipped, ...] = ()  # measured pairs that are not points, and why


@dataclasses.dataclass(frozen=True)
class Target:
    claim: str
    target: float
    measured: float | None
    met: bool
    # Why the measurement cannot judge the claim (a machine too busy to measure it): reported,
    # never a miss.
    not_judged: str | None = None

    @property
    def missed(self) -> bool:
        return not self.met and self.not_judged is None


@dataclasses.dataclass(frozen=True)
class CrossCpuModel:
    """One model on one emulated CPU against this machine, on the bundle's golden tiles."""

    cpu: str  # `benchmarks.crosscpu.sysroot.CPUS` key
    model: str  # the bundle's file, or the full-range control
    engine: str  # the runtime's backend that ran it: litert, onnx, openvino
    agreement: float  # share of mask pixels equal to this machine's
    max_probability_difference: float
    verified: bool | None  # runtime.verify's verdict there; None: not in the bundle
    ms_per_tile: float | None = None  # emulated: says how slow qemu is, not the CPU


@dataclasses.dataclass(frozen=True)
class CrossCpuRun:
    """One emulated CPU: how `runtime.cpu` saw it, and the perturbed bundle's verdict there."""

    cpu: str
    label: str  # "ARM Neoverse-N1 (dot product)"
    qemu_cpu: str  # qemu's -cpu
    seen_as: str  # runtime.cpu's label on it: "Intel Core Processor (Haswell...) (AVX2 only...)"
    perturbed_exit: int  # `runtime.verify` on the perturbed copy: 1 is a caught fault
    perturbed_said: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class CrossCpu(JsonRecord):
    """`make cross-cpu`'s result (`cross_cpu.json`, `benchmarks.crosscpu`)."""

    JSON_NAME = "cross_cpu"

    created: str
    bundle: str
    host: str  # this machine, as runtime.cpu names it
    runs: tuple[CrossCpuRun, ...] = ()
    models: tuple[CrossCpuModel, ...] = ()
    wall_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Report(JsonRecord):
    JSON_NAME = "report"  # report.json

    schema: int = SCHEMA
    created: str | None = None
    wall_seconds: float | None = None
    other_cores: float | None = None  # other processes' mean CPU during the run (benchmarks.load)
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the run's inputs
    environment: Environment = dataclasses.field(default_factory=Environment)
    ceiling: tuple[Ceiling, ...] = ()
    baseline: str | None = None  # the variant that speed-ups are measured against
    variants: tuple[VariantInfo, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    latency: tuple[Latency, ...] = ()
    cold_start: tuple[ColdStart, ...] = ()
    end_to_end: EndToEnd = dataclasses.field(default_factory=EndToEnd)
    accuracy: Accuracy | None = None
    choice: Choice | None = None  # what precision="auto" picks on this machine
    targets: tuple[Target, ...] = ()
    targets_note: str | None = None
    cross_cpu: CrossCpu | None = None  # `make cross-cpu`'s result, when the report folder has it
    tta: Tta | None = None  # test-time augmentation; None: not measured (--no-tta, older)
    pareto: Pareto | None = None  # Dice against ms, the front, the pick; None: older, or none

    def variant_names(self) -> list[str]:
        """Variants in the report's order, then names found only in the measurements."""
        names = [v.name for v in self.variants]
        for name in (
            *(e.variant for e in self.latency),
            *(e.variant for e in self.cold_start),
            *(self.accuracy.variants if self.accuracy else ()),
        ):
            if name not in names:
                names.append(name)
        return names

    def overall(self, name: str) -> Scores | None:
        """A variant's overall scores; the float reference's own (agreement 1) for Keras."""
        accuracy = self.accuracy
        if accuracy is None:
            return None
        if name in accuracy.variants:
            return accuracy.variants[name].overall
        is_keras = any(v.name == name and v.format == "keras" for v in self.variants)
        if is_keras and accuracy.float_model is not None:
            return dataclasses.replace(accuracy.float_model.overall, agreement_with_float=1.0)
        return None

    def ranking_score(self) -> tuple[str, str]:
        """The score that ranks variants, as (Scores field, label): Dice against the truth when
        there are labels, else agreement with the float model."""
        if self.accuracy is not None and self.accuracy.has_labels:
            return "dice_vs_truth", "Dice vs truth"
        return "agreement_with_float", "agreement with float"

    def latency_groups(self) -> dict[tuple[int, int, int], list[Latency]]:
        """Latency entries by (size, threads, batch) ascending, variants in report order."""
        order = {name: i for i, name in enumerate(self.variant_names())}
        groups: dict[tuple[int, int, int], list[Latency]] = {}
        for entry in self.latency:
            groups.setdefault(entry.setting, []).append(entry)
        return {key: sorted(groups[key], key=lambda e: order[e.variant]) for key in sorted(groups)}


def plural(count: object, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
