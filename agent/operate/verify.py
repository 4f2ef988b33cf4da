"""``agent verify``: prove the mirrors hold the tree, or say what differs.

Local audit: the tree against the manifest (what was last shipped) and the
pending entries; a difference with no pending entry is a change the journal
missed. Mirror audits per target live in :mod:`agent.operate.audit`: every path of
every mirror is compared, pending or not, and :mod:`agent.operate.lag` decides
whether a difference is lag (the agent is on it) or drift. Exit 0 means no
drift: the mirrors equal the tree except for lag, which is listed. Special
files (fifos, sockets, devices) are not replicated: they are listed once,
and are drift only where a mirror holds something at their path.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import structlog

from agent.operate.audit import Finding, audit_target
from agent.operate.config import Config, TargetConfig
from agent.operate.lag import any_pending, default_lag_max, lag_or_drift, merge, read_pending
from agent.operate.logs import safe_path
from agent.operate.replay import select_tracks
from agent.operate.runtime import failing_reasons, read_runtime
from agent.operate.tree_audit import audit_tree
from agent.operate.verify_trace import trace_from_report, write_trace
from agent.tree.excludes import Excludes
from journal import IS_DIR, Entry, Journal, Op

__all__ = ["local_audit", "run_verify"]

log = structlog.get_logger("agent.operate.verify")


# ---------------------------------------------------------------------- local audit
def local_audit(root: bytes, journal: Journal, excludes: Excludes) -> tuple[list[Finding], list[bytes]]:
    """Changes the journal missed (tree vs manifest, paths with no pending
    entry on any track), and the special files of the tree, which are not
    replicated and not compared. One directory at a time: see
    :mod:`agent.operate.tree_audit`."""
    pending = [read_pending(journal, t) for t in journal.tracks()]
    findings, specials = audit_tree(root, journal, excludes, pending)
    # entries journaled while we walked are not misses
    pending = [read_pending(journal, t) for t in journal.tracks()]
    return [f for f in findings if not any_pending(f.path, pending)], specials


# ---------------------------------------------------------------------- mirror audits
@dataclass
class _Context:
    """What judging a target's findings needs."""

    journal: Journal
    specials: set[bytes]
    failing: dict[str, tuple[dict[bytes, str], int]]
    now_ns: int
    lag_max_s: float


def _audit_one(
    root: bytes, target: TargetConfig, tracks: tuple[str, ...], excludes: Excludes, ctx: _Context
) -> tuple[dict[str, Any], list[Finding]]:
    """One target's report (drift, lag, error) and its drifted findings."""
    before = {t: read_pending(ctx.journal, t) for t in tracks}
    findings, error = audit_target(root, target, excludes, sorted(ctx.specials))
    pending = {t: merge(before[t], read_pending(ctx.journal, t, ctx.failing.get(t, ({}, 0)))) for t in tracks}
    drifted: dict[tuple[str | None, bytes], Finding] = {}
    lagging: list[dict[str, Any]] = []
    for f in findings:
        if f.path in ctx.specials and f.why.startswith("missing on the m"):
            continue  # not replicated: listed once as a special file
        calls = [
            (t, lag_or_drift(f.path, f.why, pending[t], ctx.now_ns, ctx.lag_max_s))
            for t in _tracks(f, tracks)
        ]
        worst = next((v for _, v in calls if not v.lag), None)
        if worst is None:
            lagging.append({**_finding_json(f), "pending_s": max(v.pending_s or 0.0 for _, v in calls)})
        else:
            drifted[(f.track, f.path)] = replace(f, why=worst.why)
    dead = _dead_letters(ctx.journal, target, tracks, drifted)
    kept = sorted(drifted.values(), key=lambda f: (f.path, f.track or ""))
    doc = {
        "drift": [_finding_json(f) for f in kept],
        "dead": dead,
        "lag": lagging,
        "error": error,
        "pending_skipped": len(lagging),
    }
    log.debug("verify.target", target=target.name, drift=len(kept), lag=len(lagging), error=error)
    return doc, kept


def _dead_letters(
    journal: Journal,
    target: TargetConfig,
    tracks: tuple[str, ...],
    drifted: dict[tuple[str | None, bytes], Finding],
) -> list[dict[str, Any]]:
    """Every dead letter of the target, listed; where its path differs on the
    mirror, the drift says so. A letter whose path the mirror holds as the
    tree does is not drift: clean means the mirrors equal the tree, and the
    comparison above is what knows. A move's letter names its destination."""
    out = []
    for track in tracks:
        for letter in journal.dead_letters(track):
            entry = letter.record.entry
            path = entry.dest if entry.op == Op.MOVE else entry.path
            key = (None if tracks == (target.name,) else track, path)
            out.append({"path": safe_path(path), "track": track, "reason": letter.reason})
            for k in (key, (None, path)):
                if k in drifted and "dead letter: " + letter.reason not in drifted[k].why:
                    drifted[k] = replace(drifted[k], why=f"{drifted[k].why}; dead letter: {letter.reason}")
    return out


def _tracks(f: Finding, tracks: tuple[str, ...]) -> tuple[str, ...]:
    return (f.track,) if f.track else tracks


