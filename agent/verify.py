"""``agent verify``: prove the mirrors hold the tree, or say what differs.

Local audit: the tree against the manifest (what was last shipped) and the
pending entries; a difference with no pending entry is a change the journal
missed. Mirror audits per target live in :mod:`agent.audit`. Paths with a
pending entry for a target are lag, not drift, and are skipped.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable
from typing import IO, Any

import structlog

from agent.audit import Finding, audit_target
from agent.config import Config, TargetConfig
from agent.excludes import Excludes
from agent.fsstate import digest_file, kind_of
from agent.logs import safe_path
from agent.progress import Progress
from agent.replay import select_tracks, walk
from journal import IS_DIR, Entry, FileKind, FileState, Journal, Op

__all__ = ["local_audit", "run_verify"]

log = structlog.get_logger("agent.verify")
_CHUNK = 1 << 20


# ---------------------------------------------------------------------- pending paths
def pending_paths(journal: Journal, tracks: Iterable[str]) -> set[bytes]:
    """Paths with a pending entry on any of ``tracks`` (both ends of a move)."""
    out: set[bytes] = set()
    for track in tracks:
        for record in journal.pending(track):
            out.add(record.entry.path)
            if record.entry.op == Op.MOVE:
                out.add(record.entry.dest)
    return out


def is_covered(path: bytes, pending: set[bytes]) -> bool:
    """True when ``path`` or a parent (or the root, b"") has a pending entry."""
    if not pending:
        return False
    if path in pending or b"" in pending:
        return True
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        if path in pending:
            return True
    return False


# ---------------------------------------------------------------------- local audit
def state_differs(abspath: bytes, st: os.stat_result, known: FileState) -> str | None:
    """Why the disk differs from the manifest state (type, mode, owner,
    symlink target, content), or None. Content is hashed only when stat differs."""
    kind = kind_of(st.st_mode)
    if kind != known.kind:
        return f"type is {kind.name.lower()}, manifest says {known.kind.name.lower()}"
    if kind != FileKind.SYMLINK and stat.S_IMODE(st.st_mode) != known.mode:
        return f"mode {stat.S_IMODE(st.st_mode):o}, manifest says {known.mode:o}"
    if (st.st_uid, st.st_gid) != (known.uid, known.gid):
        return f"owner {st.st_uid}:{st.st_gid}, manifest says {known.uid}:{known.gid}"
    if kind == FileKind.SYMLINK and os.readlink(abspath) != known.link:
        return "symlink target differs from the manifest"
    if kind != FileKind.FILE:
        return None
    same_stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
        known.size,
        known.mtime_ns,
        known.ctime_ns,
        known.inode,
    )
    if same_stat:
        return None
    if st.st_size != known.size:
        return "content differs from the manifest (size)"
    if not known.digest or digest_file(abspath) != known.digest:
        return "content differs from the manifest"
    return None


def local_audit(root: bytes, journal: Journal, excludes: Excludes) -> list[Finding]:
    """Changes the journal missed: tree vs manifest, ignoring pending paths."""
    manifest = {p: s for p, s in journal.manifest_items() if p}
    pending = pending_paths(journal, journal.tracks())
    findings: list[Finding] = []
    skipped: list[bytes] = []  # mount points, unreadable directories: contents unknown, not absent
    with Progress("verify local", len(manifest)) as progress:
        for rel, st in walk(root, excludes, skipped=skipped):
            progress.advance()
            known = manifest.pop(rel, None)
            if is_covered(rel, pending):
                continue
            if known is None:
                findings.append(
                    Finding(rel, "on disk, not in the manifest and not pending (missed by journal)")
                )
                continue
            try:
                why = state_differs(os.path.join(root, rel), st, known)
            except FileNotFoundError:
                continue  # vanished during the walk: its DELETE is on the way
            if why:
                findings.append(Finding(rel, f"{why}, no pending entry (missed by journal)"))
    unknown = tuple(p + b"/" for p in skipped)
    for path in manifest:
        if path in skipped or (unknown and path.startswith(unknown)):
            continue
        if not excludes.match(path, False) and not is_covered(path, pending):
            findings.append(Finding(path, "in the manifest, missing on disk, no pending delete"))
    # entries journaled while we walked are not misses
    pending = pending_paths(journal, journal.tracks())
    return [f for f in findings if not is_covered(f.path, pending)]


def _report(
    root: bytes, journal: Journal, selection: list[tuple[TargetConfig, tuple[str, ...]]], excludes: Excludes
) -> tuple[list[Finding], dict[str, dict[str, Any]], dict[str, list[Finding]]]:
    local = local_audit(root, journal, excludes)
    targets: dict[str, dict[str, Any]] = {}
    drifts: dict[str, list[Finding]] = {}
    for target, tracks in selection:
        findings, error = audit_target(root, target, excludes)
        pending = {t: pending_paths(journal, [t]) for t in tracks}
        kept = [f for f in findings if not _is_lag(f, pending)]
        drifts[target.name] = kept
        targets[target.name] = {
            "drift": [_finding_json(f) for f in kept],
            "error": error,
            "pending_skipped": len(findings) - len(kept),
        }
        log.debug("verify.target", target=target.name, drift=len(kept), error=error)
    return local, targets, drifts


def _is_lag(f: Finding, pending: dict[str, set[bytes]]) -> bool:
    """A finding on a path still pending for its track(s) is lag, not drift."""
    tracks = [f.track] if f.track else list(pending)
    return any(is_covered(f.path, pending.get(t, set())) for t in tracks)


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


def run_verify(config: Config, target: str | None, repair: bool, as_json: bool, out: IO[str]) -> int:
    """The ``agent verify`` command; returns 0 clean, 1 drift, 2 error."""
    root = os.fsencode(config.root)
    excludes = Excludes(list(config.exclude))
    selection = select_tracks(config, target, None)
    with Journal.open(config.journal, root=str(config.root), mode="read") as journal:
        local, targets, drifts = _report(root, journal, selection, excludes)
    drift = bool(local) or any(t["drift"] for t in targets.values())
    error = any(t["error"] for t in targets.values())
    doc: dict[str, Any] = {
        "clean": not drift and not error,
        "local": [_finding_json(f) for f in local],
        "targets": targets,
    }
    if repair:
        doc["repaired"], doc["dead_requeued"] = _repair(config, root, local, drifts, selection)
    out.write(json.dumps(doc, indent=2) + "\n" if as_json else render_verify(doc))
    return 2 if error else 1 if drift else 0


def render_verify(doc: dict[str, Any]) -> str:
    """The human report: one line per finding, then a verdict."""
    lines = [f"local: {f['path']}: {f['why']}" for f in doc["local"]]
    for name, t in doc["targets"].items():
        if t["error"]:
            lines.append(f"{name}: ERROR {t['error']}")
        for f in t["drift"]:
            lines.append(f"{f.get('track', name)}: {f['path']}: {f['why']}")
        if not t["drift"] and not t["error"]:
            lines.append(f"{name}: clean ({t['pending_skipped']} pending paths skipped)")
    errors = any(t["error"] for t in doc["targets"].values())
    lines.append("clean" if doc["clean"] else "ERRORS" if errors else "DRIFT FOUND")
    if "repaired" in doc:
        lines.append(
            f"repair: queued {doc['repaired']} entries, requeued {doc['dead_requeued']} dead letters"
        )
    return "\n".join(lines) + "\n"
