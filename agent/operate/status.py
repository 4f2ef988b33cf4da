"""``agent status``: what each track still owes, how old the checkpoint is,
and whether an agent is running (whether it holds the journal's writer
lock). Read-only: works while ``agent run`` holds the journal."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.operate.config import Config, tracks_of
from agent.operate.logs import safe_path
from agent.operate.runtime import Runtime, read_runtime
from agent.operate.verify_trace import read_trace
from journal import Journal, JournalStats, lock_holder

__all__ = ["collect_status", "render_status", "live_runtime"]

_MAX_DEAD_LISTED = 20


def live_runtime(journal_dir: Path) -> Runtime | None:
    """What a running agent publishes, or None when no agent runs.

    Whether an agent runs is decided by the journal's writer lock, which
    goes away with the process however it ended; ``runtime.json`` may
    outlive its writer by seconds (or forever, after a SIGKILL). Its counters
    count only when they come from the lock's holder; a holder that has not
    published yet shows empty counters."""
    held, pid = lock_holder(journal_dir)
    if not held:
        return None
    runtime = read_runtime(journal_dir)
    if pid is None or runtime is None or runtime.pid != pid:
        return Runtime(pid=pid)
    return runtime


def collect_status(config: Config, now_ns: int | None = None) -> dict[str, Any]:
    """The status document (the stable ``--json`` schema)."""
    now = time.time_ns() if now_ns is None else now_ns
    root = str(config.root) if config.root is not None else None
    with Journal.open(config.journal, root=root, mode="read") as journal:
        stats = journal.stats(now)
        dead = journal.dead_letters()
    configured = [t for target in config.targets for t in tracks_of(target)]
    tracks = list(dict.fromkeys([*configured, *stats.tracks]))
    targets = {track: _track_status(stats, track, dead, now) for track in tracks}
    checkpoint = stats.checkpoint
    runtime = live_runtime(config.journal)
    trace = read_trace(config.journal)
    return {
        "verify": None
        if trace is None
        else {
            "result": trace.result,
            "age_s": trace.age_s(now),
            "local": trace.local,
            "targets": {name: asdict(t) for name, t in trace.targets.items()},
        },
        "targets": targets,
        "checkpoint_age_s": None if checkpoint is None else max(0.0, (now - checkpoint.time_ns) / 1e9),
        "journal": {"entries": stats.entries, "bytes": stats.bytes, "last_seq": stats.last_seq},
        "agent": {
            "running": runtime is not None,
            "pid": runtime.pid if runtime else None,
            "rates": asdict(runtime.rates) if runtime and runtime.rates else {},
            "counters": {name: asdict(c) for name, c in runtime.targets.items()} if runtime else {},
        },
    }


def _track_status(stats: JournalStats, track: str, dead: list, now: int) -> dict[str, Any]:
    ts = stats.tracks.get(track)
    mine = [d for d in dead if d.track == track]
    oldest = ts.oldest_pending_ns if ts else None
    return {
        "pending": ts.pending if ts else 0,
        "oldest_pending_s": None if oldest is None else max(0.0, (now - oldest) / 1e9),
        "dead_letters": len(mine),
        "dead": [
            {"path": safe_path(d.record.entry.path), "reason": d.reason} for d in mine[:_MAX_DEAD_LISTED]
        ],
        "registered": ts is not None,
    }


def render_status(doc: dict[str, Any]) -> str:
    """A small human table."""
    lines = [f"{'TRACK':<24} {'PENDING':>8} {'OLDEST':>10} {'DEAD':>5}"]
    for track, t in doc["targets"].items():
        oldest = "-" if t["oldest_pending_s"] is None else _age(t["oldest_pending_s"])
        lines.append(f"{track:<24} {t['pending']:>8} {oldest:>10} {t['dead_letters']:>5}")
        lines.extend(f"  dead: {d['path']}: {d['reason']}" for d in t["dead"])
    cp = doc["checkpoint_age_s"]
    lines.append(f"checkpoint: {'none' if cp is None else _age(cp) + ' ago'}")
    j = doc["journal"]
    lines.append(f"journal: {j['entries']} entries, {j['bytes'] / 1048576:.1f} MiB")
    verify = doc.get("verify")
    lines.append(
        "last verify: never"
        if verify is None
        else f"last verify: {verify['result']}, {_age(verify['age_s'])} ago"
    )
    agent = doc["agent"]
    if agent["running"]:
        rates = agent["rates"]
        lines.append(
            f"agent: running (pid {agent['pid'] or 'unknown'}), "
            f"in {rates.get('in_per_s', 0):.1f}/s, out {rates.get('out_per_s', 0):.1f}/s"
        )
    else:
        lines.append("agent: not running")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
