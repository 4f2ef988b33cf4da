"""Transports that bring mirrors up to date: local directory, rsync, msync."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.config import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig

from .base import Outcome, Shipper, ShipResult

__all__ = ["Outcome", "ShipResult", "Shipper", "make_shipper"]


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
