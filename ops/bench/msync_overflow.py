"""The overflow phase of ``ops/bench/msync``: a real ``agent run`` recovers
from an inotify overflow by shipping thousands of files to a real cluster.

The agent runs inside the sender's network namespace (where makuosan's TCP
console listens), watching a fresh directory below the sender's base with
``--overflow`` files' worth of directories (100 files each), shipped first.
Then it is SIGSTOPped, the files are written into those watched directories
(three events each: far more than the kernel queues, ``max_queued_events``),
and it is SIGCONTed: it logs the overflow, rescans, and ships. Timed is the
time from SIGCONT until each member holds every file (name and size), and
until the agent reports nothing pending.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.netns.cluster import Cluster, stop_process
from tests.real_msync.cluster import RealCluster

__all__ = ["overflow"]

AGENT = Path(sys.executable).with_name("agent")
OLD = 1_600_000_000
PER_DIR = 100


def _config(path: Path, root: Path, journal: Path, rc: RealCluster, members: tuple[str, ...]) -> None:
    listed = ", ".join(f'"{m}"' for m in members)
    path.write_text(
        f'root = "{root}"\njournal = "{journal}"\n'
        f'[[target]]\nname = "cluster"\nkind = "msync"\nmembers = [{listed}]\n'
        f'console = "{rc.console}"\nmsync = "{rc.msync}"\nbase = "{rc.root}"\n'
    )


def _logged(log: Path, event: str) -> bool:
    return f'"event": "{event}"'.encode() in log.read_bytes()


def _pending(journal: Path) -> int | None:
    res = subprocess.run(
        [str(AGENT), "status", "--json", "--journal", str(journal)], capture_output=True, check=False
    )
    if res.returncode != 0:
        return None
    return sum(t["pending"] for t in json.loads(res.stdout)["targets"].values())


def _wait(what: str, check, timeout: float, step: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise SystemExit(f"overflow phase: {what} not within {timeout:.0f} s")


class _Holdings:
    """Which of the written directories a member holds completely."""

    def __init__(self, member_root: Path, sizes: dict[str, dict[str, int]]) -> None:
        self.root = member_root
        self.todo = dict(sizes)

    def complete(self) -> bool:
        for d in list(self.todo):
            try:
                have = {e.name: e.stat().st_size for e in os.scandir(self.root / d) if e.is_file()}
            except OSError:
                continue
            if all(have.get(n) == size for n, size in self.todo[d].items()):
                del self.todo[d]
        return not self.todo


def overflow(
    c: Cluster, rc: RealCluster, data: Path, tag: str, files: int, members: tuple[str, ...], timeout: float
) -> dict:
    """Seconds from SIGCONT until each member holds every file, and until
    nothing is pending; ``overflowed`` says whether the agent logged it."""
    root = rc.root / f"{tag}-overflow"
    dirs = [f"o{i:04d}" for i in range(-(-files // PER_DIR))]
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        os.utime(root / d, (OLD, OLD))
    os.utime(root, (OLD, OLD))
    journal, cfg, log = data / f"journal-{tag}", data / f"agent-{tag}.toml", data / f"agent-{tag}.log"
    _config(cfg, root, journal, rc, members)
    with open(log, "ab") as out:
        agent = c.spawn("h1", [str(AGENT), "run", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait("the agent watching", lambda: log.exists() and _logged(log, "watch.started"), 120)
        shipped = lambda: all((rc.member_dir(m) / root.name / dirs[-1]).is_dir() for m in members)  # noqa: E731
        _wait("the directories shipped", lambda: shipped() and _pending(journal) == 0, 300)
        os.kill(agent.pid, signal.SIGSTOP)
        sizes: dict[str, dict[str, int]] = {d: {} for d in dirs}
        try:
            for i in range(files):
                d, name = dirs[i // PER_DIR], f"f{i:05d}"
                data_ = b"overflow %d\n" % i
                (root / d / name).write_bytes(data_)
                os.utime(root / d / name, (OLD, OLD))
                sizes[d][name] = len(data_)
        finally:
            start = time.monotonic()
            os.kill(agent.pid, signal.SIGCONT)
        held = {m: _Holdings(rc.member_dir(m) / root.name, sizes) for m in members}
        done: dict[str, float] = {}
        while len(done) < len(members) and time.monotonic() - start < timeout:
            for m, h in held.items():
                if m not in done and h.complete():
                    done[m] = time.monotonic() - start
            time.sleep(0.5)
        settled = None
        if len(done) == len(members):
            left = max(1.0, timeout - (time.monotonic() - start))
            _wait("nothing pending", lambda: _pending(journal) == 0, left, 1.0)
            settled = time.monotonic() - start
        return {
            "files": files,
            "overflowed": _logged(log, "overflow"),
            "members_s": done,
            "pending_zero_s": settled,
            "timeout_s": timeout,
        }
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)
        stop_process(agent)
