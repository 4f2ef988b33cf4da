"""What each planned path is on the source, and how msync is to send it
(docs/msync.md §3-§5): a delete when it is gone; FAILED when msync cannot
carry it exactly (a link leading out of the makuosan base, a name it cannot
name); a tree makuosan's own ``-r`` would carry wrongly goes out entry by
entry; else a plain send. Reads the source tree; starts no process.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.errors import ConfigError
from agent.ship.base import Outcome
from agent.ship.msync.carry import Prepared, prepare, same_second, scanner_carries
from agent.ship.msync.filters import excluded, makuosan_patterns
from agent.ship.msync.jobs import Item
from agent.ship.msync.output import Entry
from agent.ship.targets import MsyncTarget
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk, join, root_dev

__all__ = ["Source", "inside"]

_NO_EXCLUDES = Excludes(())  # msync's own excludes are applied, with its matching rules


def inside(base: bytes, path: bytes) -> bool:
    return path == base or path.startswith(base.rstrip(b"/") + b"/")


class Source:
    """The watched ``root`` as seen from the makuosan base: ``root`` and
    ``base`` resolved, ``excludes`` the agent's patterns as makuosan reads
    them, ``clock`` the current time (for the same-second rule)."""

    def __init__(
        self, target: MsyncTarget, root: Path, excludes: Sequence[str], clock: Callable[[], float]
    ) -> None:
        self.root = os.fsencode(os.path.realpath(root))
        self.excludes = makuosan_patterns(excludes, self.root)
        self.base = os.fsencode(os.path.realpath(target.base or root))
        if not inside(self.base, self.root):
            raise ConfigError(
                f"target {target.name}: root {root} is not inside the makuosan base {target.base}"
            )
        self._prefix = os.path.relpath(self.root, self.base) if self.root != self.base else b""
        self._clock = clock

    def rel(self, path: bytes) -> bytes:
        """The base-relative path of a root-relative one."""
        return self._prefix + b"/" + path if self._prefix and path else self._prefix or path

    def makuosan_skips(self, echo: bytes, is_dir: bool) -> bool:
        """Does makuosan's own walk skip the base-relative ``echo``?"""
        return bool(self.excludes) and excluded(self.base + b"/" + echo, self.excludes, is_dir)

    def look(self, it: Item, prep: Prepared) -> tuple[Outcome, str] | None:
        """Look at the path now: a delete, a hazard, or what to send."""
        abspath = self.root + b"/" + it.action.path if it.action.path else self.root
        try:
            st = os.lstat(abspath)
        except (FileNotFoundError, NotADirectoryError):
            it.entry, it.token = Entry(prep.echo, delete=True), prep.token
            return None
        except OSError as exc:
            return Outcome.RETRY, f"cannot stat the source: {exc.strerror}"
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return Outcome.OK, ""  # fifo, socket, device: not replicated, never listed to msync
        if stat.S_ISLNK(st.st_mode):
            try:
                target = self._link_target(abspath)
            except OSError as exc:
                return Outcome.RETRY, f"cannot read the link: {exc.strerror}"
            if isinstance(target, str):
                return Outcome.FAILED, target
            if target is not None:
                resend = prepare(target)
                if isinstance(resend, str):
                    return Outcome.FAILED, f"symlink target cannot be re-sent after the link: {resend}"
                it.resend = resend
        it.is_dir = stat.S_ISDIR(st.st_mode)
        it.plain = it.is_dir or stat.S_ISREG(st.st_mode)
        it.biggest = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if not it.is_dir and same_second(st.st_mtime_ns, self._clock()):
            return Outcome.RETRY, "mtime is the current second (a same-second rewrite would be lost)"
        it.entry = Entry(prep.echo, recursive=it.action.recursive and it.is_dir)
        it.token = prep.token
        if it.entry.recursive:
            try:
                self._plan_tree(it, abspath)
            except OSError as exc:
                return Outcome.RETRY, f"cannot read the tree: {exc.strerror}"
        return None

    def _plan_tree(self, it: Item, abspath: bytes) -> None:
        """A tree msync's -r would carry wrongly (carry.py, scanner_carries)
        goes out as explicit entries, children first, with --delete but no -r;
        so does a tree holding a special file or a mount point, which msync's
        -r would send or cross."""
        sizes: list[int] = []
        below, unlisted = self._walk(it.action.path, it.entry.echo, sizes)
        it.biggest, it.below = max(sizes, default=0), len(below)
        if not unlisted and scanner_carries(it.entry.echo, below):
            return
        it.entry, it.mirror = Entry(it.entry.echo), True
        for rel, _ in below:
            prep = prepare(rel)
            if isinstance(prep, str):
                it.bad = it.bad or f"{rel!r} inside cannot be sent: {prep}"
            else:
                it.more.append(prep)

    def _walk(self, top: bytes, echo: bytes, sizes: list[int]) -> tuple[list[tuple[bytes, bool]], bool]:
        """(base-relative path, is_dir) of everything below the directory
        ``top`` that msync's excludes leave in, children before their
        directory, but no fifo, socket or device (makuosan's -r would send
        those), read by the tree's one walker (no symlink followed, no mount
        point crossed); and whether a special file or a mount point was met.
        The sizes of its regular files go to ``sizes``. A directory it cannot
        read raises: its contents are unknown, not absent."""
        tree = Walk(self.root, _NO_EXCLUDES, root_dev(self.root), top)
        pre: list[tuple[bytes, bool]] = []
        pruned: set[bytes] = set()  # excluded directories: nothing below them is sent
        specials = False
        for listing in tree:
            sub = listing.rel[len(top) :].lstrip(b"/")
            base = join(echo, sub) if sub else echo
            for name, st in zip(listing.names, listing.stats):
                is_dir = stat.S_ISDIR(st.st_mode)
                child = join(base, name)
                if listing.rel in pruned or self.makuosan_skips(child, is_dir):
                    if is_dir:
                        pruned.add(join(listing.rel, name))
                    continue
                if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    specials = True
                    continue
                pre.append((child, is_dir))
                if stat.S_ISREG(st.st_mode):
                    sizes.append(st.st_size)
        if tree.errors:
            raise OSError(errno.EACCES, f"{tree.errors} unreadable entries below")
        return pre[::-1], specials or bool(tree.skipped)

    def _link_target(self, abspath: bytes) -> bytes | str | None:
        """Base-relative final target of a link (re-sent to undo makuosan's chmod
        0777 of it), None when dangling or not a file or directory, or why the
        link cannot be sent."""
        target = os.readlink(abspath)
        lexical = os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(abspath)), target))
        real = os.path.realpath(abspath)
        if not (inside(self.base, lexical) and inside(self.base, real)):
            return (
                "symlink target resolves outside the makuosan base; sending it would chmod "
                "that file 0777 on every member"
            )
        if real == self.base:
            return "symlink points at the base itself; sending it would chmod the base 0777 on every member"
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            return None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None  # a fifo, socket or device is never sent
        return os.path.relpath(real, self.base)
