"""Fixtures for the operator-command tests: a source tree, its journal and a
mirror, plus the ``agent`` CLI run as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.tree.fsstate import capture
from journal import IS_DIR, Entry, Journal, Op

AGENT = Path(sys.executable).with_name("agent")
HOLDER = """
import sys
from journal import Journal
j = Journal.open(sys.argv[1], root=sys.argv[2], mode="agent")
print("locked", flush=True)
sys.stdin.read()
"""


def agent(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``agent ARGS`` as a subprocess; never raises on its exit status."""
    full_env = {k: v for k, v in os.environ.items() if k != "AGENT_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [str(AGENT), *map(os.fspath, args)],
        capture_output=True,
        env=full_env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Site:
    """A watched root, its journal and one local mirror (target ``local``)."""

    root: Path
    journal: Path
    mirror: Path

    @property
    def flags(self) -> list[str]:
        return ["--root", str(self.root), "--journal", str(self.journal), "--target", f"local:{self.mirror}"]

    def open(self, mode: str = "agent") -> Journal:
        return Journal.open(self.journal, root=str(self.root), tracks=["local"], mode=mode)

    def journal_tree(
        self, paths: Sequence[bytes] | None = None, time_ns: int | None = None
    ) -> tuple[int, int]:
        """Append a CHANGE for every path (default: the whole tree), pending for ``local``."""
        rels = list(paths) if paths is not None else sorted(_tree(os.fsencode(self.root)))
        now = time.time_ns() if time_ns is None else time_ns
        entries = []
        for rel in rels:
            is_dir = os.path.isdir(os.path.join(os.fsencode(self.root), rel))
            entries.append(Entry(Op.CHANGE, rel, time_ns=now, flags=IS_DIR if is_dir else 0))
        with self.open() as j:
            span = j.append(entries)
        assert span is not None
        return span

    def ship_all(self) -> None:
        """What a finished replay leaves behind: the mirror equals the tree,
        every pending entry is done and the manifest holds the current states."""
        shutil.rmtree(self.mirror)
        shutil.copytree(self.root, self.mirror, symlinks=True)
        root_b = os.fsencode(self.root)
        with self.open() as j:
            seqs = [r.seq for r in j.pending("local")]
            states = {rel: capture(os.path.join(root_b, rel)) for rel in _tree(root_b)}
            j.mark_done("local", seqs, states)


def _tree(root: bytes) -> list[bytes]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


@pytest.fixture
def site(tmp_path: Path) -> Site:
    root, journal, mirror = tmp_path / "src", tmp_path / "journal", tmp_path / "mirror"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_bytes(b"hello\n")
    (root / "docs" / "a.txt").write_bytes(b"alpha\n")
    os.symlink("a.txt", root / "docs" / "link")
    mirror.mkdir()
    return Site(root, journal, mirror)


@pytest.fixture
def hold_lock() -> Iterator[Callable[[Site], subprocess.Popen[bytes]]]:
    """Start another process holding a journal's agent lock, as ``agent run``
    does; it is killed (by pid) at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(site: Site) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(site.journal), str(site.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


from tests.cli.agent_site import sites  # noqa: E402, F401 - a fixture for the tests beside a running agent
