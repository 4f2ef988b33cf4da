"""An independent comparer: does a mirror hold exactly the tree?

Its own walk and its own hash (sha256; the agent uses blake3), so a bug in
the agent's state or audit code cannot hide here. Compared per path: type,
mode (not for symlinks: not portable), owner uid/gid, mtime (ns, or whole
seconds for targets that keep seconds; not for symlinks), content, symlink
target. Special files (fifos, sockets, devices) are not replicated, so they
must be absent on the mirror. Hard links are replicated as separate files:
every name of a group must match; a difference names the other links, and a
group whose names differ from each other on the mirror is reported as such.
The roots' own attributes are not compared (the mirror root is made by the
operator).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from tests.soak.safefs import SafeTree

__all__ = ["Node", "Difference", "scan", "compare", "show"]


def show(path: bytes) -> str:
    """A short printable path: long runs of one byte are written ``L{250}``."""
    text = repr(path)[2:-1]
    return re.sub(r"(.)\1{9,}", lambda m: f"{m.group(1)}{{{len(m.group(0))}}}", text)


@dataclass(frozen=True, slots=True)
class Node:
    kind: str  # file, dir, symlink, special
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    data: bytes  # sha256 of the content, the symlink target, or b""
    ino: int
    nlink: int


@dataclass(frozen=True, slots=True)
class Difference:
    path: bytes
    what: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{show(self.path)}: {self.what}{' (' + self.detail + ')' if self.detail else ''}"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(mode) else "special"


def _data(tree: SafeTree, rel: bytes, kind: str) -> bytes:
    if kind == "symlink":
        with tree.parent(rel) as (dfd, name):
            return os.readlink(name, dir_fd=dfd)
    if kind != "file":
        return b""
    h = hashlib.sha256()
    with tree.regular(rel, os.O_RDONLY) as (fd, _st):
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    return h.digest()


def scan(root: bytes | str) -> dict[bytes, Node]:
    """Every entry below ``root`` (symlinks never followed)."""
    tree = SafeTree(root)
    out = {}
    for rel, st in tree.walk():
        kind = _kind(st.st_mode)
        out[rel] = Node(
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            _data(tree, rel, kind),
            st.st_ino,
            st.st_nlink,
        )
    return out


def _below(path: bytes, tops: set[bytes]) -> bool:
    parts = path.split(b"/")
    return any(b"/".join(parts[:n]) in tops for n in range(1, len(parts)))


def _presence(src: dict[bytes, Node], dst: dict[bytes, Node]) -> list[Difference]:
    out, missing, extra = [], set(), set()
    for path in sorted(src.keys() - dst.keys()):
        if src[path].kind != "special" and not _below(path, missing):
            missing.add(path)
            below = sum(1 for p in src if p.startswith(path + b"/") and src[p].kind != "special")
            out.append(Difference(path, "missing on the mirror", f"{below} below" if below else ""))
    for path in sorted(dst.keys() - src.keys()):
        if not _below(path, extra):
            extra.add(path)
            out.append(Difference(path, "extra on the mirror", f"a {dst[path].kind}"))
    return out


def _fields(a: Node, b: Node, seconds: bool) -> list[str]:
    if a.kind != b.kind:
        return [f"type: {a.kind} != {b.kind}"]
    bad = []
    if a.kind != "symlink" and a.mode != b.mode:
        bad.append(f"mode: {a.mode:o} != {b.mode:o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        bad.append(f"owner: {a.uid}:{a.gid} != {b.uid}:{b.gid}")
    unit = 10**9 if seconds else 1
    if a.kind != "symlink" and a.mtime_ns // unit != b.mtime_ns // unit:
        bad.append(f"mtime{'_s' if seconds else '_ns'}: {a.mtime_ns // unit} != {b.mtime_ns // unit}")
    if a.data != b.data:
        bad.append("content differs" if a.kind == "file" else f"link target: {a.data!r} != {b.data!r}")
    return bad


def _names(paths: Iterable[bytes]) -> str:
    return ", ".join(show(p) for p in sorted(paths))


def _groups(src: dict[bytes, Node]) -> dict[int, list[bytes]]:
    groups: dict[int, list[bytes]] = {}
    for path, node in src.items():
        if node.kind == "file" and node.nlink > 1:
            groups.setdefault(node.ino, []).append(path)
    return {ino: names for ino, names in groups.items() if len(names) > 1}


def compare(src: dict[bytes, Node], dst: dict[bytes, Node], seconds: bool = False) -> list[Difference]:
    """Differences of mirror ``dst`` from tree ``src`` (empty when it matches)."""
    out = _presence(src, dst)
    links = {p: names for names in _groups(src).values() for p in names}
    for path in sorted(src.keys() & dst.keys()):
        a, b = src[path], dst[path]
        if a.kind == "special":
            out.append(Difference(path, "special file replicated", f"mirror has a {b.kind}"))
            continue
        bad = _fields(a, b, seconds)
        if bad and path in links:
            bad.append("hard-linked with " + _names(p for p in links[path] if p != path))
        if bad:
            out.append(Difference(path, f"{a.kind} differs", "; ".join(bad)))
    for names in _groups(src).values():
        seen = {dst[p].data for p in names if p in dst and dst[p].kind == "file"}
        if len(seen) > 1:
            out.append(Difference(names[0], "hard-link group differs on the mirror", _names(names)))
    return sorted(out, key=lambda d: d.path)
