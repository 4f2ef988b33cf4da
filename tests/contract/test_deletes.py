"""Deletes on every transport: a delete of what the mirror does not hold is
done and creates nothing; a delete below a non-directory is done too (there
is nothing below a file to delete)."""

from __future__ import annotations

import os

from tests.contract.conftest import Rig
from tests.contract.test_shipper_contract import write
from tests.helpers.trees import snapshot


def _mirror_snapshots(rig: Rig) -> list[dict]:
    return [snapshot(m) for m in rig.mirrors]


def test_delete_of_absent_deep_path_creates_nothing(rig: Rig) -> None:
    """Deleting ``gone/a/b`` (never shipped) is OK and leaves no ``gone`` or
    ``gone/a`` behind, alone or beside a real delete in the same plan."""
    write(rig, b"keep/file", b"keep")
    write(rig, b"keep/old", b"old")
    rig.put_ok(b"keep", recursive=True)
    os.unlink(rig.src(b"keep/old"))
    before = _mirror_snapshots(rig)
    rig.delete_ok(b"gone/a/b")
    assert _mirror_snapshots(rig) == before
    rig.delete_ok(b"gone2/x/y/z", b"keep/old", b"keep/nothere/deeper", b"#gone/a")
    for m in rig.mirrors:
        for rel in (b"gone", b"gone2", b"keep/nothere", b"#gone"):
            assert not os.path.lexists(os.fsencode(m) + b"/" + rel), (m, rel)
    rig.assert_mirrored()


def test_vanished_put_of_absent_deep_path_creates_nothing(rig: Rig) -> None:
    """A PUT of a deep path missing from the source and the mirror is OK and
    creates none of its parents."""
    write(rig, b"keep", b"keep")
    rig.put_ok(b"keep")
    rig.put_ok(b"never/a/b")
    rig.assert_mirrored()


def test_delete_below_a_file_on_the_mirror(rig: Rig) -> None:
    """Deleting ``f24/d0/x`` while ``f24`` is a file on the mirror is OK (there
    is nothing below a file) and leaves that file as it is."""
    write(rig, b"f24", b"a file, not a directory")
    rig.put_ok(b"f24")
    before = _mirror_snapshots(rig)
    rig.delete_ok(b"f24/d0/x")
    rig.delete_ok(b"f24/d0/d1/y", b"f24/d0/d1", b"f24/d0")
    assert _mirror_snapshots(rig) == before
    rig.assert_mirrored()
