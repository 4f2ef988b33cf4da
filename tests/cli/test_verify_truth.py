"""``agent verify`` never says clean while a mirror differs: pending paths
are lag only while young and not failing, a root entry hides nothing,
owner and mtime count, dead letters mark the paths that differ, and special files are listed
once, never as drift."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget, RsyncTarget, TargetConfig
from agent.ship.backends import make_shipper
from agent.ship.replayer import Replayer
from journal import Entry, Journal, Op
from tests.cli.conftest import AGENT, Site, agent
from tests.cli.test_verify import drift, shipped, verify
from tests.helpers.wait import wait_until

__all__ = ["shipped"]  # the fixture, re-exported for this module

HOSTILE_FIFOS = (b"we*ird[1]\\?\n", b"#autosave#", b";x", b"- dash", b"bad\xff")
Y2K = 946684800  # 2000-01-01T00:00:00Z
S = 10**9


def lag(doc: dict, target: str = "local") -> dict[str, str]:
    return {d["path"]: d["why"] for d in doc["targets"][target]["lag"]}


def rsync_site(site: Site, tmp_path: Path) -> tuple[Path, list[str]]:
    """An rsync mirror (a path) equal to the local mirror, and the flags for it."""
    dest = tmp_path / "rsync-mirror"
    shutil.copytree(site.mirror, dest, symlinks=True)
    shutil.copystat(site.mirror, dest)
    flags = ["--root", str(site.root), "--journal", str(site.journal), "--target", f"rsync:{dest}"]
    Journal.open(site.journal, root=str(site.root), tracks=["rsync"]).close()
    return dest, flags


def replay_all(site: Site, target: TargetConfig, track: str) -> None:
    """Ship every pending entry of ``track`` with the real shipper."""
    with site.open() as j:
        r = Replayer(j, make_shipper(target, site.root), site.root, settle_s=0.0)
        for _ in range(50):
            if not j.pending(track):
                break
            r.step()
        r.shipper.close()
        assert not j.pending(track) and not j.dead_letters(track)


# ---------------------------------------------------------------------- pending paths
def test_young_pending_path_is_lag(shipped: Site) -> None:
    """A difference on a path journaled a moment ago is lag: exit 0, listed."""
    (shipped.root / "index.html").write_bytes(b"new content\n")
    shipped.journal_tree([b"index.html"])
    code, doc = verify(shipped)
    assert code == 0 and doc["clean"] is True, doc
    assert lag(doc) == {"index.html": "content differs"}
    assert drift(doc) == {}
    res = agent("verify", *shipped.flags)
    assert res.returncode == 0 and "lag: index.html: content differs" in res.stdout.decode()


def test_old_pending_path_is_drift(shipped: Site) -> None:
    """A path pending for longer than the lag bound is drift, with its age."""
    (shipped.root / "index.html").write_bytes(b"new content\n")
    shipped.journal_tree([b"index.html"], time_ns=time.time_ns() - 3600 * S)
    code, doc = verify(shipped)
    assert code == 1 and doc["clean"] is False
    why = drift(doc)["index.html"]
    assert why.startswith("content differs; pending for 3") and "longer than" in why, why
    assert lag(doc) == {}
    code, doc = verify(shipped, "--lag-max", "7200")
    assert code == 0 and lag(doc) == {"index.html": "content differs"}


def test_root_entry_hides_nothing(shipped: Site) -> None:
    """A pending RESCAN of the root (overflow, seed marker) covers no path:
    a tampered mirror and a change the journal missed are still found."""
    with shipped.open() as j:
        j.append([Entry(Op.RESCAN, b"", time_ns=time.time_ns())])
    (shipped.mirror / "index.html").write_bytes(b"HELLO\n")
    (shipped.root / "docs" / "a.txt").write_bytes(b"ALPHA\n")
    code, doc = verify(shipped)
    assert code == 1, doc
    assert drift(doc)["index.html"] == "content differs"
    assert [d["path"] for d in doc["local"]] == ["docs/a.txt"]


def test_dead_letter_is_drift_where_the_mirror_differs(shipped: Site) -> None:
    """A dead letter names its path in the drift where the mirror differs; where
    the mirror matches the tree it is listed, not drift (clean means the
    mirrors equal the tree). A moved path's letter names the destination."""
    first, _ = shipped.journal_tree([b"docs/a.txt"])
    moved, _ = shipped.journal_tree([b"index.html"])
    with shipped.open() as j:
        j.mark_dead("local", {first: "mirror refused"})
        j.append([Entry(Op.MOVE, b"old.html", dest=b"index.html")])
        j.mark_dead("local", {moved: "refused too", moved + 1: "move refused"})
    code, doc = verify(shipped)
    assert code == 0, doc
    listed = {(d["path"], d["reason"]) for d in doc["targets"]["local"]["dead"]}
    assert listed == {
        ("docs/a.txt", "mirror refused"),
        ("index.html", "refused too"),
        ("index.html", "move refused"),
    }
    (shipped.mirror / "docs" / "a.txt").write_bytes(b"stale\n")
    code, doc = verify(shipped)
    assert code == 1
    assert drift(doc) == {"docs/a.txt": "content differs; dead letter: mirror refused"}


