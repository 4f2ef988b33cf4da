"""The watch table: inotify watch descriptor <-> directory path relative to
the root (pure bookkeeping, kept in step with moves by :mod:`agent.watch.events`)."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["WatchTable", "under", "reroot"]


def under(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top + b"/")


def reroot(path: bytes, old: bytes, new: bytes) -> bytes:
    return new + path[len(old) :] if under(path, old) else path


class WatchTable:
    """wd <-> directory path (relative to the root, ``b""`` = root)."""

    def __init__(self) -> None:
        self._path: dict[int, bytes] = {}
        self._wd: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._path)

    def __contains__(self, wd: object) -> bool:
        return wd in self._path

    def items(self) -> Iterator[tuple[int, bytes]]:
        return iter(list(self._path.items()))

    def path(self, wd: int) -> bytes | None:
        return self._path.get(wd)

    def wd(self, path: bytes) -> int | None:
        return self._wd.get(path)

    @property
    def root_wd(self) -> int | None:
        return self._wd.get(b"")

    def add(self, wd: int, path: bytes) -> None:
        """Record a watch. The kernel returns an existing wd for an inode that
        is already watched: then the directory moved, and its subtree with it."""
        old = self._path.get(wd)
        if old is not None and old != path:
            self.rename(old, path)
            return
        self._path[wd] = path
        self._wd[path] = wd

    def discard(self, wd: int) -> None:
        path = self._path.pop(wd, None)
        if path is not None and self._wd.get(path) == wd:
            del self._wd[path]

    def wds_under(self, top: bytes) -> frozenset[int]:
        return frozenset(wd for wd, p in self._path.items() if under(p, top))

    def rename(self, old: bytes, new: bytes) -> None:
        """Rewrite ``old`` and every descendant path to live under ``new``."""
        moved = [(wd, p) for wd, p in self._path.items() if under(p, old)]
        for wd, p in moved:
            if self._wd.get(p) == wd:
                del self._wd[p]
        for wd, p in moved:
            q = reroot(p, old, new)
            self._path[wd] = q
            self._wd[q] = wd

    def drop_under(self, top: bytes) -> tuple[int, ...]:
        """Forget ``top`` and its subtree; return the wds to remove from the kernel."""
        wds = tuple(self.wds_under(top))
        for wd in wds:
            self.discard(wd)
        return wds
