"""The claims a report checks: speed-ups at the largest size on every core, and Dice costs.

Each is data (what, against what, how much); a claim whose variants were not measured is
left out, and the report's skipped list says why they were not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.variants import Variant


@dataclasses.dataclass(frozen=True)
class SpeedClaim:
    variant: str
    baseline: str
    factor: float

    @property
    def text(self) -> str:
        words = "not slower than" if self.factor == 1 else f">= {self.factor:g}x faster than"
        return f"{self.variant} {words} {self.baseline}"

    def speedup(self, p50_ms: dict[str, float]) -> float | None:
        if self.variant not in p50_ms or self.baseline not in p50_ms:
            return None
        return p50_ms[self.baseline] / p50_ms[self.variant]


# The Dice a pruned + int8 model may lose against the float model (the optimize issue's limits).
DICE_BUDGET = {"magnitude": 0.01, "2:4": 0.01, "filter": 0.02, None: 0.01}


def _speed_claims(variants: list[Variant]) -> list[SpeedClaim]:
    claims = [
        SpeedClaim("tflite int8", "tflite fp32", 1.3),
        SpeedClaim("tflite int8", "keras fp32", 2.0),
        SpeedClaim("onnx int8", "onnx fp32", 1.0),
    ]
    claims += [
        SpeedClaim(v.name, "tflite fp32", 2.5)
        for v in variants
        if v.key == "int8" and v.format == "tflite" and v.prune_method == "filter"
    ]
    return claims


def check_targets(
    variants: list[Variant],
    latency: list[dict[str, Any]],
    accuracy: dict[str, Any],
    size: int,
    threads: int,
) -> list[dict[str, Any]]:
    """Every claim that can be checked, with the measured value and whether it is met."""
    p50 = {
        e["variant"]: e["p50_ms"]
        for e in latency
        if e["size"] == size and e["threads"] == threads and e["batch"] == 1
    }
    where = f" ({size} px, {threads} thread(s), batch 1, p50)"
    results = []
    for claim in _speed_claims(variants):
        speedup = claim.speedup(p50)
        if speedup is not None:
            results.append(
                {
                    "claim": claim.text + where,
                    "target": claim.factor,
                    "measured": speedup,
                    "met": speedup >= claim.factor,
                }
            )
    scored = accuracy.get("variants", {})
    for v in variants:
        if v.bundle == "main" or v.key != "int8" or v.name not in scored:
            continue
        budget = DICE_BUDGET.get(v.prune_method, 0.01)
        drop = scored[v.name]["overall"]["dice_drop"]
        results.append(
            {
                "claim": f"{v.name} loses <= {budget} Dice against the float model",
                "target": budget,
                "measured": drop,
                "met": drop <= budget,
            }
        )
    return results