def _report(
    root: bytes,
    journal: Journal,
    selection: list[tuple[TargetConfig, tuple[str, ...]]],
    excludes: Excludes,
    failing: dict[str, tuple[dict[bytes, str], int]],
    lag_max_s: float,
) -> tuple[list[Finding], list[bytes], dict[str, dict[str, Any]], dict[str, list[Finding]]]:
    local, specials = local_audit(root, journal, excludes)
    ctx = _Context(journal, set(specials), failing, time.time_ns(), lag_max_s)
    targets: dict[str, dict[str, Any]] = {}
    drifts: dict[str, list[Finding]] = {}
    for target, tracks in selection:
        targets[target.name], drifts[target.name] = _audit_one(root, target, tracks, excludes, ctx)
    return local, specials, targets, drifts


def _finding_json(f: Finding) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": safe_path(f.path), "why": f.why}
    if f.track is not None:
        doc["track"] = f.track
    return doc


def repair_entries(root: bytes, paths: Iterable[bytes], now_ns: int) -> list[Entry]:
    """CHANGE for paths that exist now (IS_DIR for directories), DELETE for the rest."""
    out = []
    for path in sorted(set(paths)):
        try:
            st = os.lstat(os.path.join(root, path))
        except (FileNotFoundError, NotADirectoryError):
            out.append(Entry(Op.DELETE, path, time_ns=now_ns))
            continue
        out.append(Entry(Op.CHANGE, path, time_ns=now_ns, flags=IS_DIR if stat.S_ISDIR(st.st_mode) else 0))
    return out


def _repair(
    config: Config,
    root: bytes,
    local: list[Finding],
    drifts: dict[str, list[Finding]],
    selection: list[tuple[TargetConfig, tuple[str, ...]]],
) -> tuple[int, int]:
    """Append entries for every drifted path, for the tracks that need it, and
    give those tracks' dead letters a fresh try. Returns both counts."""
    per_track: dict[str, set[bytes]] = {}
    for target, tracks in selection:
        for track in tracks:
            per_track.setdefault(track, set()).update(f.path for f in local)
        for f in drifts[target.name]:
            for track in (f.track,) if f.track else tracks:
                per_track[track].add(f.path)
    now = time.time_ns()
    count = requeued = 0
    with Journal.open(config.journal, root=str(config.root), mode="client") as journal:
        for track, paths in per_track.items():
            requeued += journal.requeue_dead(track)  # their cause was fixed, or they show up again
            if paths:
                journal.append(repair_entries(root, paths, now), tracks=[track])
                count += len(paths)
    log.info("verify.repair", entries=count, dead_requeued=requeued)
    return count, requeued


def run_verify(
    config: Config,
    target: str | None,
    repair: bool,
    as_json: bool,
    out: IO[str],
    lag_max_s: float | None = None,
) -> int:
    """The ``agent verify`` command; returns 0 clean (lag allowed), 1 drift, 2 error."""
    root = os.fsencode(config.root)
    excludes = Excludes(list(config.exclude))
    selection = select_tracks(config, target, None)
    if lag_max_s is None:
        lag_max_s = default_lag_max(config.settle_ms / 1000, config.retry_max_s)
    failing = failing_reasons(read_runtime(Path(config.journal)))
    with Journal.open(config.journal, root=str(config.root), mode="read") as journal:
        local, specials, targets, drifts = _report(root, journal, selection, excludes, failing, lag_max_s)
    drift = bool(local) or any(t["drift"] for t in targets.values())
    error = any(t["error"] for t in targets.values())
    doc: dict[str, Any] = {
        "clean": not drift and not error,
        "local": [_finding_json(f) for f in local],
        "targets": targets,
        "special": [safe_path(p) for p in specials],
        "lag_max_s": lag_max_s,
    }
    if repair:
        doc["repaired"], doc["dead_requeued"] = _repair(config, root, local, drifts, selection)
    out.write(json.dumps(doc, indent=2) + "\n" if as_json else render_verify(doc))
    _leave_trace(config, doc)
    return 2 if error else 1 if drift else 0


def _leave_trace(config: Config, doc: dict[str, Any]) -> None:
    """Record the verdict for ``status`` and the agent's metrics; best effort:
    a verify that could not write it still reports its verdict."""
    try:
        write_trace(config.journal, trace_from_report(doc))
    except OSError as exc:
        log.warning("verify.trace_failed", error=str(exc))


def render_verify(doc: dict[str, Any]) -> str:
    """The human report: one line per finding, then a verdict."""
    lines = [f"local: {f['path']}: {f['why']}" for f in doc["local"]]
    lines += [f"{p}: not replicated: special file" for p in doc["special"]]
    for name, t in doc["targets"].items():
        if t["error"]:
            lines.append(f"{name}: ERROR {t['error']}")
        for f in t["drift"]:
            lines.append(f"{f.get('track', name)}: {f['path']}: {f['why']}")
        for f in t["lag"]:
            lines.append(
                f"{f.get('track', name)}: lag: {f['path']}: {f['why']} (pending {f['pending_s']:.1f}s)"
            )
        lines += [f"{d['track']}: dead letter: {d['path']}: {d['reason']}" for d in t.get("dead", [])]
        if not t["drift"] and not t["error"]:
            lines.append(f"{name}: clean ({len(t['lag'])} pending paths lagging)")
    errors = any(t["error"] for t in doc["targets"].values())
    lines.append("clean" if doc["clean"] else "ERRORS" if errors else "DRIFT FOUND")
    if "repaired" in doc:
        lines.append(
            f"repair: queued {doc['repaired']} entries, requeued {doc['dead_requeued']} dead letters"
        )
    return "\n".join(lines) + "\n"
