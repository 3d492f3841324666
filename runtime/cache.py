"""What this device measured about a bundle, kept in the user's cache folder, never in the
bundle (which stays read-only and byte-identical from build to device): precision="auto"'s
choice (`runtime.choice`) and each model's memory line (`runtime.memory`, written by
`runtime.verify --memory`). A file per bundle, CPU, interpreter versions and whatever else
decides the measurement."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.backends import ENGINES
from runtime.cpu import cpu_info
from runtime.io import write_json_atomic
from runtime.memory import ModelMemory

if TYPE_CHECKING:
    from runtime.bundle import Artifact, Manifest


def cache_folder() -> Path:
    """$UNET_EDGE_CACHE, else $XDG_CACHE_HOME/unet-edge, else ~/.cache/unet-edge."""
    if os.environ.get("UNET_EDGE_CACHE"):
        return Path(os.environ["UNET_EDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unet-edge"


def interpreter_versions() -> dict[str, str]:
    """Every installed engine's version: another release may pick other kernels."""
    import importlib.metadata  # here: 3 MB with the email parser, for the automatic choice only

    found = {}
    for package in (d for engine in ENGINES.values() for d in engine.distributions):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found


def device_file(kind: str, manifest: Manifest, *key: Any) -> Path:
    """`kind`'s file for this bundle on this CPU with these interpreters, and `key`."""
    text = json.dumps([manifest.digest, cpu_info(), interpreter_versions(), *key], sort_keys=True)
    return cache_folder() / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"


def read(path: Path) -> Any | None:
    """The cached JSON, or None when there is none or it is broken (it is measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write(path: Path, data: Any) -> None:
    with contextlib.suppress(OSError):  # a read-only home still runs; it measures next time
        write_json_atomic(path, data)


def device_lines(manifest: Manifest) -> dict[str, ModelMemory]:
    """The lines `runtime.verify --memory` measured on this device: file -> line."""
    found = read(device_file("memory", manifest))
    try:
        return {file: ModelMemory(**line) for file, line in (found or {}).items()}
    except (TypeError, AttributeError):  # a cache file of another layout: as if none
        return {}


def save_device_lines(manifest: Manifest, lines: dict[str, ModelMemory]) -> Path:
    """Adds `lines` to the ones measured before (another precision's stay)."""
    path = device_file("memory", manifest)
    merged = device_lines(manifest) | lines
    write(path, {file: line.to_dict() for file, line in merged.items()})
    return path


def memory_line(manifest: Manifest, artifact: Artifact) -> ModelMemory | None:
    """This device's line for the model when `runtime.verify --memory` measured one, else the
    build machine's (the manifest's)."""
    return device_lines(manifest).get(artifact.file, artifact.memory)
