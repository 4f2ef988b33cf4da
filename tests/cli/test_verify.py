"""``agent verify``: local audit and mirror audits (local, rsync), --repair,
and the stable JSON schema."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.operate.audit import Finding, classify_item, parse_itemized
from journal import Journal, Op
from tests.cli.conftest import Site, agent

ODD = "odd\nname -$(x)"
BAD = os.fsdecode(b"caf\xff")


@pytest.fixture
def shipped(site: Site) -> Site:
    """A tree (with hostile names) fully shipped to its local mirror."""
    (site.root / ODD).write_bytes(b"odd")
    (site.root / BAD).write_bytes(b"bad")
    (site.root / "empty").mkdir()
    site.journal_tree()
    site.ship_all()
    return site


def verify(site: Site, *extra: str) -> tuple[int, dict]:
    res = agent("verify", "--json", *site.flags, *extra)
    assert res.returncode in (0, 1, 2), res.stderr.decode()
    return res.returncode, json.loads(res.stdout)


def drift(doc: dict, target: str = "local") -> dict[str, str]:
    return {d["path"]: d["why"] for d in doc["targets"][target]["drift"]}


def test_clean_and_schema(shipped: Site) -> None:
    """A shipped tree verifies clean (exit 0) with the documented JSON keys."""
    code, doc = verify(shipped)
    assert code == 0
    assert doc == {
        "clean": True,
        "local": [],
        "targets": {"local": {"drift": [], "dead": [], "lag": [], "error": None, "pending_skipped": 0}},
        "special": [],
        "lag_max_s": 60.4,
    }
    res = agent("verify", *shipped.flags)
    assert res.returncode == 0 and res.stdout.decode().splitlines()[-1] == "clean"


def test_mirror_drift_kinds(shipped: Site) -> None:
    """Content (same size), mode, missing, extra (once, at its top), symlink
    target and type changes on the mirror are each reported, exit 1."""
    m = shipped.mirror
    (m / "index.html").write_bytes(b"HELLO\n")
    os.chmod(m / "docs" / "a.txt", 0o600)
    (m / ODD).unlink()
    (m / "extra" / "deeper").mkdir(parents=True)
    (m / "extra" / "deeper" / "f").write_bytes(b"x")
    (m / "docs" / "link").unlink()
    os.symlink("elsewhere", m / "docs" / "link")
    (m / "empty").rmdir()
    (m / "empty").write_bytes(b"")
    code, doc = verify(shipped)
    assert code == 1 and doc["clean"] is False and doc["local"] == []
    found = drift(doc)
    assert found.pop("docs").startswith("mtime differs (source ")  # its link was replaced
    assert found == {
        "index.html": "content differs",
        "docs/a.txt": "mode differs (source 644, mirror 600)",
        repr(ODD): "missing on the mirror",
        "extra": "extra on the mirror",
        "docs/link": "symlink target differs",
        "empty": "type differs (source dir, mirror file)",
    }


def test_pending_paths_are_lag_not_drift(shipped: Site) -> None:
    """A mirror difference on a path with a young pending entry is lag, counted."""
    (shipped.root / "index.html").write_bytes(b"new content\n")
    shipped.journal_tree([b"index.html"])
    code, doc = verify(shipped)
    assert code == 0, doc
    assert doc["targets"]["local"]["pending_skipped"] == 1


def test_local_audit_finds_missed_changes(shipped: Site) -> None:
    """Tree changes with no journal entry are 'missed by journal'."""
    (shipped.root / "docs" / "a.txt").write_bytes(b"ALPHA\n")  # same size, new content
    (shipped.root / "new.txt").write_bytes(b"n")
    (shipped.root / BAD).unlink()
    os.chmod(shipped.root / "index.html", 0o600)
    code, doc = verify(shipped)
    assert code == 1
    local = {d["path"]: d["why"] for d in doc["local"]}
    assert set(local) == {"docs/a.txt", "new.txt", repr(BAD), "index.html"}
    assert "content differs" in local["docs/a.txt"] and "missed by journal" in local["docs/a.txt"]
    assert "not in the manifest" in local["new.txt"]
    assert "missing on disk" in local[repr(BAD)]
    assert local["index.html"].startswith("mode 600")


def test_repair_queues_and_heals(shipped: Site) -> None:
    """--repair appends CHANGE/DELETE entries for drifted paths and requeues
    dead letters; shipping them makes verify clean again."""
    m = shipped.mirror
    (m / "index.html").write_bytes(b"HELLO\n")
    (m / "stray").write_bytes(b"s")
    (m / BAD).unlink()
    first, _ = shipped.journal_tree([b"docs/a.txt"])
    with shipped.open() as j:
        j.mark_dead("local", {first: "mirror refused"})
        before = j.last_seq()
    code, doc = verify(shipped, "--repair")
    assert code == 1 and (doc["repaired"], doc["dead_requeued"]) == (3, 1)
    with shipped.open("read") as j:
        queued = {(r.entry.op, r.entry.path) for r in j.pending("local") if r.seq > before}
        assert j.dead_letters() == []
    assert queued == {
        (Op.CHANGE, b"index.html"),
        (Op.DELETE, b"stray"),
        (Op.CHANGE, os.fsencode(BAD)),
        (Op.CHANGE, b"docs/a.txt"),
    }
    from agent.operate.config import LocalTarget
    from agent.ship import replayer as replayer
    from agent.ship.backends import make_shipper

    with shipped.open() as j:
        r = replayer.Replayer(
            j, make_shipper(LocalTarget("local", m), shipped.root), shipped.root, settle_s=0.0
        )
        for _ in range(50):
            if not j.pending("local"):
                break
            r.step()
        r.shipper.close()
    code, doc = verify(shipped)
    assert (code, doc["clean"], doc["local"]) == (0, True, [])
    assert doc["targets"] == {
        "local": {"drift": [], "dead": [], "lag": [], "error": None, "pending_skipped": 0}
    }


def test_missing_mirror_is_error(shipped: Site) -> None:
    """An unreachable mirror is exit 2 with the error in the JSON."""
    os.rename(shipped.mirror, shipped.mirror.with_name("gone"))
    code, doc = verify(shipped)
    assert code == 2 and doc["clean"] is False
    assert "is not a directory" in doc["targets"]["local"]["error"]


def test_rsync_audit(shipped: Site, tmp_path: Path) -> None:
    """The rsync checksum dry run reports the same kinds of drift, hostile names included."""
    dest = tmp_path / "rsync-mirror"
    shutil.copytree(shipped.mirror, dest, symlinks=True)
    flags = ["--root", str(shipped.root), "--journal", str(shipped.journal), "--target", f"rsync:{dest}"]
    Journal.open(shipped.journal, root=str(shipped.root), tracks=["rsync"]).close()
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    (dest / "index.html").write_bytes(b"HELLO\n")
    os.chmod(dest / BAD, 0o600)
    (dest / ODD).unlink()
    (dest / "xdir").mkdir()
    (dest / "xdir" / "f").write_bytes(b"f")
    (dest / "docs" / "link").unlink()
    os.symlink("elsewhere", dest / "docs" / "link")
    os.utime(dest / "docs", (0, 0), follow_symlinks=False)  # its link was replaced
    res = agent("verify", "--json", *flags)
    assert res.returncode == 1, res.stderr.decode()
    assert drift(json.loads(res.stdout), "rsync") == {
        "docs": "mtime differs",
        "index.html": "content differs",
        repr(BAD): "mode differs",
        repr(ODD): "missing on the mirror",
        "xdir": "extra on the mirror",
        "docs/link": "symlink target differs",
    }


def test_classify_item_table() -> None:
    """rsync itemize codes: a time is drift when nothing else differs."""
    assert classify_item(".d..t......") == "mtime differs"
    assert classify_item(".f..t......") == "mtime differs"
    assert classify_item(".L..T......") == "mtime differs"
    assert classify_item(".f..t.og...") == "owner differs, group differs"
    assert classify_item(".f.........") is None
    assert classify_item(">f+++++++++") == "missing on the mirror"
    assert classify_item("*deleting  ") == "extra on the mirror"
    assert classify_item(">fcst......") == "content differs"
    assert classify_item(".f...p.....") == "mode differs"
    assert classify_item("cLc.t......") == "symlink target differs"


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_parse_itemized_unescapes(name: bytes) -> None:
    """Names escaped the way rsync prints them (\\#ooo) come back as the original bytes."""
    escaped = b"".join(
        b"\\#%03o" % c if not (32 <= c < 127) or (c == 0x5C and name[i + 1 : i + 2] == b"#") else bytes([c])
        for i, c in enumerate(name)
    )
    if name in (b".",):
        return
    assert parse_itemized(b">f+++++++++ " + escaped + b"\n") == [Finding(name, "missing on the mirror")]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_local_audit_finds_owner_change(shipped: Site) -> None:
    """A chown the journal never saw is reported with both owners."""
    os.lchown(shipped.root / "docs" / "a.txt", 4321, 4321)
    code, doc = verify(shipped)
    assert code == 1
    assert doc["local"] == [
        {
            "path": "docs/a.txt",
            "why": "owner 4321:4321, manifest says 0:0, no pending entry (missed by journal)",
        }
    ]
