"""The shipper contract, run against every transport (see conftest ``rig``).

Each test changes the source tree as a user would, ships the actions the
planner would produce, and compares the mirror with the source byte for byte.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat

from agent.ship.actions import ActionKind
from agent.ship.base import Outcome
from tests.contract.conftest import Rig


def write(rig: Rig, rel: bytes, data: bytes, mode: int | None = None) -> None:
    path = rig.src(rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def mirror_bytes(rig: Rig, rel: bytes) -> list[bytes]:
    out = []
    for m in rig.mirrors:
        with open(os.fsencode(m) + b"/" + rel, "rb") as f:
            out.append(f.read())
    return out


def test_create(rig: Rig) -> None:
    """A new file arrives with its content and mode."""
    write(rig, b"new.txt", b"hello\n", 0o640)
    rig.put_ok(b"new.txt")
    rig.assert_mirrored()


def test_overwrite_append_truncate(rig: Rig) -> None:
    """Each later state of a file replaces the earlier one on the mirror."""
    write(rig, b"f", b"first version, rather long\n")
    rig.put_ok(b"f")
    for data in (b"second\n", b"second\nappended\n", b""):
        write(rig, b"f", data)
        rig.put_ok(b"f")
        assert mirror_bytes(rig, b"f") == [data] * len(rig.mirrors)
        rig.assert_mirrored()


def test_same_size_rewrite_in_the_same_second(rig: Rig) -> None:
    """A rewrite keeping size and mtime second is still carried (no quick-check skip)."""
    write(rig, b"same", b"AAAA")
    st = os.lstat(rig.src(b"same"))
    rig.put_ok(b"same")
    write(rig, b"same", b"BBBB")
    os.utime(rig.src(b"same"), ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    rig.put_ok(b"same")
    assert mirror_bytes(rig, b"same") == [b"BBBB"] * len(rig.mirrors)
    rig.assert_mirrored()


def test_chmod(rig: Rig) -> None:
    """A mode change alone is carried."""
    write(rig, b"script", b"#!/bin/sh\n", 0o644)
    rig.put_ok(b"script")
    os.chmod(rig.src(b"script"), 0o751)
    rig.put_ok(b"script")
    rig.assert_mirrored()
    assert all(stat.S_IMODE(os.lstat(os.fsencode(m) + b"/script").st_mode) == 0o751 for m in rig.mirrors)


def test_rename_file(rig: Rig) -> None:
    """A rename ships as DELETE old + PUT new."""
    write(rig, b"old", b"content")
    rig.put_ok(b"old")
    os.rename(rig.src(b"old"), rig.src(b"new"))
    rig.ship_ok(rig.action(ActionKind.DELETE, b"old"), rig.action(ActionKind.PUT, b"new"))
    rig.assert_mirrored()


def test_directory_rename_removes_stale_entries(rig: Rig) -> None:
    """A directory moved in is sent whole; extras already on the mirror under
    the new name disappear."""
    write(rig, b"d/a", b"a")
    write(rig, b"d/sub/b", b"b")
    write(rig, b"e/stale", b"stale")
    rig.put_ok(b"d", b"e", recursive=True)
    shutil.rmtree(rig.src(b"e"))
    os.rename(rig.src(b"d"), rig.src(b"e"))
    rig.ship_ok(rig.action(ActionKind.DELETE, b"d"), rig.action(ActionKind.PUT, b"e", recursive=True))
    rig.assert_mirrored()


def test_recursive_delete(rig: Rig) -> None:
    """DELETE of a directory removes its whole subtree on the mirror."""
    for rel in (b"t/x", b"t/y/z", b"t/y/w/v", b"keep"):
        write(rig, rel, rel)
    os.symlink(b"x", rig.src(b"t/link"))
    rig.put_ok(b"t", b"keep", recursive=True)
    shutil.rmtree(rig.src(b"t"))
    rig.delete_ok(b"t")
    rig.assert_mirrored()


def test_children_and_parent_deleted_in_one_plan(rig: Rig) -> None:
    """Deletes of children then their parent, in one plan, all succeed."""
    write(rig, b"p/q/r", b"r")
    rig.put_ok(b"p", recursive=True)
    shutil.rmtree(rig.src(b"p"))
    rig.delete_ok(b"p/q/r", b"p/q", b"p")
    rig.assert_mirrored()


def test_symlink_create_and_retarget(rig: Rig) -> None:
    """Symlinks inside the tree arrive as links, target verbatim, dangling or not."""
    write(rig, b"dir/target", b"t")
    os.symlink(b"dir/target", rig.src(b"link"))
    os.symlink(b"dir/missing file", rig.src(b"dangling"))
    rig.put_ok(b"dir", recursive=True)
    rig.put_ok(b"link", b"dangling")
    rig.assert_mirrored()
    os.unlink(rig.src(b"link"))
    os.symlink(b"dir", rig.src(b"link"))
    rig.put_ok(b"link")
    rig.assert_mirrored()
    assert all(os.readlink(os.fsencode(m) + b"/link") == b"dir" for m in rig.mirrors)


def test_symlink_targets_outside_verbatim(rig: Rig) -> None:
    """Absolute and escaping targets are carried verbatim where the transport
    can; otherwise refused (FAILED with a reason), never rewritten."""
    os.symlink(b"/etc/passwd", rig.src(b"abs"))
    os.symlink(b"../nowhere/at all", rig.src(b"up"))
    results = rig.put(b"abs", b"up")
    refused = set()
    for r in results:
        if rig.exact_names or r.outcome is Outcome.OK:
            assert r.outcome is Outcome.OK, r
        else:
            assert r.outcome is Outcome.FAILED and r.reason, r
            refused.add(r.path)
    rig.assert_mirrored(exclude=refused)


def test_type_changes(rig: Rig) -> None:
    """file->dir, dir->symlink, symlink->file and dir->file all converge."""
    write(rig, b"a", b"file")
    write(rig, b"b/inner/deep", b"x")
    os.symlink(b"b", rig.src(b"c"))
    write(rig, b"d/x", b"x")
    rig.put_ok(b"a", b"b", b"c", b"d", recursive=True)
    os.unlink(rig.src(b"a"))
    write(rig, b"a/child", b"child")
    shutil.rmtree(rig.src(b"b"))
    os.symlink(b"a", rig.src(b"b"))
    os.unlink(rig.src(b"c"))
    write(rig, b"c", b"now a file")
    shutil.rmtree(rig.src(b"d"))
    write(rig, b"d", b"now a file too")
    rig.put_ok(b"a", b"a/child", b"b", b"c", b"d")
    rig.assert_mirrored()


def test_vanished_put_deletes(rig: Rig) -> None:
    """A PUT of a path gone from the source deletes it on the mirror, OK."""
    write(rig, b"gone", b"x")
    write(rig, b"gonedir/x", b"x")
    rig.put_ok(b"gone", b"gonedir", recursive=True)
    os.unlink(rig.src(b"gone"))
    shutil.rmtree(rig.src(b"gonedir"))
    rig.put_ok(b"gone", b"gonedir", b"never-existed/below")
    rig.assert_mirrored()


def test_empty_dir(rig: Rig) -> None:
    """An empty directory is created with its mode."""
    os.mkdir(rig.src(b"empty"), 0o705)
    rig.put_ok(b"empty")
    rig.assert_mirrored()


def test_new_nested_file_creates_parents(rig: Rig) -> None:
    """A PUT deep in a new tree creates the parents on the mirror."""
    write(rig, b"n1/n2/n3/leaf", b"leaf")
    rig.put_ok(b"n1", b"n1/n2", b"n1/n2/n3", b"n1/n2/n3/leaf")
    rig.assert_mirrored()


def test_ship_twice_is_harmless(rig: Rig) -> None:
    """Shipping the same plan again leaves the mirror equal (at-least-once)."""
    write(rig, b"x/y", b"y")
    rig.put_ok(b"x", recursive=True)
    rig.put_ok(b"x", recursive=True)
    rig.delete_ok(b"absent")
    rig.assert_mirrored()


def _lexists_on_mirrors(rig: Rig, rel: bytes) -> list[bool]:
    return [os.path.lexists(os.fsencode(m) + b"/" + rel) for m in rig.mirrors]


def _bind_socket(rig: Rig, rel: bytes, monkeypatch) -> None:
    """A unix socket at ``rel`` (bound by a relative name: paths are long)."""
    monkeypatch.chdir(rig.src(os.path.dirname(rel) or b"."))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.path.basename(rel))
    finally:
        sock.close()


def test_special_file_is_not_replicated(rig: Rig, monkeypatch) -> None:
    """A new fifo or socket is not shipped: OK, nothing on the mirror; the rest
    of the batch is shipped."""
    os.mkfifo(rig.src(b"fifo"))
    _bind_socket(rig, b"sock", monkeypatch)
    write(rig, b"fine", b"fine")
    rig.put_ok(b"fifo", b"sock", b"fine")
    assert _lexists_on_mirrors(rig, b"fifo") == [False] * len(rig.mirrors)
    assert _lexists_on_mirrors(rig, b"sock") == [False] * len(rig.mirrors)
    rig.assert_mirrored(exclude=[b"fifo", b"sock"])


def test_file_replaced_by_fifo_is_removed(rig: Rig) -> None:
    """A path that became a fifo is treated as absent: what the mirror had
    there is removed and the result is OK (also inside a recursive PUT)."""
    write(rig, b"f", b"was a file")
    write(rig, b"d/g", b"was a file too")
    write(rig, b"d/keep", b"keep")
    rig.put_ok(b"f", b"d", recursive=True)
    os.unlink(rig.src(b"f"))
    os.mkfifo(rig.src(b"f"))
    os.unlink(rig.src(b"d/g"))
    os.mkfifo(rig.src(b"d/g"))
    rig.put_ok(b"f")
    rig.put_ok(b"d", recursive=True)
    for rel in (b"f", b"d/g"):
        assert _lexists_on_mirrors(rig, rel) == [False] * len(rig.mirrors), rel
    rig.assert_mirrored(exclude=[b"f", b"d/g"])


def test_symlink_in_mirror_is_replaced_not_followed(rig: Rig, tmp_path) -> None:
    """A symlink on the mirror where a directory belongs is replaced; nothing
    is written or deleted through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    for m in rig.mirrors:
        os.symlink(outside, m / "a")
    rig.delete_ok(b"a/victim")
    rig.put_ok(b"a/victim")  # missing in the source: a delete, still not through the link
    assert (outside / "victim").read_bytes() == b"keep"
    write(rig, b"a/victim", b"new")
    rig.put_ok(b"a/victim")
    assert (outside / "victim").read_bytes() == b"keep"
    rig.put_ok(b"a", recursive=True)
    rig.assert_mirrored()
    assert (outside / "victim").read_bytes() == b"keep"


def test_put_below_a_file_on_the_mirror(rig: Rig) -> None:
    """A PUT under a path that is still a file on the mirror replaces that
    file by the source's directory (the parent was never shipped itself)."""
    write(rig, b"p", b"was a file")
    rig.put_ok(b"p")
    os.unlink(rig.src(b"p"))
    write(rig, b"p/c", b"child")
    rig.put_ok(b"p/c")
    rig.assert_mirrored()
