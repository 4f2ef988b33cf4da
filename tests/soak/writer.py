"""A seeded random writer: everything an operator's tree goes through.

Create, append, truncate, same-size rewrite with the old times restored,
renames of files and directories (over existing targets, across
directories), file/directory swaps, tree deletes, chmod, chown, utime alone,
``mkdir -p`` + write, symlinks (dangling, retargeted, into a directory
outside the tree that the test made), hard links, fifos, and names from a
hostile list. Every operation goes through ``SafeTree``, so nothing is ever
written, opened or changed through a symlink. The sequence of operations
depends only on the seed and the tree (the walk is sorted), so a seed replays.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from tests.soak.safefs import SafeTree

__all__ = ["Writer", "History", "NAMES"]

# templates for names; %d keeps a few of each so renames meet existing targets
NAMES = [
    b"f%d",
    b"page%d.html",
    b"-dash%d",
    b"--rf%d",
    b"#auto%d#",
    b";semi%d",
    b"nl\nname%d",
    b"$(touch pwned%d)",
    b"sp ace %d",
    b"caf\xff%d",
    b"\xe9t\xe9%d",
    b"tab\t%d",
    b"star*%d?",
    b"L" * 250 + b"%d",
]
FILE_MODES = [0o600, 0o644, 0o640, 0o755, 0o700, 0o444, 0o664]
DIR_MODES = [0o755, 0o700, 0o750, 0o775, 0o711]
IDS = [0, 1234, 65534]
MAX_ENTRIES = 400


class History(NamedTuple):
    """One change the writer made: its step, the agent's state then, what, where, when."""

    step: int
    phase: str
    op: str
    paths: tuple[bytes, ...]
    time_ns: int


# the changing methods of SafeTree and which of their arguments are paths
_MUTATORS = {
    **dict.fromkeys(("write", "truncate", "rewrite_same_size", "chmod", "chown", "utime"), (0,)),
    **dict.fromkeys(("mkdir_p", "mkfifo", "remove"), (0,)),
    "symlink": (1,),
    "link": (0, 1),
    "rename": (0, 1),
}


class _RecordingTree(SafeTree):
    """A SafeTree that notes every change it makes (for replay reports)."""

    def __init__(self, root: bytes | str, history: list[History]) -> None:
        super().__init__(root)
        self.history = history
        self.step = 0
        self.phase = ""
        self.mute = False

    def __getattribute__(self, name: str) -> object:
        attr = super().__getattribute__(name)
        if name not in _MUTATORS or super().__getattribute__("mute"):
            return attr

        def recorded(*args: object, **kwargs: object) -> object:
            result = attr(*args, **kwargs)  # type: ignore[operator]
            paths = tuple(args[i] for i in _MUTATORS[name])
            self.history.append(History(self.step, self.phase, name, paths, time.time_ns()))  # type: ignore[arg-type]
            return result

        return recorded


