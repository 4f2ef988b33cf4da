"""What the shippers are told about their targets: typed settings, filled by
the configuration (agent/operate/config.py), which the shippers never import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalTarget", "MsyncTarget", "RsyncTarget", "TargetConfig", "tracks_of"]


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
    stall_s: float = 3.0  # an msync call silent this long is blocked on a member that stopped answering
    console_relay: bool = True  # reach a TCP console through a relay that acknowledges at once
    kind: str = "msync"


TargetConfig = LocalTarget | RsyncTarget | MsyncTarget


def tracks_of(target: TargetConfig) -> tuple[str, ...]:
    """Progress tracks of a target: one per expected msync member, else the name."""
    if isinstance(target, MsyncTarget) and target.members:
        return tuple(f"{target.name}/{m}" for m in target.members)
    return (target.name,)
