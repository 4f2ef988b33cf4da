"""The agent's exclude patterns as makuosan exclude patterns, and makuosan's
own exclude test (:func:`excluded`). Pure.

makuosan (``common.c``) matches each pattern with ``fnmatch(FNM_PATHNAME)``
against the absolute path of an entry (its base directory joined with the
path; a directory also with a trailing ``/``) and against every suffix of
it that follows a ``/``. So a pattern is unanchored by nature, ``*`` never
crosses ``/``, and a pattern that starts with ``/`` can only match the whole
absolute path. The agent's rules (agent/tree/excludes.py) are translated so that
makuosan's own walks (``-r``) and deletes (``dsync``) skip exactly what the
agent skips:

- a name pattern (``*.tmp``, ``cache/``) stays as it is;
- an anchored pattern (``/build``, ``logs/*.gz``) becomes an absolute one,
  the root's resolved path prepended (a wildcard byte in that path matches
  any byte there);
- a leading ``**/`` (any depth) is dropped and the rest stays unanchored;
- a trailing ``/**`` (everything inside) becomes ``/*``: makuosan does not
  descend into an excluded directory, so its children cover the subtree;
- a ``**`` segment inside a pattern is written once for each depth from 0 to
  :data:`GLOBSTAR_DEPTH` directories; deeper than that it does not reach
  (docs/msync.md).

makuosan on a member matches with that member's own base directory: an
anchored pattern protects a member's paths only where its base is the same
path as the sender's (the usual set-up).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from agent.tree.excludes import Excludes

__all__ = ["GLOBSTAR_DEPTH", "makuosan_patterns", "excluded"]

GLOBSTAR_DEPTH = 8
_GLOBSTAR = b"**"


def _literal(path: bytes) -> bytes:
    """``path`` as a pattern of its own length: makuosan gives up on a path
    shorter than the pattern, so a wildcard byte of the root's own path
    becomes ``?`` (any one byte) rather than a longer escape."""
    return re.sub(rb"[*?\[\\]", b"?", path)


def _expand(segments: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
    """Each inner ``**`` as 0..GLOBSTAR_DEPTH ``*`` segments."""
    if _GLOBSTAR not in segments:
        return [segments]
    i = segments.index(_GLOBSTAR)
    head, tail = segments[:i], segments[i + 1 :]
    return [head + (b"*",) * n + rest for n in range(GLOBSTAR_DEPTH + 1) for rest in _expand(tail)]


def makuosan_patterns(patterns: Sequence[str], root: bytes) -> list[bytes]:
    """makuosan ``--exclude`` patterns for the agent's ``patterns``; ``root``
    is the watched root's resolved absolute path (makuosan joins its base
    directory as ``getcwd`` gives it, without symlinks, to base-relative
    paths, so an entry's absolute path starts with it)."""
    anchor = _literal(root.rstrip(b"/")) + b"/"
    out: list[bytes] = []
    for rule in Excludes(list(patterns)).rules:
        tail = b"/" if rule.dir_only else b""
        segments = rule.segments
        if not rule.anchored:
            out.append(segments[0] + tail)
            continue
        if segments[-1] == _GLOBSTAR:  # everything inside, not the directory itself
            segments = (*segments[:-1], b"*")
            tail = b""
        anchored = True
        if segments[0] == _GLOBSTAR:  # any depth: makuosan's own way of matching
            segments, anchored = segments[1:], False
        for expanded in _expand(segments):
            body = b"/".join(expanded) + tail
            out.append(anchor + body if anchored else body)
    return list(dict.fromkeys(out))


def excluded(path: bytes, patterns: Sequence[bytes], is_dir: bool = False) -> bool:
    """makuosan's own exclude test (docs/msync.md §4.1): each pattern is
    matched, with FNM_PATHNAME, against the absolute ``path`` and every tail
    of it that follows a ``/``, until a tail is shorter than the pattern; a
    directory is tried with a trailing ``/`` too. Only this entry: a walk
    does not enter an excluded directory, which the caller keeps track of."""
    names = [path, path + b"/"] if is_dir else [path]
    return any(_tail_match(name, _pathname_regex(pat), len(pat)) for name in names for pat in patterns)


def _tail_match(path: bytes, regex: re.Pattern[bytes], length: int) -> bool:
    start = 0
    while start < len(path):
        if len(path) - start < length:
            return False
        if regex.fullmatch(path, start):
            return True
        slash = path.find(b"/", start)
        if slash < 0:
            return False
        start = slash + 1
    return False


@functools.lru_cache(maxsize=256)
def _pathname_regex(pattern: bytes) -> re.Pattern[bytes]:
    """fnmatch(3) with FNM_PATHNAME: no wildcard matches ``/``; a backslash
    quotes the next byte."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        elif c == b"*":
            out.append(b"[^/]*")
        elif c == b"?":
            out.append(b"[^/]")
        elif c == b"[" and (end := pattern.find(b"]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            neg = body[:1] in (b"!", b"^")
            body = body[1:] if neg else body
            out.append(b"(?!/)[" + (b"^" if neg else b"") + body.replace(b"\\", b"\\\\") + b"]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)
