"""One soak run: a seeded writer against a real ``agent run`` that keeps a
local mirror and an rsync mirror (through a real ``rsync --daemon`` on
loopback), SIGKILLed and restarted at seeded points and once SIGSTOPped
into an inotify overflow. At the end the agent converges, the independent
comparer checks every mirror and ``agent verify`` must agree with it.

The operations and the kill/stop points depend only on the seed; what the
agent is doing at a kill is up to the scheduler, so a replay hits the same
steps but not always the same moment.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.crash.agent_process import AGENT, AgentProcess, log_events, log_size, wait_for_log
from tests.soak.compare import Difference, compare, scan, show
from tests.soak.mirrors import start_mirrors
from tests.soak.verdict import disagreements
from tests.soak.writer import History, Writer

__all__ = ["SoakResult", "run_soak"]

SENTINEL = b"soak-sentinel"
CONVERGE_S = float(os.environ.get("SOAK_CONVERGE_S", 90))  # a polling deadline, not a performance claim
QUIET_POLLS = 3  # consecutive polls that must all find the agent idle


@dataclass
class SoakResult:
    seed: int
    ops: int
    msync: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    stops: int = 0
    overflows: int = 0
    crashes: list[str] = field(default_factory=list)
    converged: bool = False
    status: dict = field(default_factory=dict)
    stop_code: int | None = None
    differences: dict[str, list[Difference]] = field(default_factory=dict)
    verify_code: int | None = None
    verify: dict = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)
    history: list[History] = field(default_factory=list)
    ship_problems: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"agent exited by itself: {c}" for c in self.crashes]
        if not self.converged:
            owed = {
                n: (t.get("pending"), t.get("dead_letters"))
                for n, t in self.status.get("targets", {}).items()
            }
            out.append(f"did not converge within {CONVERGE_S:.0f}s: (pending, dead) {owed}")
            out += [f"  last ship problem: {r}" for r in self.ship_problems]
        if self.stops and not self.overflows:
            out.append("the SIGSTOP burst produced no logged inotify overflow")
        if self.stop_code not in (0, None):
            out.append(f"agent exited {self.stop_code} on SIGTERM")
        for target, diffs in self.differences.items():
            out += [f"{target}: {d}{_story(self.history, d.path)}" for d in diffs]
        return out + self.disagreements

    def report(self, limit: int = 20) -> str:
        problems = self.problems()
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        head = (
            f"soak seed={self.seed} (replay: SOAK_SEED={self.seed} SOAK_OPS={self.ops}"
            f"{' SOAK_MSYNC=1' if self.msync else ''}) ops={self.ops}"
            f" kills={self.kills} stops={self.stops} overflows={self.overflows}\n  operations: {counts}"
        )
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        return f"{head}\n  {len(problems)} problems (verify exit {self.verify_code}):\n  {shown}{more}"


def _story(history: list[History], path: bytes, last: int = 4) -> str:
    """The last writer changes that touched ``path``, an ancestor or something below it."""

    def related(p: bytes) -> bool:
        return p == path or path.startswith(p + b"/") or p.startswith(path + b"/")

    hits = [h for h in history if any(related(p) for p in h.paths)][-last:]
    return "".join("\n      " + _line(h) for h in hits)


def _line(h: History) -> str:
    return f"#{h.step} agent {h.phase} t={h.time_ns}: {h.op} {' -> '.join(show(p) for p in h.paths)}"


def write_history(path: Path, history: list[History]) -> None:
    """Every change of the run, one line each, for a post-mortem next to the journal."""
    path.write_text("".join(_line(h) + "\n" for h in history))


class _Agent:
    """The agent under test with the flags every command gets."""

    def __init__(self, work: Path, flags: list[str]) -> None:
        self.flags = flags
        self.log = work / "agent.log"
        self.proc = AgentProcess(flags, self.log)
        self.mark = 0  # log offset of the current run
        self.expected_down = True

    def start(self) -> None:
        self.mark = log_size(self.log)
        self.proc.start()
        self.expected_down = False

    def kill(self) -> None:
        self.expected_down = True
        self.proc.kill()

    def signal(self, sig: int) -> None:
        assert self.proc.proc is not None
        self.proc.proc.send_signal(sig)

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(AGENT), *args, *self.flags], capture_output=True, timeout=600)

    def events(self, name: str) -> list[dict]:
        return log_events(self.log, name, self.mark)

    def tail(self) -> str:
        return self.log.read_bytes()[-2000:].decode(errors="replace")


def _max_queued() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def _plan(rng: random.Random, ops: int, kills: int) -> tuple[set[int], int]:
    """Seeded op indices where the agent is SIGKILLed, and the one where it is SIGSTOPped."""
    stop_at = rng.randrange(ops // 4, max(ops // 4 + 1, 3 * ops // 4))
    pool = [i for i in range(1, ops) if i != stop_at]
    return set(rng.sample(pool, min(kills, len(pool)))), stop_at


def _overflow(agent: _Agent, writer: Writer, rng: random.Random, res: SoakResult) -> None:
    """SIGSTOP the agent once it watches, make more events than the kernel
    queues, a few real changes among them, then SIGCONT and see the overflow."""
    if not agent.proc.alive():
        agent.start()
    wait_for_log(agent.log, "watch.started", 60, agent.mark)
    agent.signal(signal.SIGSTOP)
    res.stops += 1
    writer.tree.phase = "stopped"
    try:
        for _ in range(rng.randrange(1, 15)):
            writer.step()
        writer.burst(_max_queued() + 1000)
        for _ in range(rng.randrange(1, 15)):
            writer.step()
    finally:
        agent.signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not agent.events("overflow"):
        time.sleep(0.1)
    res.overflows += len(agent.events("overflow"))


def _check_alive(agent: _Agent, res: SoakResult) -> None:
    if not agent.expected_down and not agent.proc.alive():
        res.crashes.append(f"exit {agent.proc.proc.returncode if agent.proc.proc else '?'}: {agent.tail()}")
        agent.start()


def _drive(agent: _Agent, writer: Writer, seed: int, ops: int, kills: int, res: SoakResult) -> None:
    rng = random.Random(f"schedule-{seed}")
    kill_at, stop_at = _plan(rng, ops, kills)
    restart_at = 0
    for i in range(ops):
        _check_alive(agent, res)
        if i in kill_at and agent.proc.alive():
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.8))  # let it get into a scan or a ship
            agent.kill()
            res.kills += 1
            restart_at = i + rng.randrange(0, 30)  # changes made while it is down
        if not agent.proc.alive() and agent.expected_down and i >= restart_at:
            agent.start()
        if i == stop_at:
            _overflow(agent, writer, rng, res)
        writer.tree.phase = "up" if agent.proc.alive() else "down"
        writer.step()
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0, 0.05))
    if not agent.proc.alive():
        agent.start()


def _idle(agent: _Agent, mirrors: list[Path]) -> dict | None:
    """The status document when the agent owes nothing and has no scan to
    finish (the startup one, or one after the last overflow), else None."""
    scans = [e for e in agent.events("scan.recovery")]
    if not scans or len(agent.events("overflow")) > sum(1 for e in scans if e.get("reason") == "overflow"):
        return None
    if not all((m / SENTINEL.decode()).exists() for m in mirrors):
        return None
    res = agent.cli("status", "--json")
    doc = json.loads(res.stdout) if res.returncode == 0 else {}
    targets = doc.get("targets", {})
    return doc if targets and all(t["pending"] == 0 for t in targets.values()) else None


def _converge(agent: _Agent, writer: Writer, mirrors: list[Path], res: SoakResult) -> None:
    writer.tree.write(SENTINEL, b"%d\n" % res.seed)
    deadline, quiet = time.monotonic() + CONVERGE_S, 0
    while time.monotonic() < deadline and quiet < QUIET_POLLS:
        _check_alive(agent, res)
        doc = _idle(agent, mirrors)
        quiet = quiet + 1 if doc else 0
        time.sleep(0.3)
    res.converged = quiet >= QUIET_POLLS
    if not res.converged:
        res.ship_problems = _ship_problems(agent)
    out = agent.cli("status", "--json")
    res.status = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.decode()[-500:]}


def _ship_problems(agent: _Agent, most: int = 5) -> list[str]:
    """The distinct reasons of the latest failed or retried ships (for a run that did not converge)."""
    seen: dict[str, str] = {}
    for name in ("ship.retry", "ship.failed", "ship.dead", "ship.error", "ship.target_down"):
        for e in agent.events(name):
            reason = str(e.get("reason", ""))
            seen[reason] = (
                f"{e.get('target')}: {name} {show(os.fsencode(str(e.get('first', e.get('path')))))}: {reason}"
            )
    return list(seen.values())[-most:]


def _judge(agent: _Agent, src: Path, mirrors: dict[str, tuple[Path, bool]], res: SoakResult) -> None:
    tree = scan(src)
    for name, (path, seconds) in mirrors.items():
        res.differences[name] = compare(tree, scan(path), seconds=seconds)
    out = agent.cli("verify", "--json")
    res.verify_code = out.returncode
    try:
        res.verify = json.loads(out.stdout)
    except ValueError:
        res.verify = {
            "unparsed": out.stdout.decode(errors="replace")[-800:],
            "stderr": out.stderr.decode()[-800:],
        }
    res.disagreements = disagreements(res.verify_code, res.verify, res.differences, tree)


def run_soak(work: Path, seed: int, ops: int, kills: int, msync: bool = False) -> SoakResult:
    """The whole run in ``work`` (which the caller removes). ``msync`` adds a
    member of the msync double and keeps the names within what msync carries."""
    res = SoakResult(seed, ops, msync)
    src, outside, journal = work / "src", work / "outside", work / "journal"
    src.mkdir()
    outside.mkdir()
    (outside / "canary").write_bytes(b"outside the tree: never written\n")
    canary = scan(outside)
    writer = Writer(src, random.Random(seed), outside, carriable=msync)
    writer.tree.phase = "not started"
    res.history = writer.history
    mirrors = start_mirrors(work, src, journal, msync)
    agent = _Agent(work, mirrors.flags)
    try:
        for _ in range(20):
            writer.step()
        agent.start()
        _drive(agent, writer, seed, ops, kills, res)
        _converge(agent, writer, [d for d, _s in mirrors.dirs.values()], res)
        res.stop_code = agent.proc.terminate()
        _judge(agent, src, mirrors.dirs, res)
    finally:
        res.counts = dict(writer.counts)
        write_history(work / "history.txt", writer.history)
        agent.kill()
        mirrors.stop()
    assert scan(outside) == canary, "the writer changed the directory outside the tree"
    return res
