"""What the replayer records of a plan: the state of every path it puts,
captured *before* shipping, so the manifest never claims a state newer than
the one sent (a change made during the ship is journaled anew).

Read through the one walker and fd-relative lookups: no symlink followed, no
mount point crossed. Which of these states the manifest may take is decided
afterwards (:mod:`agent.ship.manifest_updates`, :mod:`agent.ship.absorb`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import structlog

from agent.ship.actions import ActionKind, Plan
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture_at, capture_in, kind_of, lstat_below
from agent.tree.walk import Walk, root_dev
from journal import FileKind, FileState, Journal

__all__ = ["Capture", "States", "is_dir"]

log = structlog.get_logger()

States = dict[bytes, dict[bytes, FileState | None]]
"""Per action path: the states captured for it (its own, those below a
recursive put, the parent directories the shipper restamps)."""


class Capture:
    """Captures the states of a plan under ``root``."""

    def __init__(
        self, journal: Journal, root: bytes, excludes: Excludes, restamps_parents: Collection[ActionKind]
    ) -> None:
        self.journal = journal
        self.root = root
        self.excludes = excludes
        self.restamps_parents = restamps_parents

    def capture(self, plan: Plan) -> States:
        """The states of every PUT of ``plan`` (call it before shipping)."""
        out: States = {}
        try:
            dev = root_dev(self.root)
        except OSError as exc:  # the root is gone: nothing to capture, the ship decides
            log.warning("capture.failed", path=b"", error=str(exc))
            return out
        cleared = {a.path for a in plan.actions if a.kind == ActionKind.DELETE}
        for action in plan.actions:
            if action.kind != ActionKind.PUT:
                continue
            states = out.setdefault(action.path, {})
            capture_into(states, self.root, action.path, dev)
            if action.recursive and is_dir(states.get(action.path)):
                capture_below(states, self.root, action.path, dev, self.excludes)
                if action.path in cleared:
                    self._vanished_below(action.path, states)
        self._parents(plan, out)
        return out

    def _vanished_below(self, top: bytes, states: dict[bytes, FileState | None]) -> None:
        """A directory moved in goes out as a delete and a recursive put; the
        delete makes the manifest forget everything below ``top``. What it
        knows there that this capture lacks, another track shipped from an
        earlier capture and has vanished since: it counts as found gone, so
        unless the shipped entries explain that (they do not: the move
        removed only its source), every track ships its removal, and a
        mirror that holds it never keeps it because its event was lost."""
        for path in self.journal.manifest_encoded(under=top):
            if path != top and path not in states:
                states[path] = None

    def _parents(self, plan: Plan, out: States) -> None:
        """The mtimes of the parent directories the shipper sets after writing
        in them (its ``restamps_parents`` action kinds): an entry added or
        removed moves a directory's mtime, and the manifest must hold what the
        mirror's directory got, or a restart would see it differ. Only the
        mtime (and ctime) of the manifest's state is renewed, for the same
        directory (inode): its other fields the shipper did not send. A parent
        with its own action in the plan is left to that action."""
        kinds = self.restamps_parents
        own = {a.path for a in plan.actions}
        seen: dict[bytes, FileState | None] = {}
        for action in plan.actions:
            parent = action.path.rpartition(b"/")[0]
            if action.kind not in kinds or not parent or parent in own:
                continue
            if parent not in seen:
                seen[parent] = restamped_parent(self.journal, self.root, parent)
            if seen[parent] is not None:
                out.setdefault(action.path, {})[parent] = seen[parent]


def restamped_parent(journal: Journal, root: bytes, parent: bytes) -> FileState | None:
    """The manifest's state of directory ``parent`` with its mtime now, or
    None when the manifest does not know it as this same directory."""
    old = journal.manifest_get(parent)
    try:
        st = lstat_below(root, parent)
    except OSError:
        return None
    if old is None or st is None or old.kind != FileKind.DIR or kind_of(st.st_mode) != FileKind.DIR:
        return None
    if st.st_ino != old.inode:
        return None
    return replace(old, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def capture_into(states: dict[bytes, FileState | None], root: bytes, rel: bytes, dev: int) -> None:
    """The state of ``rel``, read without leaving the tree (no symlink
    followed, no mount point crossed); a path that is not a clean relative
    one is not captured (the shipper reports it FAILED)."""
    try:
        states[rel] = capture_in(root, rel, dev)
    except ValueError:
        return
    except OSError as exc:  # unreadable or another filesystem: the manifest keeps its old state
        log.warning("capture.failed", path=rel, error=str(exc))


def capture_below(
    states: dict[bytes, FileState | None], root: bytes, rel: bytes, dev: int, excludes: Excludes
) -> None:
    """States of a subtree that arrived by a move, from the one walker that
    never follows a symlink nor crosses a mount point; every entry is read
    relative to its directory's checked fd."""
    walk = Walk(root, excludes, dev, rel)
    for listing in walk:
        prefix = listing.rel + b"/" if listing.rel else b""
        for name in listing.names:
            try:
                states[prefix + name] = capture_at(listing.fd, name, dev)
            except OSError as exc:
                log.warning("capture.failed", path=prefix + name, error=str(exc))


def is_dir(state: FileState | None) -> bool:
    return state is not None and state.kind == FileKind.DIR
