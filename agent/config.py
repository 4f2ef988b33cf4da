"""Agent configuration: typed, validated, from a TOML file and CLI flags.

(The types are fixed here; parsing and validation live in this module too.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalTarget", "RsyncTarget", "MsyncTarget", "TargetConfig", "Config", "tracks_of"]


@dataclass(frozen=True)
class LocalTarget:
    name: str
    path: Path
    kind: str = "local"


@dataclass(frozen=True)
class RsyncTarget:
    name: str
    dest: str  # local path, rsync://host/module/path, or host:path (ssh)
    rsync: str = "rsync"
    options: tuple[str, ...] = ()  # extra rsync options, e.g. ("--password-file=/etc/x",)
    timeout_s: float = 300.0
    kind: str = "rsync"


@dataclass(frozen=True)
class MsyncTarget:
    name: str
    members: tuple[str, ...] = ()  # expected makuosan members; each gets its own track
    console: str | None = None  # msync -c (tcp:HOST:PORT or unix:PATH)
    password_file: Path | None = None  # msync -K
    msync: str = "msync"
    base: Path | None = None  # makuosan's -b; defaults to the root
    batch: int = 200  # paths per msync invocation
    concurrency: int = 4  # msync processes at once (the daemon has 8 console slots)
    timeout_s: float = 300.0
    kind: str = "msync"


TargetConfig = LocalTarget | RsyncTarget | MsyncTarget


@dataclass(frozen=True)
class Config:
    root: Path
    journal: Path
    targets: tuple[TargetConfig, ...] = ()
    exclude: tuple[str, ...] = ()
    settle_ms: int = 200
    retention_s: float = 7 * 86400.0
    log_level: str = "info"
    metrics_port: int | None = None
    rescan_interval_s: float | None = None  # periodic safety scan; None = off
    max_attempts: int = 5  # permanent failures before a path is dead-lettered
    retry_max_s: float = 60.0  # cap of the exponential retry backoff
    extra: dict[str, object] = field(default_factory=dict)


def tracks_of(target: TargetConfig) -> tuple[str, ...]:
    """Progress tracks of a target: one per expected msync member, else the name."""
    if isinstance(target, MsyncTarget) and target.members:
        return tuple(f"{target.name}/{m}" for m in target.members)
    return (target.name,)
