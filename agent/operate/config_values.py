"""Typed, range-checked reads of configuration values (pure): durations,
log levels, strings, integers, lists and paths, each error naming its key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "parse_duration",
    "parse_log_level",
    "get_typed",
    "str_list",
    "int_in",
    "resolve_path",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number or a string like ``"90"``, ``"45s"``, ``"90m"``, ``"12h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '7d', '12h' or seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration like '7d', '12h' or seconds, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: a duration cannot be negative ({value!r})")
    return seconds


def parse_log_level(value: str, key: str) -> str:
    """One of :data:`LOG_LEVELS`, lower-cased."""
    if value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{key}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def get_typed(table: Mapping[str, object], key: str, types: type | tuple[type, ...], where: str) -> object:
    """``table[key]`` when it is of ``types`` (a TOML boolean is no number);
    ``where`` prefixes the key in the error."""
    value = table[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where}{key}: expected {_type_name(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}{key}: expected {_type_name(types)}, got {value!r}")
    return value


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "true/false"}
    seq = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in seq)


def str_list(table: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = get_typed(table, key, list, where)
    if not all(isinstance(v, str) for v in value):  # type: ignore[union-attr]
        raise ConfigError(f"{where}{key}: expected a list of strings, got {value!r}")
    return tuple(value)  # type: ignore[arg-type]


def int_in(table: Mapping[str, object], key: str, where: str, low: int, high: int) -> int:
    value = get_typed(table, key, int, where)
    if not low <= value <= high:  # type: ignore[operator]
        raise ConfigError(f"{where}{key}: must be between {low} and {high}, got {value}")
    return value  # type: ignore[return-value]


def resolve_path(value: str, base: Path) -> Path:
    """An absolute path; a relative ``value`` is relative to ``base`` (the config file's directory)."""
    return Path(os.path.abspath(base / os.path.expanduser(value)))
