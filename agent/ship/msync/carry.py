"""What msync can carry exactly (docs/msync.md §3, §5): which base-relative
paths it can name, their console tokens, the console command's length limit,
the trees makuosan's own ``-r`` scanner carries, and the mtime second a
member cannot tell apart. Pure: nothing here touches the file system.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_COMMAND",
    "MAX_COMPONENT",
    "Prepared",
    "carry_problem",
    "same_second",
    "escape",
    "prepare",
    "command_prefix",
    "fits",
    "scanner_carries",
]

MAX_COMMAND = 254  # msync: "<cmd> PATH" plus "\r\n" in a 256-byte buffer (§3)
MAX_COMPONENT = 240  # members write NAME.makuoNNNNNN; NAME_MAX is 255 (§3)


@dataclass(frozen=True, slots=True)
class Prepared:
    """``echo``: the base-relative path as the daemon reports it (without a
    ``./`` prefix); ``token``: the escaped argv word that names it."""

    echo: bytes
    token: bytes


def same_second(mtime_ns: int, now: float, slack: float = 0.05) -> bool:
    """True while a rewrite could still get the same mtime second as ``mtime_ns``
    (members compare whole seconds, never content, §5). ``slack`` covers the
    coarse kernel clock that stamps files a few ms behind ``time.time()``.
    Future mtimes are not held back: a later write would change them anyway."""
    sec = mtime_ns // 1_000_000_000
    return int(now - slack) <= sec <= int(now)


def carry_problem(rel: bytes) -> str | None:
    """Why msync cannot carry this base-relative path, or None (§3)."""
    if not rel:
        return "empty path: msync would send the whole base"
    if rel.startswith(b"/"):
        return "absolute path: members would write it under BASE/abs..."
    for bad, why in ((b"\n", "newline"), (b"\r", "carriage return")):
        if bad in rel:
            return f"name contains a {why}, which msync cannot carry (the console line would be cut)"
    if rel.endswith(b" "):
        return "name ends with a space, which msync cannot carry (the daemon would look for NAME\\)"
    parts = rel.split(b"/")
    if b".." in parts:
        return "'..' component would escape the base on members"
    if b"" in parts:
        return "path is not normalised (empty component)"
    longest = max(len(p) for p in parts)
    if longest > MAX_COMPONENT:
        return f"a name component is {longest} bytes; makuosan members fail above {MAX_COMPONENT}"
    return None


def escape(rel: bytes) -> bytes:
    """The console token for a base-relative path: ``./`` before a leading
    ``-`` and every space as ``\\ `` (§3)."""
    if rel.startswith(b"-"):
        rel = b"./" + rel
    return rel.replace(b" ", b"\\ ")


def prepare(rel: bytes) -> Prepared | str:
    """A Prepared path, or the reason it cannot be sent."""
    problem = carry_problem(rel)
    if problem is not None:
        return problem
    return Prepared(echo=rel, token=escape(rel))


def command_prefix(
    *,
    recursive: bool = False,
    delete: bool = False,
    dry: bool = False,
    host: bytes | None = None,
    check: bool = False,
) -> bytes:
    """The longest console command msync builds before the path (for the
    length rule): with ``--delete`` that is the ``dsync`` line."""
    parts = [b"check" if check else b"dsync" if delete else b"send" if recursive else b"sync"]
    parts += [b"-r"] if recursive else []
    parts += [b"-n"] if dry else []
    parts += [b"-t", host] if host is not None else []
    return b" ".join(parts)


def fits(token: bytes, prefix: bytes) -> bool:
    return len(prefix) + 1 + len(token) <= MAX_COMMAND


def scanner_carries(root: bytes, entries: Sequence[tuple[bytes, bool]]) -> bool:
    """Whether makuosan's own ``-r`` scanner carries the tree under ``root``
    exactly. It space-escapes a path before testing it for a directory, so a
    directory whose name holds a space is sent as an entry and never entered;
    it sends the root last unescaped, so the daemon re-splits a root holding a
    space; and a name with a newline, a carriage return or a trailing space
    breaks its console line. ``entries``: (base-relative path, is_dir) below root."""
    if b" " in root:
        return False
    for rel, is_dir in entries:
        name = rel.rsplit(b"/", 1)[-1]
        if (is_dir and b" " in name) or b"\n" in name or b"\r" in name or name.endswith(b" "):
            return False
    return True
