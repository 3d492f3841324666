"""Which measured (model, engine) pairs verify on this device, and the Dice budget they answer to.

A pair verifies as the runtime verifies it (`runtime.golden.check_model`, what
`runtime.verify` and precision="auto" run): the model, loaded by its engine, segments its
bundle's golden tiles here no worse than on the build machine, within the bundle's Dice budget.
The benchmark's Pareto front (`benchmarks.pareto`) takes only pairs that pass: a fast pair that
computes wrong masks on this CPU is no choice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from benchmarks.variants import Variant, manifest_json
from runtime.backends import load
from runtime.bundle import read_manifest, verified_model_path
from runtime.errors import UserError
from runtime.golden import check_model, golden_of

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 0.01  # optimize.configs.MAX_DICE_DROP, the gate's default


def verify_variants(variants: Iterable[Variant], threads: int | None) -> dict[str, str | None]:
    """Variant name -> None where it passes its bundle's golden-tile check on this device, else
    why not (no golden tiles, an engine that cannot read it, the check's failure). The float
    Keras model is not a deployable pair and is left out."""
    found: dict[str, str | None] = {}
    for variant in variants:
        if variant.backend is None:
            continue
        found[variant.name] = _check(variant, threads)
        if found[variant.name]:
            log.warning("%s: %s", variant.name, found[variant.name])
    return found


def _check(variant: Variant, threads: int | None) -> str | None:
    manifest = read_manifest(variant.bundle_path)
    artifact = next((a for a in manifest.artifacts if a.file == Path(variant.path).name), None)
    if artifact is None:
        return "not in its bundle's manifest"
    if manifest.golden is None:
        return "its bundle has no golden tiles to verify it with (made before bundles had them)"
    try:
        golden = golden_of(variant.bundle_path, manifest)
        model = load(variant.backend, verified_model_path(variant.bundle_path, artifact), threads)
    except UserError as error:  # a changed file, or an engine that cannot read it
        return str(error)
    check = check_model(model, artifact, manifest, golden)
    return None if check.passed else f"fails its golden tiles here: {check.failure()}"


def dice_budget(bundle: str | Path) -> tuple[float, str]:
    """The Dice a deployed model may lose against the float model: the bundle manifest's
    `max_dice_drop` (its golden tiles', else the quantize config's), else the default; with
    where it came from, as the report says it."""
    raw = manifest_json(bundle)
    for where, section in (
        ("golden", raw.get("golden") or {}),
        ("configs.quantize", (raw.get("configs") or {}).get("quantize") or {}),
    ):
        value = section.get("max_dice_drop")
        if isinstance(value, int | float):
            return float(value), f"{bundle}/manifest.json: {where}.max_dice_drop"
    return DEFAULT_BUDGET, f"the default; {bundle}/manifest.json has no max_dice_drop"
