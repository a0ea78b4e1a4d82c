"""Typed parsing for the run config: YAML values checked against dataclass field types, with suggestions.

Knows the dataclasses only through their type hints; config.py owns the fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

import yaml

from tunesmith.errors import ConfigError


def parse_value(text: str) -> Any:
    """A --set value as YAML reads it (3e-5 stays a string there; coerce turns it into a float)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def suggest(name: str, known: list[str]) -> str:
    """'; did you mean X?' for the closest known name, else the list of known names."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else (f" (known: {', '.join(known)})" if known else "")


def build(cls: type, raw: dict[str, Any], where: str) -> Any:
    """A config dataclass from a mapping: unknown keys and wrongly typed values are a ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'" + suggest(str(key), sorted(names)))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value or {}, f"{where}: {key}")
        else:
            kwargs[key] = coerce(value, hint, f"{where}: {key}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [coerce(v, item, where) for v in value]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-5" (no dot) as a string; users mean the number.
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, str, bool) and (type(value) is hint):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
