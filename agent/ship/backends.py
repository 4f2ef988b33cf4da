"""Transports that bring mirrors up to date: local directory, rsync, msync."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.ship.base import Outcome, Shipper, ShipResult
from agent.ship.targets import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig

if TYPE_CHECKING:
    from agent.operate.config import Config
    from agent.ship.replayer import Replayer
    from journal import Journal

__all__ = ["Outcome", "ShipResult", "Shipper", "build_replayers", "make_shipper"]


def make_shipper(target: TargetConfig, root: Path, excludes: Sequence[str] = ()) -> Shipper:
    """The shipper for one configured target (imported lazily: each transport
    pulls in only what it needs). ``excludes`` are part of every shipper: a
    directory that goes out with its subtree carries no excluded entry, and a
    mirror keeps what it holds at an excluded path."""
    if isinstance(target, LocalTarget):
        from agent.ship.local.shipper import LocalShipper

        return LocalShipper(target, root, excludes=excludes)
    if isinstance(target, RsyncTarget):
        from agent.ship.rsync.shipper import RsyncShipper

        return RsyncShipper(target, root, excludes=excludes)
    if isinstance(target, MsyncTarget):
        from agent.ship.msync.shipper import MsyncShipper

        return MsyncShipper(target, root, excludes=excludes)
    raise TypeError(f"unknown target type {type(target).__name__}")


def build_replayers(
    journal: Journal, config: Config, targets: Sequence[TargetConfig], *, settle_s: float, quiet_s: float
) -> list[Replayer]:
    """One replayer per target, wired as ``agent run`` and ``agent replay``
    both need it: the shipper and the capture share the exclude patterns,
    retries follow the configuration."""
    from agent.ship.replayer import Replayer
    from agent.tree.excludes import Excludes

    excludes = Excludes(list(config.exclude))
    return [
        Replayer(
            journal,
            make_shipper(target, config.root, config.exclude),
            config.root,
            settle_s=settle_s,
            quiet_s=quiet_s,
            max_attempts=config.max_attempts,
            retry_cap_s=config.retry_max_s,
            excludes=excludes,
        )
        for target in targets
    ]
