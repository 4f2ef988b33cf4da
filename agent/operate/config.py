"""Agent configuration: typed, validated, from a TOML file and CLI flags.

The values are read by config_values.py, the targets by config_targets.py.
Every error names the offending key and raises :class:`ConfigError` (an
:class:`~agent.errors.AgentError`), which the CLI turns into exit status 2.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.operate.config_targets import check_targets, parse_targets
from agent.operate.config_values import (
    get_typed,
    int_in,
    parse_duration,
    parse_log_level,
    resolve_path,
    str_list,
)
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
    "load_config",
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
    scan_helpers: int | None = None  # processes sharing a scan's walk; None = one per further CPU, at most 3
    source: Path | None = None  # the file this came from, if any


def find_target(config: Config, name: str) -> TargetConfig:
    for target in config.targets:
        if target.name == name:
            return target
    known = ", ".join(t.name for t in config.targets) or "none"
    raise ConfigError(f"--target: no target named {name!r} (configured: {known})")


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
    "scan_helpers",
    "target",
}


def _scalar_options(raw: Mapping[str, object]) -> dict[str, object]:
    """Top-level keys other than paths and targets, typed and range-checked."""
    out: dict[str, object] = {}
    if "exclude" in raw:
        out["exclude"] = str_list(raw, "exclude", "")
        _check_excludes(out["exclude"])  # type: ignore[arg-type]
    if "settle_ms" in raw:
        out["settle_ms"] = int_in(raw, "settle_ms", "", 0, 60_000)
    if "quiet_ms" in raw:
        out["quiet_ms"] = int_in(raw, "quiet_ms", "", 0, 60_000)
    if "retention" in raw:
        out["retention_s"] = parse_duration(raw["retention"], "retention")
    if "log_level" in raw:
        out["log_level"] = parse_log_level(get_typed(raw, "log_level", str, ""), "log_level")  # type: ignore[arg-type]
    if "metrics_port" in raw:
        out["metrics_port"] = int_in(raw, "metrics_port", "", 0, 65535)
    if "metrics_address" in raw:
        out["metrics_address"] = get_typed(raw, "metrics_address", str, "")
    if "rescan_interval" in raw:
        seconds = parse_duration(raw["rescan_interval"], "rescan_interval")
        out["rescan_interval_s"] = seconds or None
    if "max_attempts" in raw:
        out["max_attempts"] = int_in(raw, "max_attempts", "", 1, 1_000_000)
    if "retry_max" in raw:
        out["retry_max_s"] = parse_duration(raw["retry_max"], "retry_max")
    if "scan_helpers" in raw:
        out["scan_helpers"] = int_in(raw, "scan_helpers", "", 0, 8)
    return out


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
    targets = parse_targets(raw, overrides, base)
    if overrides.get("exclude"):
        options["exclude"] = tuple(overrides["exclude"])  # type: ignore[arg-type]
        _check_excludes(options["exclude"])  # type: ignore[arg-type]
    if overrides.get("log_level"):
        options["log_level"] = parse_log_level(str(overrides["log_level"]), "--log-level")
    if root is not None:
        _check_paths(root, journal)
        check_targets(root, targets)
    return Config(root=root, journal=journal, targets=targets, source=file, **options)  # type: ignore[arg-type]


def _has(raw: Mapping[str, object], overrides: Mapping[str, object], key: str) -> bool:
    return bool(overrides.get(key)) or key in raw


def _top_path(raw: Mapping[str, object], overrides: Mapping[str, object], key: str, base: Path) -> Path:
    if overrides.get(key):
        return Path(os.path.abspath(os.path.expanduser(str(overrides[key]))))
    if key not in raw:
        raise ConfigError(f"{key}: missing", hint=f"set {key} in the config file or pass --{key}")
    return resolve_path(get_typed(raw, key, str, ""), base)  # type: ignore[arg-type]


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
