"""Agent configuration: typed, validated, from a TOML file and CLI flags.

Every error names the offending key and raises :class:`ConfigError` (an
:class:`~agent.errors.AgentError`), which the CLI turns into exit status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.ship.targets import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig, tracks_of

__all__ = [
    "LocalTarget",
    "RsyncTarget",
    "MsyncTarget",
    "TargetConfig",
    "Config",
    "ConfigError",
    "DEFAULT_CONFIG",
    "tracks_of",
    "rsync_local_path",
    "load_config",
    "parse_duration",
    "parse_target_spec",
    "find_target",
]

DEFAULT_CONFIG = Path("/etc/msync-agent/agent.toml")


@dataclass(frozen=True)
class Config:
    root: Path
    journal: Path
    targets: tuple[TargetConfig, ...] = ()
    exclude: tuple[str, ...] = ()
    settle_ms: int = 200  # the longest a path still changing is held back
    quiet_ms: int = 20  # a change ships once its path was quiet this long
    retention_s: float = 7 * 86400.0
    log_level: str = "info"
    metrics_port: int | None = None
    rescan_interval_s: float | None = None  # periodic safety scan; None = off
    max_attempts: int = 5  # permanent failures before a path is dead-lettered
    retry_max_s: float = 60.0  # cap of the exponential retry backoff
    metrics_address: str = "127.0.0.1"
    source: Path | None = None  # the file this came from, if any


def find_target(config: Config, name: str) -> TargetConfig:
    for target in config.targets:
        if target.name == name:
            return target
    known = ", ".join(t.name for t in config.targets) or "none"
    raise ConfigError(f"--target: no target named {name!r} (configured: {known})")


# ---------------------------------------------------------------------- pure parsers
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


def parse_target_spec(spec: str, taken: Sequence[str] = ()) -> TargetConfig:
    """A ``--target`` quick spec: ``local:PATH``, ``rsync:DEST`` or ``msync[:CONSOLE]``.

    The name is the kind, with ``-2``, ``-3`` ... when ``taken`` already holds it.
    """
    kind, _, rest = spec.partition(":")
    name = _unique_name(kind, taken)
    if kind == "local" and rest:
        return LocalTarget(name=name, path=Path(os.path.abspath(rest)))
    if kind == "rsync" and rest:
        return RsyncTarget(name=name, dest=rest)
    if kind == "msync":
        return MsyncTarget(name=name, console=rest or None)
    raise ConfigError(
        f"--target: bad spec {spec!r}",
        hint="use local:PATH, rsync:DEST or msync[:CONSOLE] (e.g. msync:unix:/run/makuosan.sock)",
    )


def _unique_name(base: str, taken: Sequence[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# ---------------------------------------------------------------------- typed getters
def _get(table: Mapping[str, object], key: str, types: type | tuple[type, ...], where: str) -> object:
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


def _str_list(table: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = _get(table, key, list, where)
    if not all(isinstance(v, str) for v in value):  # type: ignore[union-attr]
        raise ConfigError(f"{where}{key}: expected a list of strings, got {value!r}")
    return tuple(value)  # type: ignore[arg-type]


def _int_in(table: Mapping[str, object], key: str, where: str, low: int, high: int) -> int:
    value = _get(table, key, int, where)
    if not low <= value <= high:  # type: ignore[operator]
        raise ConfigError(f"{where}{key}: must be between {low} and {high}, got {value}")
    return value  # type: ignore[return-value]


def _path(value: str, base: Path) -> Path:
    return Path(os.path.abspath(base / os.path.expanduser(value)))


# ---------------------------------------------------------------------- targets
_TARGET_KEYS: dict[str, dict[str, Callable[[Mapping[str, object], str, str, Path], object]]] = {
    "local": {"path": lambda t, k, w, b: _path(_get(t, k, str, w), b)},  # type: ignore[arg-type]
    "rsync": {
        "dest": lambda t, k, w, b: _get(t, k, str, w),
        "rsync": lambda t, k, w, b: _get(t, k, str, w),
        "options": lambda t, k, w, b: _str_list(t, k, w),
        "timeout_s": lambda t, k, w, b: parse_duration(t[k], w + k),
    },
    "msync": {
        "members": lambda t, k, w, b: _str_list(t, k, w),
        "console": lambda t, k, w, b: _get(t, k, str, w),
        "password_file": lambda t, k, w, b: _path(_get(t, k, str, w), b),  # type: ignore[arg-type]
        "msync": lambda t, k, w, b: _get(t, k, str, w),
        "base": lambda t, k, w, b: _path(_get(t, k, str, w), b),  # type: ignore[arg-type]
        "batch": lambda t, k, w, b: _int_in(t, k, w, 1, 100_000),
        "concurrency": lambda t, k, w, b: _int_in(t, k, w, 1, 7),
        "timeout_s": lambda t, k, w, b: parse_duration(t[k], w + k),
        "stall_s": lambda t, k, w, b: parse_duration(t[k], w + k),
        "console_relay": lambda t, k, w, b: _get(t, k, bool, w),
    },
}
_TARGET_TYPES = {"local": LocalTarget, "rsync": RsyncTarget, "msync": MsyncTarget}
_REQUIRED = {"local": ("path",), "rsync": ("dest",), "msync": ()}
_ALIASES = {"timeout": "timeout_s", "stall": "stall_s"}


def _parse_target(table: object, index: int, base: Path) -> TargetConfig:
    where = f"target[{index}]."
    if not isinstance(table, dict):
        raise ConfigError(f"target[{index}]: expected a [[target]] table")
    for key in ("name", "kind"):
        if key not in table:
            raise ConfigError(f"{where}{key}: missing")
    name = _get(table, "name", str, where)
    kind = _get(table, "kind", str, where)
    if kind not in _TARGET_KEYS:
        raise ConfigError(f"{where}kind: must be msync, rsync or local, got {kind!r}")
    if not name or "/" in name or "\0" in name or name != name.strip():  # type: ignore[operator]
        raise ConfigError(f"{where}name: {name!r} is not a valid name (no '/', not empty)")
    where = f"target {name!r}: "
    options: dict[str, object] = {}
    for key in table:
        if key in ("name", "kind"):
            continue
        field_name = _ALIASES.get(key, key)
        parser = _TARGET_KEYS[kind].get(field_name)  # type: ignore[index]
        if parser is None:
            allowed = ", ".join(sorted(["name", "kind", *(_TARGET_KEYS[kind])]))  # type: ignore[index]
            raise ConfigError(f"{where}{key}: unknown key for kind {kind} (allowed: {allowed})")
        options[field_name] = parser(table, key, where, base)
    for key in _REQUIRED[kind]:  # type: ignore[index]
        if key not in options:
            raise ConfigError(f"{where}{key}: missing (required for kind {kind})")
    if kind == "msync" and len(set(options.get("members", ()))) != len(options.get("members", ())):
        raise ConfigError(f"{where}members: a member is listed twice")
    return _TARGET_TYPES[kind](name=name, **options)  # type: ignore[index,arg-type]


# ---------------------------------------------------------------------- top level
_TOP_KEYS = {
    "root",
    "journal",
    "exclude",
    "settle_ms",
    "quiet_ms",
    "retention",
    "log_level",
    "metrics_port",
    "metrics_address",
    "rescan_interval",
    "max_attempts",
    "retry_max",
    "target",
}


def _scalar_options(raw: Mapping[str, object]) -> dict[str, object]:
    """Top-level keys other than paths and targets, typed and range-checked."""
    out: dict[str, object] = {}
    if "exclude" in raw:
        out["exclude"] = _str_list(raw, "exclude", "")
        _check_excludes(out["exclude"])  # type: ignore[arg-type]
    if "settle_ms" in raw:
        out["settle_ms"] = _int_in(raw, "settle_ms", "", 0, 60_000)
    if "quiet_ms" in raw:
        out["quiet_ms"] = _int_in(raw, "quiet_ms", "", 0, 60_000)
    if "retention" in raw:
        out["retention_s"] = parse_duration(raw["retention"], "retention")
    if "log_level" in raw:
        out["log_level"] = _log_level(_get(raw, "log_level", str, ""), "log_level")  # type: ignore[arg-type]
    if "metrics_port" in raw:
        out["metrics_port"] = _int_in(raw, "metrics_port", "", 0, 65535)
    if "metrics_address" in raw:
        out["metrics_address"] = _get(raw, "metrics_address", str, "")
    if "rescan_interval" in raw:
        seconds = parse_duration(raw["rescan_interval"], "rescan_interval")
        out["rescan_interval_s"] = seconds or None
    if "max_attempts" in raw:
        out["max_attempts"] = _int_in(raw, "max_attempts", "", 1, 1_000_000)
    if "retry_max" in raw:
        out["retry_max_s"] = parse_duration(raw["retry_max"], "retry_max")
    return out


def _log_level(value: str, key: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{key}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def _check_excludes(patterns: Sequence[str]) -> None:
    from agent.tree.excludes import Excludes

    try:
        Excludes(patterns)
    except ValueError as exc:
        raise ConfigError(f"exclude: {exc}") from None


def _read_file(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config: {path} does not exist", hint="give --config FILE, or --root and --journal"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None


def _choose_file(path: Path | None, overrides: Mapping[str, object]) -> Path | None:
    """--config, else $AGENT_CONFIG, else the default file when it exists (or
    when the flags do not name both a root and a journal)."""
    if path is not None:
        return Path(path)
    if os.environ.get("AGENT_CONFIG"):
        return Path(os.environ["AGENT_CONFIG"])
    if DEFAULT_CONFIG.exists() or not overrides.get("journal"):
        return DEFAULT_CONFIG
    return None


def load_config(path: Path | None, overrides: Mapping[str, object], *, need_root: bool = True) -> Config:
    """Build the configuration from a TOML file and quick-flag ``overrides``.

    ``overrides`` keys: ``root``, ``journal`` (paths, relative to the cwd),
    ``targets`` (a list of ``--target`` specs), ``exclude`` (a list of
    patterns), ``log_level``. Non-empty overrides replace the file's values.
    Relative paths in the file are relative to the file's directory.
    ``need_root=False`` (``status``) lets the root be absent: ``Config.root``
    is then None and the journal's own record of its root is trusted.
    """
    file = _choose_file(path, overrides)
    raw = _read_file(file) if file is not None else {}
    base = file.parent if file is not None else Path.cwd()
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown key in {file}", hint=f"known keys: {', '.join(sorted(_TOP_KEYS))}"
        )
    options = _scalar_options(raw)
    root = _top_path(raw, overrides, "root", base) if need_root or _has(raw, overrides, "root") else None
    journal = _top_path(raw, overrides, "journal", base)
    targets = _targets(raw, overrides, base)
    if overrides.get("exclude"):
        options["exclude"] = tuple(overrides["exclude"])  # type: ignore[arg-type]
        _check_excludes(options["exclude"])  # type: ignore[arg-type]
    if overrides.get("log_level"):
        options["log_level"] = _log_level(str(overrides["log_level"]), "--log-level")
    if root is not None:
        _check_paths(root, journal)
        _check_targets(root, targets)
    return Config(root=root, journal=journal, targets=targets, source=file, **options)  # type: ignore[arg-type]


def _has(raw: Mapping[str, object], overrides: Mapping[str, object], key: str) -> bool:
    return bool(overrides.get(key)) or key in raw


def _top_path(raw: Mapping[str, object], overrides: Mapping[str, object], key: str, base: Path) -> Path:
    if overrides.get(key):
        return Path(os.path.abspath(os.path.expanduser(str(overrides[key]))))
    if key not in raw:
        raise ConfigError(f"{key}: missing", hint=f"set {key} in the config file or pass --{key}")
    return _path(_get(raw, key, str, ""), base)  # type: ignore[arg-type]


def _targets(
    raw: Mapping[str, object], overrides: Mapping[str, object], base: Path
) -> tuple[TargetConfig, ...]:
    specs = overrides.get("targets") or ()
    if specs:
        targets: list[TargetConfig] = []
        for spec in specs:  # type: ignore[union-attr]
            targets.append(parse_target_spec(str(spec), [t.name for t in targets]))
        return tuple(targets)
    tables = raw.get("target", [])
    if not isinstance(tables, list):
        raise ConfigError("target: expected [[target]] tables")
    parsed = tuple(_parse_target(t, i, base) for i, t in enumerate(tables))
    seen: set[str] = set()
    for target in parsed:
        if target.name in seen:
            raise ConfigError(f"target {target.name!r}: name: two targets share this name")
        seen.add(target.name)
    return parsed


def _check_paths(root: Path, journal: Path) -> None:
    if not root.exists():
        raise ConfigError(f"root: {root} does not exist", hint="create it or fix root / --root")
    if not root.is_dir():
        raise ConfigError(f"root: {root} is not a directory")
    real_root, real_journal = Path(os.path.realpath(root)), Path(os.path.realpath(journal))
    if real_journal == real_root or real_root in real_journal.parents:
        raise ConfigError(
            f"journal: {journal} is inside the watched root {root}",
            hint="the journal must live outside the root, or the agent would journal its own writes",
        )
    if real_journal in real_root.parents:
        raise ConfigError(f"root: {root} is inside the journal directory {journal}")


def rsync_local_path(dest: str) -> str | None:
    """The path of an rsync destination on this machine, or None for a remote
    one: ``rsync://...``, and ``host:path`` / ``host::module`` (a colon
    before any slash), as rsync itself tells them apart."""
    if dest.startswith("rsync://"):
        return None
    colon, slash = dest.find(":"), dest.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):
        return None
    return dest


def _mirror_path(target: TargetConfig) -> str | None:
    if isinstance(target, LocalTarget):
        return os.fspath(target.path)
    if isinstance(target, RsyncTarget):
        return rsync_local_path(target.dest)
    return None


def _check_targets(root: Path, targets: Sequence[TargetConfig]) -> None:
    """A mirror on this machine must neither be the root, nor lie inside it,
    nor contain it, symlinks resolved (for a path not created yet, through its
    existing ancestors): the agent would copy the tree into itself forever or
    overwrite the source."""
    real_root = Path(os.path.realpath(root))
    for target in targets:
        path = _mirror_path(target)
        if path is None:
            continue
        real = Path(os.path.realpath(os.path.abspath(os.path.expanduser(path))))
        if real == real_root:
            how = "is the watched root"
        elif real_root in real.parents:
            how = "lies inside the watched root"
        elif real in real_root.parents:
            how = "contains the watched root"
        else:
            continue
        raise ConfigError(
            f"target {target.name!r}: {path} {how} {root} (resolved: {real})",
            hint="put the mirror outside the root, in a directory that does not contain the root",
        )