class Writer:
    """Mutates ``root`` one seeded operation at a time; ``outside`` is a
    directory outside the tree (made by the test) that symlinks may name."""

    def __init__(
        self,
        root: bytes | str,
        rng: random.Random,
        outside: bytes | str,
        owners: bool = True,
        carriable: bool = False,
    ) -> None:
        self.history: list[History] = []
        # ``carriable``: only what every transport can carry (msync has documented
        # limits: no newline, short names and paths, no links out of the base, no
        # same-size rewrite into an already shipped mtime second, no fifos, no
        # directory where a non-directory was)
        self.names = [n for n in NAMES if b"\n" not in n and len(n) < 40] if carriable else NAMES
        self.carriable = carriable
        # carriable: paths that ever held a non-directory never become directories
        # (makuosan members cannot turn a file into a directory: a documented limit)
        self._nondirs: set[bytes] = set()
        # carriable: sizes written in the current and the previous second (see _fresh_size)
        self._second, self._sizes, self._recent = 0, set[int](), set[int]()
        self.tree = _RecordingTree(root, self.history)
        self.rng = rng
        self.outside = os.fsencode(outside)
        self.owners = owners and os.geteuid() == 0
        self.counts: Counter[str] = Counter()
        self.ops: dict[str, tuple[int, Callable[[], bool]]] = {
            "create": (10, self.create),
            "append": (6, self.append),
            "truncate": (3, self.truncate),
            # msync members compare size and whole-second mtime only: a same-size
            # rewrite with the old mtime put back is skipped by them, which the agent
            # reports as a dead letter with its fix (a documented limit, tested apart)
            "rewrite_same_size": (0 if carriable else 4, self.rewrite),
            "rename_file": (5, self.rename_file),
            "rename_dir": (3, self.rename_dir),
            "swap_file_dir": (2, self.swap),
            "delete": (3, self.delete),
            "delete_tree": (2, self.delete_tree),
            "chmod": (4, self.chmod),
            "chown": (3 if self.owners else 0, self.chown),
            "utime": (4, self.utime),
            "mkdir_p_write": (3, self.mkdir_p),
            "symlink": (4, self.symlink),
            "retarget": (2, self.retarget),
            "hardlink": (3, self.hardlink),
            # members keep what they had where a shipped path became a fifo (makuosan
            # deletes only what the sender lacks): a documented msync limit
            "fifo": (0 if carriable else 1, self.fifo),
            "long_path": (0 if carriable else 1, self.long_path),
        }

    # ---------------------------------------------------------------- driver
    def step(self) -> str:
        """One operation; returns its name (``name!`` when it was impossible here)."""
        self._load()
        self.tree.step += 1
        names = [n for n, (w, _f) in self.ops.items() if w]
        weights = [self.ops[n][0] for n in names]
        if len(self.entries) > MAX_ENTRIES:
            name = self.rng.choice(["delete_tree", "delete"])
        else:
            name = self.rng.choices(names, weights)[0]
        try:
            done = self.ops[name][1]()
        except OSError:
            done = False  # ENOTEMPTY, ENAMETOOLONG, a refused link...: the tree decides
        name = name if done else name + "!"
        self.counts[name] += 1
        return name

    def _load(self) -> None:
        self.entries = self.tree.walk()
        self.by_kind: dict[str, list[bytes]] = {"file": [], "dir": [], "link": [], "fifo": []}
        for rel, st in self.entries:
            kind = _kind(st.st_mode)
            if kind:
                self.by_kind[kind].append(rel)
        self.kinds = {rel: _kind(st.st_mode) for rel, st in self.entries}
        if self.carriable:
            self._nondirs.update(rel for rel, kind in self.kinds.items() if kind != "dir")

    def _dirs_ok(self, *dirs: bytes) -> bool:
        """May directories be made at ``dirs`` (and their parents)?"""
        if not self.carriable:
            return True
        for path in dirs:
            parts = path.split(b"/")
            if any(b"/".join(parts[:i]) in self._nondirs for i in range(1, len(parts) + 1)):
                return False
        return True

    def _pick(self, *kinds: str) -> bytes | None:
        pool = [p for k in kinds for p in self.by_kind[k]]
        return self.rng.choice(pool) if pool else None

    def _on(self, kinds: tuple[str, ...], act: Callable[[bytes], object]) -> bool:
        """Apply ``act`` to a random entry of one of ``kinds``; False when there is none."""
        path = self._pick(*kinds)
        if path is None:
            return False
        act(path)
        return True

    def _name(self) -> bytes:
        return self.rng.choice(self.names) % self.rng.randrange(6)

    def _new_path(self) -> bytes:
        where = self.rng.choice([b"", *self.by_kind["dir"]])
        return _join(where, self._name())

    def _data(self) -> bytes:
        return self._carried(self.rng.randbytes(self.rng.choice([0, 1, 17, 300, 4096, 20000])))

    def _carried(self, data: bytes) -> bytes:
        """``data`` padded so that msync can carry it (see ``_fresh_size``);
        the seeded draws stay the same."""
        return data + b"+" * (self._fresh_size(len(data)) - len(data)) if self.carriable else data

    def _fresh_size(self, size: int) -> int:
        """msync members skip a file whose size and mtime second they already
        hold (a documented limit): carriable writes give every new content a
        size no other write got in this or the previous wall-clock second."""
        if not self.carriable:
            return size
        now = time.time_ns() // 10**9
        if now != self._second:
            self._recent = self._sizes if now == self._second + 1 else set()
            self._sizes, self._second = set(), now
        while size in self._sizes or size in self._recent:
            size += 1
        self._sizes.add(size)
        return size

    def _mtime_ns(self) -> int:
        return self.rng.randrange(10**9, 1_700_000_000) * 10**9 + self.rng.randrange(10**9)

    # ---------------------------------------------------------------- content
    def create(self) -> bool:
        path = self._new_path()
        if self.kinds.get(path, "file") != "file":
            return False
        self.tree.write(path, self._data())
        return True

    def append(self) -> bool:
        return self._on(("file",), self._append)

    def _append(self, path: bytes) -> None:
        chunk = self.rng.randbytes(self.rng.choice([0, 1, 17, 300, 4096, 20000]))[:500] or b"+"
        st = self.tree.lstat(path) if self.carriable else None
        if st is not None:
            chunk += b"+" * (self._fresh_size(st.st_size + len(chunk)) - st.st_size - len(chunk))
        self.tree.write(path, chunk, append=True)

    def truncate(self) -> bool:
        return self._on(
            ("file",), lambda p: self.tree.truncate(p, self._fresh_size(self.rng.randrange(0, 5000)))
        )

    def rewrite(self) -> bool:
        path = self._pick("file")
        if path is None:
            return False
        self.tree.rewrite_same_size(path, self.rng.randbytes(64))
        return True

    # ---------------------------------------------------------------- names
    def rename_file(self) -> bool:
        src = self._pick("file", "link", "fifo")
        if src is None:
            return False
        over = self._pick("file", "link") if self.rng.random() < 0.3 else None
        dst = over or self._new_path()
        if self.kinds.get(dst) == "dir" or dst == src:
            return False
        self.tree.rename(src, dst)
        return True

    def rename_dir(self) -> bool:
        src = self._pick("dir")
        if src is None:
            return False
        empty = [d for d in self.by_kind["dir"] if not any(p.startswith(d + b"/") for p in self.kinds)]
        dst = self.rng.choice(empty) if empty and self.rng.random() < 0.3 else self._new_path()
        if dst == src or dst.startswith(src + b"/") or self.kinds.get(dst, "dir") != "dir":
            return False
        below = [dst + p[len(src) :] for p in self.by_kind["dir"] if p.startswith(src + b"/")]
        if not self._dirs_ok(dst, *below):
            return False
        self.tree.rename(src, dst)
        return True

    def swap(self) -> bool:
        path = self._pick("file", "dir")
        if path is None or (self.kinds[path] == "file" and not self._dirs_ok(path)):
            return False
        self.tree.remove(path)
        if self.kinds[path] == "file":
            self.tree.mkdir_p(path)
            self.tree.write(path + b"/" + self._name(), self._data())
        else:
            self.tree.write(path, self._data())
        return True

    def delete(self) -> bool:
        return self._on(("file", "link", "fifo"), self.tree.remove)

    def delete_tree(self) -> bool:
        return self._on(("dir",), self.tree.remove)

    def mkdir_p(self) -> bool:
        base = self._new_path()
        deep = b"/".join([base, *(self._name() for _ in range(self.rng.randrange(0, 3)))])
        if self.kinds.get(base, "dir") != "dir" or not self._dirs_ok(deep):
            return False
        self.tree.write(deep + b"/" + self._name(), self._data(), create_dirs=True)
        return True

    def long_path(self) -> bool:
        parts = [b"deep%d" % self.rng.randrange(3) + b"D" * 200 for _ in range(self.rng.randrange(3, 8))]
        first = parts[0]
        if self.kinds.get(first, "dir") != "dir" or not self._dirs_ok(b"/".join(parts)):
            return False
        self.tree.write(b"/".join(parts) + b"/" + self._name(), self._data(), create_dirs=True)
        return True

    # ---------------------------------------------------------------- metadata
    def chmod(self) -> bool:
        path = self._pick("file", "dir", "fifo")
        if path is None:
            return False
        self.tree.chmod(path, self.rng.choice(DIR_MODES if self.kinds[path] == "dir" else FILE_MODES))
        return True

    def chown(self) -> bool:
        return self._on(
            ("file", "dir", "fifo"), lambda p: self.tree.chown(p, self.rng.choice(IDS), self.rng.choice(IDS))
        )

    def utime(self) -> bool:
        return self._on(("file", "dir"), lambda p: self.tree.utime(p, self._mtime_ns()))

    # ---------------------------------------------------------------- links, fifos
    def _target(self, at: bytes) -> bytes:
        siblings = [
            p.rsplit(b"/", 1)[-1] for p in self.kinds if p.rpartition(b"/")[0] == at.rpartition(b"/")[0]
        ]
        choices = [b"missing%d" % self.rng.randrange(3), b"no/such/dir"]
        if not self.carriable:
            choices += [self.outside + b"/canary", self.outside, b"odd\ntarget \xff"]
        return self.rng.choice(choices + siblings[:3])

    def symlink(self) -> bool:
        path = self._new_path()
        if path in self.kinds:
            return False
        self.tree.symlink(self._target(path), path)
        return True

    def retarget(self) -> bool:
        path = self._pick("link")
        if path is None:
            return False
        if self.rng.random() < 0.5:
            self.tree.remove(path)
            self.tree.symlink(self._target(path), path)
        else:  # atomically, as ``ln -sfn`` through a temporary name does
            tmp = path + b".new"
            if tmp in self.kinds:
                return False
            self.tree.symlink(self._target(path), tmp)
            self.tree.rename(tmp, path)
        return True

    def hardlink(self) -> bool:
        src, dst = self._pick("file"), self._new_path()
        if src is None or dst in self.kinds:
            return False
        self.tree.link(src, dst)
        return True

    def fifo(self) -> bool:
        path = self._new_path()
        if path in self.kinds:
            return False
        self.tree.mkfifo(path)
        return True

    # ---------------------------------------------------------------- overflow
    def burst(self, events: int) -> None:
        """At least ``events`` inotify events in the root directory: utime
        alternating between two files (identical consecutive events would
        be merged by the kernel)."""
        names = (b"burst-a", b"burst-b")
        for name in names:
            if self.tree.lstat(name) is None:
                self.tree.write(name, b"burst\n")
        base = self._mtime_ns()
        self.tree.mute = True
        try:
            for i in range(events):
                self.tree.utime(names[i % 2], base + i)
        finally:
            self.tree.mute = False
        self.counts["burst_events"] += events


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "fifo" if stat.S_ISFIFO(mode) else None


def _join(base: bytes, name: bytes) -> bytes:
    return base + b"/" + name if base else name
