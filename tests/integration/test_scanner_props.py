"""Property: after random mutations of a mirrored tree, the scanner enqueues
exactly the paths that really differ from the manifest (content, type, mode,
owner, mtime, symlink target; new and deleted paths), whatever happened to
their ctimes and inodes. A directory's mtime is state too: a directory whose
entries changed is enqueued with them."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.scan.scanner import Scanner
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture
from journal import Journal, Op
from tests.helpers.wait import wait_until

OPS = (
    "rewrite_same_size_old_mtime",
    "rewrite",
    "touch",
    "touch_old",
    "chmod",
    "delete",
    "create_file",
    "mkdir",
    "symlink",
    "replace_same_content",
    "dir_to_file",
)
Truth = dict[bytes, tuple[object, ...]]


def truth(root: bytes) -> Truth:
    """What the mirror must match, per path: type, mode, owner, mtime, content or target."""
    out: Truth = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(s.st_mode):
                out[rel] = ("link", os.readlink(p), s.st_uid, s.st_gid, s.st_mtime_ns)
            elif stat.S_ISDIR(s.st_mode):
                out[rel] = ("dir", stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    digest = blake3.blake3(f.read()).digest()
                out[rel] = ("file", stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns, digest)
    return out


def build(root: bytes) -> None:
    for d in (b"d1", b"d1/sub", b"d2"):
        os.mkdir(root + b"/" + d)
    for i, rel in enumerate((b"a", b"b", b"d1/x", b"d1/y", b"d1/sub/z", b"d2/w", b"d2/\xffv\n")):
        with open(root + b"/" + rel, "wb") as f:
            f.write(b"%d" % i * (i + 1))
    os.symlink(b"a", root + b"/ln")


def mutate(root: bytes, op: str, pick: int, data: bytes) -> None:
    """Apply one mutation to the entry number ``pick`` (modulo) of the current tree."""
    rels = sorted(truth(root))
    rel = rels[pick % len(rels)] if rels else b"a"
    p = root + b"/" + rel
    kind = os.lstat(p).st_mode if os.path.lexists(p) else 0
    isdir, isreg = stat.S_ISDIR(kind), stat.S_ISREG(kind)
    parent = p if isdir else os.path.dirname(p)
    new = parent + b"/n" + str(pick).encode()
    if op == "rewrite_same_size_old_mtime" and isreg:
        old = os.lstat(p)
        with open(p, "wb") as f:
            f.write((data * old.st_size)[: old.st_size] if data else b"\0" * old.st_size)
        os.utime(p, ns=(old.st_atime_ns, old.st_mtime_ns))
    elif op == "rewrite" and isreg:
        with open(p, "ab") as f:
            f.write(data or b"+")
    elif op in ("touch", "touch_old") and kind:
        now = time.time_ns()
        os.utime(p, ns=(1, 1) if op == "touch_old" else (now, now), follow_symlinks=False)
    elif op == "chmod" and (isreg or isdir):
        os.chmod(p, stat.S_IMODE(kind) ^ 0o010)
    elif op == "delete" and kind:
        shutil.rmtree(p) if isdir else os.unlink(p)
    elif op == "create_file" and not os.path.lexists(new):
        with open(new, "wb") as f:
            f.write(data)
    elif op == "mkdir" and not os.path.lexists(new):
        os.mkdir(new)
        with open(new + b"/f", "wb") as f:
            f.write(data)
    elif op == "symlink":
        if os.path.islink(p):
            os.unlink(p)
            os.symlink(data or b"t", p)
        elif not os.path.lexists(new):
            os.symlink(data or b"t", new)
    elif op == "replace_same_content" and isreg:
        with open(p, "rb") as f:
            content = f.read()
        with open(p + b".tmp", "wb") as f:
            f.write(content)
        os.chmod(p + b".tmp", stat.S_IMODE(kind))
        os.rename(p + b".tmp", p)
    elif op == "dir_to_file" and isdir:
        shutil.rmtree(p)
        with open(p, "wb") as f:
            f.write(data)


def tick_past(probe: bytes, since: int) -> None:
    """Wait until the kernel's coarse clock has passed ``since``."""

    def ticked() -> bool:
        os.utime(probe)
        return os.stat(probe).st_ctime_ns > since

    wait_until(ticked, timeout=5, interval=0.001)


@contextlib.contextmanager
def mutated(mutations: list[tuple[str, int, bytes]]) -> Iterator[tuple[bytes, Journal, Truth, Truth, int]]:
    """A built tree, recorded as shipped in a journal's manifest, then changed
    by ``mutations`` after the clock passed ``since``: yields (root, journal,
    truth before, truth after, since)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = os.fsencode(tmp)
        root = base + b"/root"
        os.mkdir(root)
        build(root)
        with Journal.open(Path(tmp) / "journal", root=os.fsdecode(root), tracks=["t"]) as journal:
            before = truth(root)
            journal.manifest_put({rel: capture(root + b"/" + rel) for rel in before})
            since = time.time_ns()
            with open(base + b"/probe", "wb"):
                pass
            tick_past(base + b"/probe", since)
            for op, pick, data in mutations:
                mutate(root, op, pick, data)
            yield root, journal, before, truth(root), since


mutation = st.tuples(
    st.sampled_from(OPS),
    st.integers(0, 50),
    st.binary(max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(mutation, max_size=8), full=st.booleans())
def test_enqueued_paths_equal_real_differences(mutations: list[tuple[str, int, bytes]], full: bool) -> None:
    """The set of CHANGE paths and the set of DELETE paths equal the ground truth diff."""
    with mutated(mutations) as (root, journal, before, after, since):
        Scanner(Path(os.fsdecode(root)), journal, Excludes(()), slack_ns=0).scan(
            since_ns=None if full else since
        )
        entries = [r.entry for r in journal.since(seq=1)]
    changed = {p for p, v in after.items() if before.get(p) != v}
    deleted = set(before) - set(after)
    assert {e.path for e in entries if e.op == Op.CHANGE} == changed
    assert {e.path for e in entries if e.op == Op.DELETE} == deleted
    assert len(entries) == len(changed) + len(deleted)  # each path once
