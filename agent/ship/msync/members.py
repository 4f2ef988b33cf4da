"""The expected makuosan members of one msync target (docs/design.md §7):
one progress track each, what ``msync --members`` last listed, since when a
member is missing from it, and which members stalled a call lately."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from agent.ship import process as _exec
from agent.ship.msync.commands import build_argv
from agent.ship.msync.output import parse_members
from agent.ship.msync.stall import Suspects
from agent.ship.targets import MsyncTarget

__all__ = ["Members"]


class Members:
    """``of_track`` maps each member's track (``target/member``) to its name;
    ``suspects`` holds the members that stalled a call within ``suspect_s``."""

    def __init__(self, target: MsyncTarget, suspect_s: float) -> None:
        self.of_track = {f"{target.name}/{m}": os.fsencode(m) for m in target.members}
        self.suspects = Suspects(hold_s=suspect_s)
        self._lock = threading.Lock()
        self._absent_since: dict[str, float] = {}  # track -> monotonic time first seen absent

    def look(
        self, run: Callable[[list[bytes]], _exec.ExecResult], msync: str
    ) -> tuple[list[bytes] | None, str]:
        """The members ``msync --members`` lists now (``run`` starts msync with
        the target's console options), or None and why the list could not be
        read; either way the absence times move."""
        listed, why = _read(run, msync)
        now = time.monotonic()
        with self._lock:
            for track, member in self.of_track.items():
                if listed is not None and member in listed:
                    self._absent_since.pop(track, None)
                else:
                    self._absent_since.setdefault(track, now)
        return listed, why

    def absent_seconds(self) -> dict[str, float]:
        """Per member track: seconds since it was first seen missing from
        ``msync --members`` (or the list could not be read), 0 when listed
        at the last look. Only a ship looks, so an idle target keeps its
        last answer."""
        now = time.monotonic()
        with self._lock:
            return {t: now - self._absent_since[t] if t in self._absent_since else 0.0 for t in self.of_track}


def _read(run: Callable[[list[bytes]], _exec.ExecResult], msync: str) -> tuple[list[bytes] | None, str]:
    res = run(build_argv(os.fsencode(msync), members=True))
    if res.missing:
        return None, f"msync not found: {msync}"
    if res.timed_out or res.returncode != 0:
        first = (res.stderr or res.stdout).strip().split(b"\n")[0].decode("utf-8", "replace")
        return None, f"msync --members failed (rc {res.returncode}): {first}"
    names = parse_members(res.stdout)
    if names is None:
        return None, "msync --members printed no member list"
    return [n for n in names if n], ""
