"""Hard links: a write through one name of a file changes every name.

inotify reports only the name written, so when the replayer ships a file
with several names, the other names it knows (from the manifest's hard-link
index) whose recorded state is not the one just shipped are journaled as
CHANGE, so every name's copy on a mirror becomes current. A name found gone
when shipped may have been written just before its removal: the other
names of the file it was are journaled too. The names just
shipped are journaled with them: the group then goes out in one plan, where
a shipper can link the names on the mirror instead of copying each.

The index holds only names whose shipped state already had several links.
A name shipped before the file got its other names is found once by a pass
over the manifest (when the link count says names are unknown); the pass is
not repeated for the same (inode, link count). Names outside the tree or
excluded are never known: their writes reach the mirror only through a name
inside the tree, when that name is next written or scanned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from journal import Entry, FileKind, FileState, Journal, Op

__all__ = ["LinkSpreader", "other_names"]

_Known = dict[int, dict[bytes, FileState]]  # inode -> name -> its manifest state
WHOLE_MAX = 64  # larger groups are re-sent only for their stale names
_SEARCHED_MAX = 100_000  # remembered (inode, nlink) pairs; forgotten all at once when full


def other_names(
    shipped: Mapping[bytes, FileState],
    known: _Known,
    busy: Callable[[bytes], bool] = lambda p: False,
    whole: bool = False,
) -> list[bytes]:
    """Names to journal again. For each shipped inode with a known name whose
    recorded state differs from the shipped one: that name, and the names
    just shipped with it, so that the group travels in one plan and a
    shipper can keep its names linked on the mirror. With ``whole`` (a
    shipper that links only names sent together), any known name missing
    from the shipment makes the group travel again, stale or not (groups
    up to ``WHOLE_MAX`` names). A ``busy`` name (in this plan, or failing
    and held back) triggers nothing: it has its own entry, and a name that
    keeps failing must not make the group circle forever. Pure."""
    groups: dict[int, list[bytes]] = {}
    for path, state in shipped.items():
        groups.setdefault(state.inode, []).append(path)
    out: set[bytes] = set()
    for inode, paths in groups.items():
        state, names = shipped[paths[0]], known.get(inode, {})
        regroup = whole and len(names) <= WHOLE_MAX
        missing = [
            other
            for other, recorded in names.items()
            if other not in shipped and (regroup or recorded != state) and not busy(other)
        ]
        if missing:
            out.update(missing, paths)
    return sorted(out)


def _linked(states: Mapping[bytes, FileState | None]) -> dict[bytes, FileState]:
    return {p: s for p, s in states.items() if s is not None and s.nlink > 1 and s.kind != FileKind.DIR}


class LinkSpreader:
    """Journals the other names of multiply-linked files a replayer shipped.
    One per replayer thread."""

    def __init__(self, journal: Journal, *, whole: bool = False) -> None:
        self.journal = journal
        self.whole = whole  # the shipper links only names sent in one plan: always send groups whole
        self._searched: set[tuple[int, int]] = set()
        self.spread = 0  # names journaled again (for tests and metrics)

    def spread_from(
        self, states: Mapping[bytes, FileState | None], busy: Callable[[bytes], bool] = lambda p: False
    ) -> int:
        """Journal CHANGE for the stale other names of every multiply-linked
        file in ``states`` (captured for paths shipped OK), see
        :func:`other_names`; returns how many entries."""
        shipped = _linked(states)
        if not shipped:
            return 0
        known = self._names({s.inode for s in shipped.values()}, shipped)
        names = other_names(shipped, known, busy, self.whole)
        if names:
            now = time.time_ns()
            self.journal.append([Entry(Op.CHANGE, p, time_ns=now) for p in names])
            self.spread += len(names)
        return len(names)

    def spread_from_removed(
        self, paths: Iterable[bytes], busy: Callable[[bytes], bool] = lambda p: False
    ) -> int:
        """Journal CHANGE for the other known names of multiply-linked files
        at ``paths``, which a ship found gone (call before the manifest
        forgets them). A write through a name just before its removal is
        reported by inotify for that name alone, and nothing captured shows
        it any more: the other names may have changed, so they go out again."""
        gone = {p: s for p in paths if (s := self.journal.manifest_get(p)) is not None}
        linked = _linked(gone)
        if not linked:
            return 0
        known = self.journal.linked_names(sorted({s.inode for s in linked.values()}))
        names = sorted(
            {
                other
                for state in linked.values()
                for other in known.get(state.inode, {})
                if other not in gone and not busy(other)
            }
        )
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
