"""A small schema-1 benchmark report and two 32x32 examples, built in memory (no files).

The report is built as report.json holds it (a dict, easy to plant changes in); `Report.from_dict`
reads it into the schema, as `compare` and the writers take it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from benchmarks.plots import Example
from benchmarks.schema import Report

VARIANTS = ("keras fp32", "tflite fp32", "tflite int8", "tflite int8 [pruned]", "onnx fp32")
IMAGES = ("0", "1")
# (variant, format, precision, size_bytes, p50 ms at 512 px / 1 thread), keras is not timed
_TABLE = (
    ("keras fp32", "keras", "fp32", 23_500_000, None),
    ("tflite fp32", "tflite", "fp32", 7_780_000, 234.1),
    ("tflite int8", "tflite", "int8", 2_010_000, 180.1),
    ("tflite int8 [pruned]", "tflite", "int8", 1_990_000, 175.3),
    ("onnx fp32", "onnx", "fp32", 7_810_000, 250.7),
)


def _variant(name: str, fmt: str, precision: str, size: int) -> dict:
    return {
        "name": name,
        "bundle": "pruned" if "pruned" in name else "main",
        "key": precision if fmt != "onnx" else f"{precision}-onnx",
        "file": f"model_{precision}.{fmt}",
        "format": fmt,
        "precision": precision,
        "size_bytes": size,
        "gzip_bytes": int(size * 0.9),
        "macs": {"256": 3_420_000_000, "512": 13_670_000_000},
    }


def _latency(name: str, p50_512: float) -> list[dict]:
    entries = []
    for size, scale in ((256, 0.25), (512, 1.0)):
        for threads in (1, 2):
            for batch in (1, 4):
                p50 = p50_512 * scale * batch / (1.0 if threads == 1 else 1.8)
                entries.append(
                    {
                        "variant": name,
                        "size": size,
                        "threads": threads,
                        "batch": batch,
                        "tiles": 1,
                        "batched": True,
                        "runs": 12,
                        "p50_ms": round(p50, 1),
                        "p90_ms": round(p50 * 1.03, 1),
                        "p99_ms": round(p50 * 1.06, 1),
                        "mean_ms": round(p50 * 1.01, 1),
                        "ms_per_image": round(p50 / batch, 1),
                        "images_per_s": round(1000 * batch / p50, 2),
                        "gmacs_per_s": round(13.67e9 * scale * batch / p50 / 1e6, 1),
                        "of_ceiling": 0.5,
                    }
                )
    return entries


def _scores(dice: float, agreement: float, labels: bool) -> dict:
    scores = {
        "agreement_with_float": agreement,
        "dice_vs_float": round(agreement - 0.01, 4),
        "iou_vs_float": round(agreement - 0.03, 4),
        "max_abs_error": 0.4,
        "mean_abs_error": 0.01,
    }
    if labels:
        scores |= {
            "dice_vs_truth": dice,
            "iou_vs_truth": round(dice - 0.13, 4),
            "accuracy_vs_truth": 0.919,
            "dice_drop": round(0.80 - dice, 4),
        }
    return scores


# Test-time augmentation: (Dice none, flips, d4) and p50 ms of none at 256 / 512 px per model;
# flips costs 3.9x none and d4 7.8x.
_TTA = {
    "tflite fp32": ((0.8, 0.803, 0.8045), (58.5, 234.1)),
    "tflite int8": ((0.798, 0.8, 0.8021), (45.0, 180.1)),
    "onnx fp32": ((0.8, 0.803, 0.8045), (62.7, 250.7)),
}


def _tta(labels: bool) -> dict:
    """The report's `tta` section as `python -m benchmarks` writes it (no `[pruned]` model:
    its bundle was measured without it)."""
    scores, latency = {}, []
    for name, (dice, p50) in _TTA.items():
        scores[name] = {
            kind: _scores(d, 0.999 - 0.004 * k, labels)
            for k, (kind, d) in enumerate(zip(("none", "flips", "d4"), dice, strict=True))
        }
        for size, ms in zip((256, 512), p50, strict=True):
            latency += [
                {
                    "variant": name,
                    "size": size,
                    "threads": 2,
                    "tta": kind,
                    "p50_ms": ms * f,
                    "runs": 3,
                }
                for kind, f in (("none", 1.0), ("flips", 3.9), ("d4", 7.8))
            ]
    return {
        "kinds": ["none", "flips", "d4"],
        "scores": scores,
        "latency": latency,
        "wall_seconds": 61.0,
    }


def with_tta(report: dict) -> dict:
    """A report of the newer kind: thresholds, the int8 choice and test-time augmentation."""
    labels = report["accuracy"]["has_labels"]
    report["accuracy"]["thresholds"] = {
        "main": {"threshold": 0.45, "dice": 0.8123, "dice_at_default": 0.805, "images": 5},
        "pruned": {"threshold": 0.5},
    }
    report["accuracy"]["int8_choice"] = {
        "chosen": "ptq",
        "by": "Dice against the labels",
        "qat": {"dice_vs_truth": 0.79, "agreement_with_float": 0.981},
        "ptq": {"dice_vs_truth": 0.798, "agreement_with_float": 0.993},
    }
    report["tta"] = _tta(labels)
    return report


def build_report(labels: bool = True) -> dict:
    """A schema-1 report as `python -m benchmarks` writes it, for five variants on two images."""
    truth = (
        {"dice_vs_truth": 0.80, "iou_vs_truth": 0.67, "accuracy_vs_truth": 0.92} if labels else {}
    )
    quality = {
        "tflite fp32": (0.8, 1.0),
        "tflite int8": (0.798, 0.993),
        "tflite int8 [pruned]": (0.79, 0.985),
        "onnx fp32": (0.8, 1.0),
    }
    accuracy = {
        "data": "synthetic",
        "has_labels": labels,
        "images": list(IMAGES),
        "float": {"overall": truth, "per_image": {i: dict(truth) for i in IMAGES}},
        "variants": {
            name: {
                "overall": _scores(dice, agreement, labels),
                "per_image": {
                    i: _scores(dice, agreement - 0.002 * k, labels) for k, i in enumerate(IMAGES)
                },
            }
            for name, (dice, agreement) in quality.items()
        },
    }
    return {
        "schema": 1,
        "created": "2026-11-26T01:00:00Z",
        "wall_seconds": 412.3,
        "config": {
            "bundles": {"main": "runs/bundle", "pruned": "runs/bundle-sparse"},
            "keras": "runs/default-float/model.keras",
            "data": "synthetic",
            "sizes": [256, 512],
            "threads": [1, 2],
            "batch": 4,
            "min_runs": 5,
            "seconds": 2.0,
        },
        "environment": {
            "cpu": "AMD EPYC 7B13",
            "machine": "x86_64",
            "cores": 2,
            "flags": {"avx2": True, "fma": True, "avx512f": False, "neon": False},
            "os": "Linux-6.1-x86_64",
            "python": "3.11.9",
            "packages": {"numpy": "2.4.6", "ai-edge-litert": "2.3.0"},
            "git": {"revision": "dc7f829abc", "dirty": False},
        },
        "ceiling": [{"threads": 1, "gmacs_per_s": 35.2}, {"threads": 2, "gmacs_per_s": 70.5}],
        "baseline": "tflite fp32",
        "variants": [_variant(n, f, p, s) for n, f, p, s, _ in _TABLE],
        "skipped": [{"name": "tflite int8 [thin]", "reason": "no --bundle thin=... given"}],
        "latency": [e for n, _, _, _, ms in _TABLE if ms for e in _latency(n, ms)],
        "cold_start": [
            {
                "variant": "tflite int8",
                "seconds": 0.41,
                "import_s": 0.10,
                "load_s": 0.05,
                "first_inference_s": 0.20,
                "peak_rss_mb": 93.5,
            }
        ],
        "accuracy": accuracy,
        "targets": [
            {
                "claim": "tflite int8 >= 1.3x faster than tflite fp32 (512 px, 1 thread, batch 1)",
                "target": 1.3,
                "measured": 1.3,
                "met": True,
            },
            {
                "claim": "tflite int8 [pruned] >= 2x faster than tflite fp32",
                "target": 2.0,
                "measured": 1.34,
                "met": False,
            },
        ],
    }


def build_examples(labels: bool = True, size: int = 32) -> list[Example]:
    """Two tiny examples: a disc for truth, a float mask near it and an int8 mask that differs."""
    yy, xx = np.mgrid[:size, :size]
    examples = []
    for k, name in enumerate(IMAGES):
        radius = size / 4 + k
        disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2).astype(np.uint8)
        image = np.clip(0.3 + 0.5 * disc + 0.05 * np.sin(xx / 3.0), 0, 1).astype(np.float32)
        variant_mask = disc.copy()
        variant_mask[: 2 + k, :] = 1  # a planted disagreement with float
        examples.append(
            Example(
                name=name,
                image=image,
                truth=disc if labels else None,
                float_mask=disc,
                mask=variant_mask,
                variant="tflite int8",
            )
        )
    return examples


@pytest.fixture
def report() -> Report:
    return Report.from_dict(build_report())


@pytest.fixture(scope="session")
def make_report():
    """A fresh report.json dict per call, so that a test may change it freely."""

    def make(labels: bool = True, tta: bool = False) -> dict:
        """`tta`: a newer report, with thresholds and test-time augmentation (`with_tta`)."""
        report = copy.deepcopy(build_report(labels))
        return with_tta(report) if tta else report

    return make


@pytest.fixture(scope="session")
def make_examples():
    """Fresh examples per call: `make_examples(labels=False)` has no ground truth."""
    return build_examples
