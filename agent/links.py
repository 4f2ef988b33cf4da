"""Hard links: a write through one name of a file changes every name.

inotify reports only the name written, so when the replayer ships a file
with several names, the other names it knows (from the manifest's hard-link
index) whose recorded state is not the one just shipped are journaled as
CHANGE, so every name's copy on a mirror becomes current.

The index holds only names whose shipped state already had several links.
A name shipped before the file got its other names is found once by a pass
over the manifest (when the link count says names are unknown); the pass is
not repeated for the same (inode, link count). Names outside the tree or
excluded are never known: their writes reach the mirror only through a name
inside the tree, when that name is next written or scanned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from journal import Entry, FileKind, FileState, Journal, Op

__all__ = ["LinkSpreader", "other_names"]

_Known = dict[int, dict[bytes, FileState]]  # inode -> name -> its manifest state
_SEARCHED_MAX = 100_000  # remembered (inode, nlink) pairs; forgotten all at once when full


def other_names(shipped: Mapping[bytes, FileState], known: _Known) -> list[bytes]:
    """Names to journal again: a known name of a shipped inode whose
    recorded state differs from the shipped one, and that was not itself
    shipped in that state. Pure."""
    out: set[bytes] = set()
    for path, state in shipped.items():
        for other, recorded in known.get(state.inode, {}).items():
            if other == path or recorded == state:
                continue
            if shipped.get(other) == state:
                continue
            out.add(other)
    return sorted(out)


def _linked(states: Mapping[bytes, FileState | None]) -> dict[bytes, FileState]:
    return {p: s for p, s in states.items() if s is not None and s.nlink > 1 and s.kind != FileKind.DIR}


class LinkSpreader:
    """Journals the other names of multiply-linked files a replayer shipped.
    One per replayer thread."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._searched: set[tuple[int, int]] = set()
        self.spread = 0  # names journaled again (for tests and metrics)

    def spread_from(self, states: Mapping[bytes, FileState | None]) -> int:
        """Journal CHANGE for the stale other names of every multiply-linked
        file in ``states`` (captured for paths shipped OK); returns how many."""
        shipped = _linked(states)
        if not shipped:
            return 0
        known = self._names({s.inode for s in shipped.values()}, shipped)
        names = other_names(shipped, known)
        if names:
            now = time.time_ns()
            self.journal.append([Entry(Op.CHANGE, p, time_ns=now) for p in names])
            self.spread += len(names)
        return len(names)

    def _names(self, inodes: set[int], states: Mapping[bytes, FileState]) -> _Known:
        """Known names per inode: the index, and for a group it cannot hold
        completely (fewer names than links) one pass over the manifest."""
        known = self.journal.linked_names(sorted(inodes))
        nlinks: dict[int, int] = {}
        names: dict[int, set[bytes]] = {i: set(known.get(i, {})) for i in inodes}
        for path, state in states.items():
            nlinks[state.inode] = state.nlink
            names[state.inode].add(path)
        incomplete = {i for i in inodes if len(names[i]) < nlinks[i] and (i, nlinks[i]) not in self._searched}
        if incomplete:
            for inode, found in self.journal.manifest_with_inodes(incomplete).items():
                known.setdefault(inode, {}).update(found)
            if len(self._searched) + len(incomplete) > _SEARCHED_MAX:
                self._searched.clear()
            self._searched.update((i, nlinks[i]) for i in incomplete)
        return known
