"""Typed results as JSON and back: the benchmark report, the parity report and the prune
report are frozen dataclasses (DESIGN: results are typed like configs), written and read by
this one codec.

`to_json` turns one into plain JSON types; `from_json` reads one back and checks every field's
type on the way, naming the first that does not fit (`SchemaError`: `report.latency[3] has no
'p50_ms'`). Keys a reader does not know are ignored, so a file with added fields still reads;
a field's JSON key may differ from its name (`field(metadata={"json": "float"})`). It is ~100
lines of our own rather than dacite, which leaves mapping keys as strings (MACs and tile plans
are keyed by image side) and takes no int where a float is expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


class JsonRecord:
    """`to_dict` and `from_dict` for a frozen dataclass that is written as one JSON file or
    section; `JSON_NAME` is how `SchemaError` names its top."""

    JSON_NAME: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Raises SchemaError naming the first field that does not fit."""
        return from_json(cls, data, cls.JSON_NAME)


def json_name(key: str) -> dict[str, str]:
    """Field metadata: the key in the JSON when it is not the field's name."""
    return {"json": key}


class SchemaError(ValueError):
    """A JSON value that does not fit its type; the message names the field."""


def to_json(value: Any) -> Any:
    """Plain JSON types: dataclasses as objects (None-by-default fields left out when None),
    tuples as lists, mapping keys as strings, numpy values as Python's, NaN as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.metadata.get("json", f.name): to_json(v)
            for f in dataclasses.fields(value)
            if (v := getattr(value, f.name)) is not None or f.default is not None
        }
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def from_json(kind: type[T], data: Any, where: str) -> T:
    """`data` (parsed JSON) as a `kind`; SchemaError names the first field that does not fit."""
    return _decode(kind, data, where)


def _decode(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, where)
    if origin is tuple:
        return _decode_tuple(args, _expect(value, list, "a list", where), where)
    if origin in (Mapping, dict):
        return _decode_mapping(args, _expect(value, dict, "an object", where), where)
    if kind is float:
        return float(_expect(value, int | float, "a number", where))
    return _expect(value, kind, _NAMES.get(kind, kind.__name__), where)


_NAMES = {int: "an integer", str: "a string", bool: "true or false"}


def _expect(value: Any, kind: Any, what: str, where: str) -> Any:
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    shown = "null" if value is None else type(value).__name__
    raise SchemaError(f"{where} is {shown}, not {what}")


def _decode_dataclass(kind: type, value: Any, where: str) -> Any:
    value = _expect(value, dict, "an object", where)
    hints = typing.get_type_hints(kind)
    found = {}
    for field in dataclasses.fields(kind):
        key = field.metadata.get("json", field.name)
        if key in value:
            found[field.name] = _decode(hints[field.name], value[key], f"{where}.{key}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{where} has no {key!r}")
    return kind(**found)


def _decode_tuple(args: tuple, items: list, where: str) -> tuple:
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(items)
    elif len(items) != len(args):
        raise SchemaError(f"{where} has {len(items)} items, not {len(args)}")
    return tuple(
        _decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, items, strict=True))
    )


def _decode_mapping(args: tuple, items: dict, where: str) -> dict:
    key_kind, value_kind = args or (str, Any)
    decoded = {}
    for key, item in items.items():
        if key_kind is int:
            if not str(key).lstrip("-").isdigit():
                raise SchemaError(f"{where} has key {key!r}, not an integer")
            key = int(key)
        decoded[key] = _decode(value_kind, item, f"{where}.{key}")
    return decoded
