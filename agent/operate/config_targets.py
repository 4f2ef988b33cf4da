"""The configured targets: ``[[target]]`` tables, ``--target`` quick specs,
and where a mirror on this machine may lie (never the root, inside it, or
around it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.errors import ConfigError
from agent.operate.config_values import get_typed, int_in, parse_duration, resolve_path, str_list
from agent.ship.targets import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig

__all__ = ["parse_target_spec", "parse_targets", "rsync_local_path", "check_targets"]


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


_TARGET_KEYS: dict[str, dict[str, Callable[[Mapping[str, object], str, str, Path], object]]] = {
    "local": {"path": lambda t, k, w, b: resolve_path(get_typed(t, k, str, w), b)},  # type: ignore[arg-type]
    "rsync": {
        "dest": lambda t, k, w, b: get_typed(t, k, str, w),
        "rsync": lambda t, k, w, b: get_typed(t, k, str, w),
        "options": lambda t, k, w, b: str_list(t, k, w),
        "timeout_s": lambda t, k, w, b: parse_duration(t[k], w + k),
    },
    "msync": {
        "members": lambda t, k, w, b: str_list(t, k, w),
        "console": lambda t, k, w, b: get_typed(t, k, str, w),
        "password_file": lambda t, k, w, b: resolve_path(get_typed(t, k, str, w), b),  # type: ignore[arg-type]
        "msync": lambda t, k, w, b: get_typed(t, k, str, w),
        "base": lambda t, k, w, b: resolve_path(get_typed(t, k, str, w), b),  # type: ignore[arg-type]
        "batch": lambda t, k, w, b: int_in(t, k, w, 1, 100_000),
        "concurrency": lambda t, k, w, b: int_in(t, k, w, 1, 7),
        "timeout_s": lambda t, k, w, b: parse_duration(t[k], w + k),
        "stall_s": lambda t, k, w, b: parse_duration(t[k], w + k),
        "console_relay": lambda t, k, w, b: get_typed(t, k, bool, w),
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
    name = get_typed(table, "name", str, where)
    kind = get_typed(table, "kind", str, where)
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


def parse_targets(
    raw: Mapping[str, object], overrides: Mapping[str, object], base: Path
) -> tuple[TargetConfig, ...]:
    """The ``--target`` specs of ``overrides`` when there are any, else the
    file's ``[[target]]`` tables (relative paths from ``base``); names unique."""
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


def check_targets(root: Path, targets: Sequence[TargetConfig]) -> None:
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
