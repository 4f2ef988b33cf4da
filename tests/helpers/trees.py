"""Compare two directory trees the way a mirror must match its source.

Names are bytes end to end (non-UTF-8 and newline names survive), symlinks
are never followed, and a failure lists the differing paths, not a dump.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import blake3

__all__ = ["Entry", "snapshot", "diff_trees", "assert_trees_equal"]


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # file, dir, symlink, special
    mode: int
    data: bytes  # blake3 of the content, or the symlink target verbatim
    mtime_ns: int
    uid: int
    gid: int


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(mode) else "special"


def _entry(path: bytes, st: os.stat_result) -> Entry:
    kind = _kind(st.st_mode)
    data = b""
    if kind == "symlink":
        data = os.readlink(path)
    elif kind == "file":
        h = blake3.blake3()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        data = h.digest()
    return Entry(kind, stat.S_IMODE(st.st_mode), data, st.st_mtime_ns, st.st_uid, st.st_gid)


def snapshot(root: str | bytes | Path, exclude: Iterable[bytes] = ()) -> dict[bytes, Entry]:
    """Every entry under ``root`` by its root-relative bytes path (the root
    itself is ``b""``). ``exclude`` drops those relative paths and what is below."""
    base = os.fsencode(root)
    skip = set(exclude)
    out: dict[bytes, Entry] = {b"": _entry(base, os.lstat(base))}
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(base + b"/" + rel if rel else base) as it:
            for de in it:
                child = rel + b"/" + de.name if rel else de.name
                if child in skip:
                    continue
                st = de.stat(follow_symlinks=False)
                out[child] = _entry(de.path, st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return out


def _fields(a: Entry, b: Entry, mtime: bool, dir_mtime: bool, link_mtime: bool, owner: bool) -> list[str]:
    bad = [f for f in ("kind", "mode", "data") if getattr(a, f) != getattr(b, f)]
    if a.kind == "symlink" and b.kind == "symlink" and "mode" in bad:
        bad.remove("mode")  # a symlink's mode is not portable and means nothing
    wanted = {"dir": dir_mtime, "symlink": link_mtime}.get(a.kind, True)
    if mtime and wanted and a.mtime_ns != b.mtime_ns:
        bad.append("mtime_ns")
    if owner and (a.uid, a.gid) != (b.uid, b.gid):
        bad.append("owner")
    return bad


def diff_trees(
    src: str | bytes | Path,
    mirror: str | bytes | Path,
    *,
    mtime: bool = False,
    dir_mtime: bool = True,
    link_mtime: bool = True,
    owner: bool = False,
    root_attrs: bool = False,
    exclude: Iterable[bytes] = (),
) -> list[str]:
    """Human-readable differences between two trees (empty when equal).
    ``root_attrs`` also compares the two root directories' own attributes."""
    exclude = tuple(exclude)
    a, b = snapshot(src, exclude), snapshot(mirror, exclude)
    if not root_attrs:
        a.pop(b""), b.pop(b"")
    problems = [f"only in source: {p!r}" for p in sorted(a.keys() - b.keys())]
    problems += [f"only in mirror: {p!r}" for p in sorted(b.keys() - a.keys())]
    for p in sorted(a.keys() & b.keys()):
        bad = _fields(a[p], b[p], mtime, dir_mtime, link_mtime, owner)
        if bad:
            detail = ", ".join(f"{f}: {getattr(a[p], f, '?')!r} != {getattr(b[p], f, '?')!r}" for f in bad)
            problems.append(f"differs {p!r}: {detail}")
    return problems


def assert_trees_equal(src: str | bytes | Path, mirror: str | bytes | Path, **opts: object) -> None:
    """Fail with the first differences when ``mirror`` does not match ``src``
    in content, type, mode and symlink targets (plus what ``opts`` adds:
    ``mtime``, ``dir_mtime``, ``link_mtime``, ``owner``, ``root_attrs``, ``exclude``)."""
    problems = diff_trees(src, mirror, **opts)  # type: ignore[arg-type]
    if problems:
        shown = "\n  ".join(problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise AssertionError(f"trees differ ({len(problems)} problems):\n  {shown}{more}")
