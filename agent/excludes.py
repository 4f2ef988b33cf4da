"""Exclude patterns with gitignore-style semantics, matched on ``bytes`` paths.

Rules (a subset of gitignore, no negation):

- a pattern without ``/`` matches the basename at any depth (``*.tmp``);
- a leading ``/`` or an inner ``/`` anchors the pattern at the root
  (``/build``, ``logs/*.gz``);
- a trailing ``/`` matches directories only (``cache/``);
- ``*``, ``?`` and ``[...]`` never cross ``/``; a ``**`` segment matches zero
  or more whole directories (``a/**/b``, ``**/tmp``); a trailing ``/**``
  matches everything inside (``logs/**``), not the directory itself.

An excluded directory excludes its whole subtree: :meth:`Excludes.match`
answers True for any path below it, so callers that receive a path from
elsewhere (an event, a replay) need not walk its ancestors themselves, and
walkers may simply not descend.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Excludes"]

_GLOBSTAR = b"**"


@dataclass(frozen=True, slots=True)
class _Pattern:
    segments: tuple[bytes, ...]  # anchored: every segment; basename: exactly one
    anchored: bool
    dir_only: bool

    def matches(self, parts: Sequence[bytes], is_dir: bool) -> bool:
        """Does this pattern match the path split into ``parts`` (itself, not ancestors)?"""
        if self.dir_only and not is_dir:
            return False
        if not self.anchored:
            return fnmatch.fnmatchcase(parts[-1], self.segments[0])
        return _match_segments(self.segments, tuple(parts))


def _match_segments(pattern: tuple[bytes, ...], parts: tuple[bytes, ...]) -> bool:
    """Segment-wise glob match where a ``**`` segment eats zero or more parts."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == _GLOBSTAR:  # a trailing "/**" matches what is inside, not the directory itself
        first = 1 if not rest else 0
        return any(_match_segments(rest, parts[i:]) for i in range(first, len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_segments(rest, parts[1:])


def _compile(pattern: str) -> _Pattern | None:
    raw = os.fsencode(pattern)
    if raw.startswith(b"!"):
        raise ValueError(f"exclude pattern {pattern!r}: negation ('!') is not supported")
    dir_only = raw.endswith(b"/")
    raw = raw.rstrip(b"/")
    anchored = b"/" in raw
    raw = raw.lstrip(b"/")
    segments = tuple(s for s in raw.split(b"/") if s)
    if not segments:
        return None  # empty or "/" alone: matches nothing rather than everything
    # collapse runs of "**" (equivalent, and keeps the matcher's backtracking small)
    collapsed: list[bytes] = []
    for seg in segments:
        if not (seg == _GLOBSTAR and collapsed and collapsed[-1] == _GLOBSTAR):
            collapsed.append(seg)
    return _Pattern(tuple(collapsed), anchored, dir_only)


class Excludes:
    """A compiled, immutable set of exclude patterns. Thread-safe (no state)."""

    __slots__ = ("_patterns", "patterns")

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        compiled = (_compile(p) for p in self.patterns)
        self._patterns: tuple[_Pattern, ...] = tuple(p for p in compiled if p is not None)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __repr__(self) -> str:
        return f"Excludes({list(self.patterns)!r})"

    def match(self, relpath: bytes, is_dir: bool) -> bool:
        """True when ``relpath`` (relative to the root, no leading ``/``) or any
        of its parent directories is excluded. The root itself (``b""``) never is."""
        if not self._patterns:
            return False
        parts = [p for p in relpath.split(b"/") if p]
        last = len(parts) - 1
        for i in range(len(parts)):
            prefix = parts[: i + 1]
            dir_here = is_dir if i == last else True
            if any(p.matches(prefix, dir_here) for p in self._patterns):
                return True
        return False

    def match_self(self, relpath: bytes, is_dir: bool) -> bool:
        """Like :meth:`match` but ignores ancestors: for walkers that already
        skip excluded directories and want to test one child cheaply."""
        if not self._patterns:
            return False
        parts = [p for p in relpath.split(b"/") if p]
        return bool(parts) and any(p.matches(parts, is_dir) for p in self._patterns)
