"""Factory for the shipper contract suite: an MsyncShipper over the msync
double with two members (mk2, mk3), both up, whose base is the root."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.operate.config import MsyncTarget
from agent.ship.base import Shipper
from agent.ship.msync.shipper import MsyncShipper
from tests.doubles.fixtures import MsyncDouble, make_double

__all__ = ["MsyncRig", "make_msync_shipper"]

_CONSOLE = "tcp:127.0.0.1:5000"


@dataclass
class MsyncRig:
    """The shipper, the member mirror dirs, and a switch for the daemon.
    Unpacks like ``(shipper, mirrors)``."""

    shipper: Shipper
    mirrors: list[Path]
    double: MsyncDouble

    def __iter__(self) -> Iterator[object]:
        return iter((self.shipper, self.mirrors))

    def stop_target(self) -> None:
        """The daemon stops listening: msync answers ``can't connect``, rc 1."""
        self.double.update(listening=[])

    def start_target(self) -> None:
        self.double.update(listening=[_CONSOLE])


def make_msync_shipper(tmp_path: Path, root: Path, excludes: Sequence[str] = ()) -> MsyncRig:
    """The shipper and the member mirror dirs to compare with ``root``."""
    dbl = make_double(tmp_path / "msync-double", base=root, jail=tmp_path, listening=[_CONSOLE])
    target = MsyncTarget(name="cluster", members=("mk2", "mk3"), msync=str(dbl.msync), base=root)
    shipper = MsyncShipper(target, root, env=dbl.env(), excludes=excludes)
    return MsyncRig(shipper, dbl.member_dirs(), dbl)
