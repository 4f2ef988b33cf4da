"""Transports that bring mirrors up to date: local directory, rsync, msync."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config, LocalTarget, MsyncTarget, RsyncTarget, TargetConfig

from .base import Outcome, Shipper, ShipResult

if TYPE_CHECKING:
    from agent.replayer import Replayer
    from journal import Journal

__all__ = ["Outcome", "ShipResult", "Shipper", "build_replayers", "make_shipper"]


def make_shipper(target: TargetConfig, root: Path, excludes: Sequence[str] = ()) -> Shipper:
    """The shipper for one configured target (imported lazily: each transport
    pulls in only what it needs). ``excludes`` are part of every shipper: a
    directory that goes out with its subtree carries no excluded entry, and a
    mirror keeps what it holds at an excluded path."""
    if isinstance(target, LocalTarget):
        from .local import LocalShipper

        return LocalShipper(target, root, excludes=excludes)
    if isinstance(target, RsyncTarget):
        from .rsync import RsyncShipper

        return RsyncShipper(target, root, excludes=excludes)
    if isinstance(target, MsyncTarget):
        from .msync import MsyncShipper

        return MsyncShipper(target, root, excludes=excludes)
    raise TypeError(f"unknown target type {type(target).__name__}")


def build_replayers(
    journal: Journal, config: Config, targets: Sequence[TargetConfig], *, settle_s: float
) -> list[Replayer]:
    """One replayer per target, wired as ``agent run`` and ``agent replay``
    both need it: the shipper and the capture share the exclude patterns,
    retries follow the configuration."""
    from agent.excludes import Excludes
    from agent.replayer import Replayer

    excludes = Excludes(list(config.exclude))
    return [
        Replayer(
            journal,
            make_shipper(target, config.root, config.exclude),
            config.root,
            settle_s=settle_s,
            max_attempts=config.max_attempts,
            retry_cap_s=config.retry_max_s,
            excludes=excludes,
        )
        for target in targets
    ]
