"""Configs are dataclasses; this loads one from YAML (unknown keys are an error, not silently dropped)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import yaml

from vivavoce.errors import VivavoceError

T = TypeVar("T")


def from_dict(cls: type[T], values: dict) -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclass fields."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise VivavoceError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        ftype = fields[name].type
        sub = _dataclass_type(cls, ftype)
        kwargs[name] = from_dict(sub, value) if sub is not None and isinstance(value, dict) else value
    return cls(**kwargs)


def _dataclass_type(owner: type, ftype) -> type | None:
    if isinstance(ftype, str):  # `from __future__ import annotations` leaves names as strings
        import sys

        ftype = vars(sys.modules[owner.__module__]).get(ftype)
    return ftype if dataclasses.is_dataclass(ftype) else None


def load_yaml(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise VivavoceError(f"{path}: cannot read config ({e.__class__.__name__}: {e})") from None
    if not isinstance(values, dict):
        raise VivavoceError(f"{path}: a config must be a mapping of keys to values")
    return from_dict(cls, values)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
