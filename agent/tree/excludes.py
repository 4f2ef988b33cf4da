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

Speed: a walk tests every name of the tree, so all basename patterns are
compiled into one regex (one for the directory-only ones) and a name is
matched once, not once per pattern; only anchored patterns are matched
segment by segment. A walker calls :meth:`Excludes.prune_names` on a listing
(no stat needed: those patterns do not depend on the type) and, per entry,
the check :meth:`Excludes.child_matcher` gives for its directory, if any.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Excludes", "Rule"]

_GLOBSTAR = b"**"

_NameMatch = Callable[[bytes], object]  # truthy when the name matches


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled pattern: its ``/``-separated segments, anchored at the root or
    matching a name at any depth, for directories only or for any type."""

    segments: tuple[bytes, ...]  # anchored: every segment; basename: exactly one
    anchored: bool
    dir_only: bool

    def matches(self, parts: Sequence[bytes], is_dir: bool) -> bool:
        """Does this pattern match the path split into ``parts`` (itself, not ancestors)?"""
        if self.dir_only and not is_dir:
            return False
        if not self.anchored:  # basename patterns are matched by Excludes' combined regexes
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


def _may_match_child(segments: tuple[bytes, ...], parent: list[bytes]) -> bool:
    """Could the anchored ``segments`` match some entry of the directory
    ``parent``? Exactly decided without ``**``; assumed with it."""
    if _GLOBSTAR in segments:
        return True
    if len(segments) != len(parent) + 1:
        return False
    return all(fnmatch.fnmatchcase(part, seg) for part, seg in zip(parent, segments))


def _compile(pattern: str) -> Rule | None:
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
    return Rule(tuple(collapsed), anchored, dir_only)


def _required_literal(glob: bytes) -> bytes:
    """The longest run of plain bytes every name matching ``glob`` contains
    (only the part before any ``[`` is looked at); ``b""`` when there is none."""
    return max(re.split(rb"[*?]", glob.split(b"[", 1)[0]), key=len)


def _name_matcher(globs: Sequence[bytes]) -> _NameMatch | None:
    """One regex for several basename globs, with ``fnmatch.fnmatchcase``'s
    semantics on bytes (which are matched as Latin-1, so byte for byte)."""
    if not globs:
        return None
    alternatives = (fnmatch.translate(g.decode("latin-1")) for g in dict.fromkeys(globs))
    return re.compile("|".join(alternatives).encode("latin-1")).match


class Excludes:
    """A compiled, immutable set of exclude patterns. Thread-safe (no state)."""

    __slots__ = ("_anchored", "_any_literals", "_any_name", "_dir_name", "_rules", "patterns")

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        compiled = [c for c in (_compile(p) for p in self.patterns) if c is not None]
        self._rules = tuple(compiled)
        basename = [c for c in compiled if not c.anchored]
        any_globs = [c.segments[0] for c in basename if not c.dir_only]
        self._any_name = _name_matcher(any_globs)
        literals = tuple(dict.fromkeys(_required_literal(g) for g in any_globs))
        self._any_literals = None if b"" in literals else literals  # None: no cheap pre-check
        self._dir_name = _name_matcher([c.segments[0] for c in basename if c.dir_only])
        self._anchored: tuple[Rule, ...] = tuple(c for c in compiled if c.anchored)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The compiled patterns, for translating them into another tool's rules."""
        return self._rules

    def __bool__(self) -> bool:
        return self._any_name is not None or self._dir_name is not None or bool(self._anchored)

    def __repr__(self) -> str:
        return f"Excludes({list(self.patterns)!r})"

    @property
    def typed(self) -> bool:
        """True when some pattern needs the entry's type or its whole path
        (directory-only or anchored): :meth:`child_matcher` may give a check."""
        return self._dir_name is not None or bool(self._anchored)

    def match(self, relpath: bytes, is_dir: bool) -> bool:
        """True when ``relpath`` (relative to the root, no leading ``/``) or any
        of its parent directories is excluded. The root itself (``b""``) never is."""
        if not self:
            return False
        parts = [p for p in relpath.split(b"/") if p]
        last = len(parts) - 1
        return any(
            self._match_parts(parts[: i + 1], is_dir if i == last else True) for i in range(len(parts))
        )

    def match_self(self, relpath: bytes, is_dir: bool) -> bool:
        """Like :meth:`match` but ignores ancestors: for walkers that already
        skip excluded directories and want to test one child cheaply."""
        if not self:
            return False
        name = relpath.rpartition(b"/")[2]
        if not name or self._anchored:  # anchored patterns need every component
            parts = [p for p in relpath.split(b"/") if p]
            return bool(parts) and self._match_parts(parts, is_dir)
        if self._any_name is not None and self._any_name(name):
            return True
        return is_dir and self._dir_name is not None and self._dir_name(name) is not None

    def prune_names(self, names: list[bytes]) -> list[bytes]:
        """``names`` (of one directory's entries) without those a basename
        pattern for any type excludes; no stat is needed to tell. When the
        listing holds none of the patterns' required literals (``.swp`` of
        ``*.swp``: one substring search each, names never contain ``/``), no
        name is matched one by one."""
        if self._any_name is None:
            return names
        if self._any_literals is not None:
            listing = b"/".join(names)
            if not any(lit in listing for lit in self._any_literals):
                return names
        return list(itertools.filterfalse(self._any_name, names))

    def child_matcher(self, rel: bytes) -> Callable[[bytes, bool], bool] | None:
        """For the entries of the directory ``rel``: ``(name, is_dir) ->
        excluded`` by the patterns :meth:`prune_names` does not apply
        (directory-only and anchored ones), or None when none of those can
        match there (an anchored pattern without ``**`` fits one depth only)."""
        parent = [p for p in rel.split(b"/") if p]
        anchored = [p for p in self._anchored if _may_match_child(p.segments, parent)]
        dir_name = self._dir_name
        if not anchored and dir_name is None:
            return None

        def excluded(name: bytes, is_dir: bool) -> bool:
            if is_dir and dir_name is not None and dir_name(name):
                return True
            return any(p.matches([*parent, name], is_dir) for p in anchored)

        return excluded

    def _match_parts(self, parts: list[bytes], is_dir: bool) -> bool:
        """Does the path ``parts`` (non-empty) itself match a pattern?"""
        name = parts[-1]
        if self._any_name is not None and self._any_name(name):
            return True
        if is_dir and self._dir_name is not None and self._dir_name(name):
            return True
        return any(p.matches(parts, is_dir) for p in self._anchored)
