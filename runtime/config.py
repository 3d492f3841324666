"""Frozen config dataclasses that check themselves and round-trip through JSON and YAML."""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import Any, Self

from runtime.errors import UserError


class Choice(enum.StrEnum):
    """A closed set of string choices; an unknown value is an error that lists the known ones."""

    @classmethod
    def parse(cls, value: str | Choice, what: str) -> Self:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise UserError(f"unknown {what} {value!r}: choose one of {known}") from None


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of every stage config: enum coercion, `to_dict` and `from_dict`.

    Subclasses add their range checks in `check()`, which `__post_init__` calls after the
    string fields that name a `Choice` have been turned into that enum.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            kind = hints[field.name]
            value = getattr(self, field.name)
            if isinstance(kind, type) and issubclass(kind, Choice) and not isinstance(value, kind):
                object.__setattr__(
                    self, field.name, kind.parse(value, field.name.replace("_", "-"))
                )
        self.check()

    def check(self) -> None:
        """Raises UserError naming the field and the valid range; subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (v.value if isinstance(v := getattr(self, f.name), enum.Enum) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"unknown {cls.__name__} field(s) {', '.join(unknown)}: "
                f"known fields are {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


def require(condition: bool, message: str) -> None:
    """Raises UserError(message) unless condition holds; keeps `check()` bodies one line a rule."""
    if not condition:
        raise UserError(message)


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) file of settings as a mapping; any problem with it is a UserError.

    PyYAML is imported here, not at module import: a device reads no config file unless asked.
    """
    try:
        import yaml
    except ImportError:
        raise UserError(f"reading --config {path} needs PyYAML: pip install pyyaml") from None

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise UserError(f"cannot read --config {path} ({error.strerror}): check the path") from None
    except yaml.YAMLError as error:
        raise UserError(f"--config {path}{_yaml_place(error)}: fix it") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path} must hold a mapping of settings")
    return raw


def _yaml_place(error: Exception) -> str:
    """Where and what PyYAML found wrong, on one line: ' line 3, column 7: ...' (1-based)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "is not valid YAML/JSON"
    if mark is None:
        return f" {problem}"
    return f" line {mark.line + 1}, column {mark.column + 1}: {problem}"


# One YAML for the whole chain: each command reads its own sections and ignores the others'.
CHAIN_SECTIONS = ("model", "data", "train", "prune", "quantize", "runtime", "benchmarks")
# What a run's config.json holds beside its sections (written, never settings).
WRITTEN_ONLY = ("preprocessing", "versions")


def own_settings(path: Path | None, own: tuple[str, ...]) -> dict[str, Any]:
    """The settings of a command's `own` sections of a config file, merged into one mapping.

    A file with sections (any of `CHAIN_SECTIONS`) is the chain's: the other sections belong
    to other commands and are not read; a top-level key that is no section is an error. A file
    without sections is one command's flat settings (a per-stage file).
    """
    if path is None:
        return {}
    raw = read_config_file(path)
    if not any(key in CHAIN_SECTIONS for key in raw):
        return {k: v for k, v in raw.items() if k not in WRITTEN_ONLY}
    strays = sorted(set(raw) - set(CHAIN_SECTIONS) - set(WRITTEN_ONLY))
    if strays:
        raise UserError(
            f"--config {path}: {', '.join(strays)} is no section: put each setting under one "
            f"of {', '.join(CHAIN_SECTIONS)} (a training preset under model)"
        )
    settings: dict[str, Any] = {}
    for section in own:
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise UserError(f"--config {path}: section {section} must hold a mapping of settings")
        settings.update(values)
    return settings


def stage_config(
    cls: type[ConfigBase], path: Path | None, section: str, flags: dict[str, Any]
) -> Any:
    """One stage's config: its section of the file (an unknown key in it is an error that
    names it), then the flags given."""
    settings = own_settings(path, (section,))
    names = {f.name for f in dataclasses.fields(cls)}
    settings.update({k: v for k, v in flags.items() if k in names and v is not None})
    return cls.from_dict(settings)
