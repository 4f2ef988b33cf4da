"""``agent verify`` against a real running agent with a local mirror, an
rsync mirror by path and one through an rsync daemon: what the agent ships
verifies clean (directory and symlink mtimes included), and tampering with
owner or mtime on a mirror is drift that ``--repair`` heals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT, Site, agent
from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd
from tests.helpers.wait import wait_until

Y2K = 946684800
TARGETS = ("local", "rsync", "rsync-2")


@pytest.fixture
def mirrors(site: Site, tmp_path: Path) -> Iterator[tuple[list[str], Path, Path]]:
    """Flags for the three targets, the rsync path mirror and the daemon's module."""
    by_path, module = tmp_path / "by-path", tmp_path / "module"
    by_path.mkdir()
    module.mkdir()
    daemon: RsyncDaemon = start_rsyncd(tmp_path / "rsyncd", module)
    try:
        flags = [*site.flags, "--target", f"rsync:{by_path}/", "--target", f"rsync:{daemon.url}/"]
        yield flags, by_path, module
    finally:
        daemon.stop()


def _verify(flags: list[str], *extra: str) -> tuple[int, dict]:
    res = agent("verify", "--json", *flags, *extra)
    assert res.returncode in (0, 1), res.stdout.decode() + res.stderr.decode()
    return res.returncode, json.loads(res.stdout)


def _drift(doc: dict) -> dict[str, dict[str, str]]:
    return {name: {d["path"]: d["why"] for d in t["drift"]} for name, t in doc["targets"].items()}


def _settled(flags: list[str]) -> bool:
    res = agent("status", "--json", *flags)
    if res.returncode != 0:
        return False
    doc = json.loads(res.stdout)
    return all(doc["targets"][t]["pending"] == 0 for t in TARGETS)


def _clean(flags: list[str]) -> dict | None:
    code, doc = _verify(flags)
    return doc if code == 0 and not any(t["lag"] for t in doc["targets"].values()) else None


def _edit_tree(root: Path) -> None:
    """Creates, nested directories, a rename, a symlink, chmod and utime alone."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep\n")
    (root / "a" / "one.txt").write_bytes(b"one\n")
    os.rename(root / "a" / "one.txt", root / "a" / "b" / "two.txt")
    os.symlink("../index.html", root / "a" / "up")
    os.chmod(root / "docs" / "a.txt", 0o640)
    os.utime(root / "index.html", (Y2K, Y2K), follow_symlinks=False)
    (root / "docs" / "link").unlink()
    os.symlink("index.html", root / "docs" / "link")


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are carried only as root")
def test_agent_mirrors_verify_clean_and_repair_heals(
    site: Site, tmp_path: Path, mirrors: tuple[list[str], Path, Path]
) -> None:
    """Shipped changes verify clean on all three mirrors; a chown and a
    directory's touch -d on each are drift, healed by --repair."""
    flags, by_path, module = mirrors
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(AGENT), "run", *flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (site.journal / "runtime.json").exists(), timeout=60)
        _edit_tree(site.root)
        wait_until(lambda: _settled(flags), timeout=60, message="changes not shipped")
        doc = wait_until(lambda: _clean(flags), timeout=30, message=f"not clean: {_verify(flags)[1]}")
        assert doc["clean"] is True and doc["local"] == []
        for mirror in (site.mirror, by_path, module):
            os.chown(mirror / "a" / "b" / "two.txt", 1234, 1234, follow_symlinks=False)
            os.utime(mirror / "a" / "b", (Y2K, Y2K), follow_symlinks=False)
        code, doc = _verify(flags)
        assert code == 1
        for name in TARGETS:
            assert set(_drift(doc)[name]) == {"a/b/two.txt", "a/b"}, (name, doc)
        code, doc = _verify(flags, "--repair")
        assert code == 1 and doc["repaired"] == 2 * len(TARGETS)
        wait_until(lambda: _clean(flags), timeout=60, message="--repair did not heal")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