# ---------------------------------------------------------------------- owner and mtime
def _tamper(mirror: Path) -> None:
    os.chown(mirror / "docs" / "a.txt", 1234, 1234, follow_symlinks=False)
    os.utime(mirror / "index.html", (Y2K, Y2K), follow_symlinks=False)
    os.utime(mirror / "docs", (Y2K, Y2K), follow_symlinks=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_local_mirror_owner_and_mtime_are_drift_and_repaired(shipped: Site) -> None:
    """chown and touch -d on a local mirror are drift (nanosecond mtimes,
    directories too); --repair ships them back and verify is clean."""
    _tamper(shipped.mirror)
    os.utime(shipped.mirror / "empty", ns=(0, os.lstat(shipped.root / "empty").st_mtime_ns + 1))
    code, doc = verify(shipped)
    assert code == 1
    found = drift(doc)
    assert found["docs/a.txt"] == "owner differs (source 0:0, mirror 1234:1234)"
    assert found["index.html"].startswith("mtime differs (source ")
    assert found["index.html"].endswith("mirror 2000-01-01T00:00:00.000000000Z)")
    assert found["docs"].startswith("mtime differs") and found["empty"].startswith("mtime differs")
    assert set(found) == {"docs/a.txt", "index.html", "docs", "empty"}
    code, doc = verify(shipped, "--repair")
    assert code == 1 and doc["repaired"] == 4
    replay_all(shipped, LocalTarget("local", shipped.mirror), "local")
    code, doc = verify(shipped)
    assert code == 0 and drift(doc) == {} and lag(doc) == {}, doc


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_rsync_mirror_owner_and_mtime_are_drift_and_repaired(shipped: Site, tmp_path: Path) -> None:
    """The same on an rsync mirror, where mtimes count in whole seconds."""
    dest, flags = rsync_site(shipped, tmp_path)
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout.decode()
    st = os.lstat(dest / "docs" / "link")
    os.utime(dest / "docs" / "link", ns=(st.st_atime_ns, st.st_mtime_ns + 1), follow_symlinks=False)
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout.decode()  # below a second: rsync keeps seconds
    _tamper(dest)
    res = agent("verify", "--json", *flags)
    assert res.returncode == 1, res.stdout.decode()
    found = drift(json.loads(res.stdout), "rsync")
    assert found == {
        "docs/a.txt": "owner differs, group differs",
        "index.html": "mtime differs",
        "docs": "mtime differs",
    }
    res = agent("verify", "--json", "--repair", *flags)
    assert res.returncode == 1 and json.loads(res.stdout)["repaired"] == 3
    replay_all(shipped, RsyncTarget("rsync", str(dest)), "rsync")
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout.decode()


# ---------------------------------------------------------------------- special files
@pytest.fixture
def with_specials(shipped: Site, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fifo and a unix socket in the source, not on the mirror."""
    os.mkfifo(shipped.root / "docs" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.fspath(shipped.root / "sock"))
    st = os.lstat(shipped.root / "docs")  # as the agent leaves it: the directory's new mtime shipped
    os.utime(shipped.mirror / "docs", ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    yield shipped
    sock.close()


def test_special_files_are_listed_not_drift(with_specials: Site, tmp_path: Path) -> None:
    """A fifo or socket in the source is listed once as not replicated, on a
    local and an rsync mirror alike; exit 0."""
    site = with_specials
    code, doc = verify(site)
    assert code == 0, doc
    assert doc["special"] == ["docs/pipe", "sock"]
    assert drift(doc) == {} and doc["local"] == []
    text = agent("verify", *site.flags).stdout.decode()
    assert text.count("not replicated: special file") == 2
    _, flags = rsync_site(site, tmp_path)
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout.decode()
    assert json.loads(res.stdout)["special"] == ["docs/pipe", "sock"]


def test_special_file_path_held_by_mirror_is_drift(with_specials: Site, tmp_path: Path) -> None:
    """Where the source holds a special file, anything on the mirror is drift
    (names rsync would read as patterns or comments included)."""
    site = with_specials
    for name in HOSTILE_FIFOS:
        os.mkfifo(os.path.join(os.fsencode(site.root), b"docs/" + name))
    dest, flags = rsync_site(site, tmp_path)
    st = os.lstat(site.root / "docs")
    for mirror in (site.mirror, dest):
        (mirror / "docs" / "pipe").write_bytes(b"stale")
        os.symlink("x", os.path.join(os.fsencode(mirror), b"docs/" + HOSTILE_FIFOS[0]))
        os.utime(mirror / "docs", ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    hostile = repr(os.fsdecode(b"docs/" + HOSTILE_FIFOS[0]))
    code, doc = verify(site)
    assert code == 1
    assert drift(doc) == {
        "docs/pipe": "not replicated: special file, but the mirror holds a file",
        hostile: "not replicated: special file, but the mirror holds a symlink",
    }
    res = agent("verify", "--json", *flags)
    assert res.returncode == 1
    assert drift(json.loads(res.stdout), "rsync") == {
        "docs/pipe": "extra on the mirror",
        hostile: "extra on the mirror",
    }
    assert len(json.loads(res.stdout)["special"]) == 2 + len(HOSTILE_FIFOS)


def test_rsync_audit_reads_patterns_as_the_agent_does(shipped: Site, tmp_path: Path) -> None:
    """``a/b`` excludes the root's ``a/b`` only, as everywhere in the agent:
    a tampered ``docs/a/b`` on an rsync mirror is drift, never skipped, and
    what a mirror holds at an excluded path is its own."""
    (shipped.root / "docs" / "a").mkdir()
    (shipped.root / "docs" / "a" / "b").write_bytes(b"source")
    shipped.journal_tree([b"docs", b"docs/a", b"docs/a/b"])
    replay_all(shipped, LocalTarget("local", shipped.mirror), "local")
    dest, flags = rsync_site(shipped, tmp_path)
    st = os.lstat(dest / "docs" / "a" / "b")
    (dest / "docs" / "a" / "b").write_bytes(b"tamper")  # same size, same mtime: only content tells
    os.utime(dest / "docs" / "a" / "b", ns=(st.st_atime_ns, st.st_mtime_ns))
    (dest / "local.tmp").write_bytes(b"the mirror's own")
    res = agent("verify", "--json", "--exclude", "a/b", "--exclude", "*.tmp", *flags)
    assert res.returncode == 1, res.stdout.decode()
    assert set(drift(json.loads(res.stdout), "rsync")) == {"docs/a/b"}


# ---------------------------------------------------------------------- a failing path
def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, "--", os.fspath(path)], check=True, capture_output=True)


@pytest.fixture
def immutable_docs(site: Site) -> Iterator[Path]:
    """The mirror's ``docs`` made immutable (chattr +i) by the test: every
    write into it fails until the fixture lifts the flag."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and chattr")
    docs = site.mirror / "docs"
    docs.mkdir(exist_ok=True)
    try:
        _chattr("+i", docs)
    except subprocess.CalledProcessError:
        pytest.skip("the filesystem of the mirror has no immutable flag")
    try:
        yield docs
    finally:
        _chattr("-i", docs)


def test_failing_pending_path_is_drift_with_its_error(
    site: Site, tmp_path: Path, immutable_docs: Path
) -> None:
    """A real agent whose mirror refuses one directory: the pending, failing
    path is drift with the agent's last error, while a shipped path is not;
    once the mirror accepts writes again, verify is clean."""
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(AGENT), "run", *site.flags], stdout=log, stderr=subprocess.STDOUT)
    try:

        def failing() -> dict | None:
            runtime = site.journal / "runtime.json"
            if not runtime.exists():
                return None
            code, doc = verify(site)
            return doc if code == 1 and "docs/a.txt" in drift(doc) else None

        doc = wait_until(failing, timeout=60, message="the failing path never showed as drift")
        why = drift(doc)["docs/a.txt"]
        assert why.startswith("missing on the mirror; pending and failing: "), why
        assert "Operation not permitted" in why
        assert "index.html" not in drift(doc)
        _chattr("-i", immutable_docs)
        wait_until(lambda: verify(site)[0] == 0, timeout=60, message="verify never became clean")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
