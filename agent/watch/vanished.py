"""New directories that vanished before the watcher could watch them.

``mkdir a/b/new; mv a/b a/c``: when the watcher comes to watch ``a/b/new``,
that path is gone, and the move of the already watched ``a/b`` brings no
scan with it. The watcher keeps such paths here until a move of a directory
above them tells where they are now, or a delete says they are gone.
"""

from __future__ import annotations

__all__ = ["VanishedDirs"]


def _at_or_below(path: bytes, top: bytes) -> bool:
    return top == b"" or path == top or path.startswith(top + b"/")


class VanishedDirs:
    """A bounded set of root-relative paths, taken and dropped by subtree."""

    def __init__(self, cap: int) -> None:
        self._paths: set[bytes] = set()
        self._cap = cap

    def __len__(self) -> int:
        return len(self._paths)

    def add(self, rel: bytes) -> bool:
        """Keep ``rel``; False (and the set emptied) when it is full: the
        caller must then find every directory again by other means."""
        if len(self._paths) >= self._cap:
            self._paths.clear()
            return False
        self._paths.add(rel)
        return True

    def forget(self, top: bytes) -> None:
        """Drop ``top`` and everything below it (they were deleted)."""
        if self._paths:
            self._paths -= {p for p in self._paths if _at_or_below(p, top)}

    def take_under(self, top: bytes) -> list[bytes]:
        """Remove and return ``top`` and the paths below it, in path order."""
        if not self._paths:
            return []
        taken = sorted(p for p in self._paths if _at_or_below(p, top))
        self._paths.difference_update(taken)
        return taken

    def clear(self) -> None:
        self._paths.clear()
