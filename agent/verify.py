"""``agent verify``: prove the mirrors hold the tree, or say what differs.

Local audit: the tree against the manifest (what was last shipped) and the
pending entries; a difference with no pending entry is a change the journal
missed. Mirror audit per target: a direct compare for ``local``, an rsync
checksum dry run for ``rsync``, ``msync --check`` per member for ``msync``.
Paths with a pending entry for a target are lag, not drift, and are skipped.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

import structlog

from agent.config import Config, LocalTarget, MsyncTarget, RsyncTarget, TargetConfig
from agent.errors import AgentError
from agent.excludes import Excludes
from agent.fsstate import digest_file
from agent.logs import safe_path
from agent.progress import Progress
from agent.replay import select_tracks, walk
from agent.shippers import _exec
from journal import IS_DIR, Entry, FileKind, FileState, Journal, Op

__all__ = ["Finding", "local_audit", "compare_trees", "parse_itemized", "parse_msync_check", "run_verify"]

log = structlog.get_logger("agent.verify")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Finding:
    path: bytes
    why: str
    track: str | None = None  # one msync member's track; None = every track of the target


class AuditError(AgentError):
    """A mirror could not be audited (unreachable, tool missing)."""


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
def _kind(mode: int) -> FileKind:
    return {stat.S_IFREG: FileKind.FILE, stat.S_IFDIR: FileKind.DIR, stat.S_IFLNK: FileKind.SYMLINK}.get(
        stat.S_IFMT(mode), FileKind.OTHER
    )


def state_differs(abspath: bytes, st: os.stat_result, known: FileState) -> str | None:
    """Why the disk differs from the manifest state (type, mode, owner,
    symlink target, content), or None. Content is hashed only when stat differs."""
    kind = _kind(st.st_mode)
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
    with Progress("verify local", len(manifest)) as progress:
        for rel, st in walk(root, excludes):
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
    for path in manifest:
        if not excludes.match(path, False) and not is_covered(path, pending):
            findings.append(Finding(path, "in the manifest, missing on disk, no pending delete"))
    # entries journaled while we walked are not misses
    pending = pending_paths(journal, journal.tracks())
    return [f for f in findings if not is_covered(f.path, pending)]


# ---------------------------------------------------------------------- local mirror
def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _entry_diff(src: bytes, dst: bytes, s: os.stat_result, d: os.stat_result) -> str | None:
    ks, kd = _kind(s.st_mode), _kind(d.st_mode)
    if ks != kd:
        return f"type differs (source {ks.name.lower()}, mirror {kd.name.lower()})"
    if ks == FileKind.SYMLINK:
        return None if os.readlink(src) == os.readlink(dst) else "symlink target differs"
    if stat.S_IMODE(s.st_mode) != stat.S_IMODE(d.st_mode):
        return f"mode differs (source {stat.S_IMODE(s.st_mode):o}, mirror {stat.S_IMODE(d.st_mode):o})"
    if ks == FileKind.FILE and (s.st_size != d.st_size or not _same_content(src, dst)):
        return "content differs"
    return None


def _listing(path: bytes, rel: bytes, excludes: Excludes) -> dict[bytes, os.stat_result]:
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for de in entries:
        child = rel + b"/" + de.name if rel else de.name
        try:
            st = de.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not excludes.match_self(child, stat.S_ISDIR(st.st_mode)):
            out[de.name] = st
    return out


def compare_trees(src_root: bytes, dst_root: bytes, excludes: Excludes) -> list[Finding]:
    """Direct compare of a tree with its mirror: content, type, mode, symlink
    target, and extra entries on the mirror (reported once, at their top)."""
    if not os.path.isdir(dst_root):
        raise AuditError(f"mirror {safe_path(dst_root)} is not a directory")
    findings: list[Finding] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        src_dir, dst_dir = os.path.join(src_root, rel), os.path.join(dst_root, rel)
        src_list, dst_list = _listing(src_dir, rel, excludes), _listing(dst_dir, rel, excludes)
        for name in sorted(dst_list.keys() - src_list.keys()):
            findings.append(Finding(rel + b"/" + name if rel else name, "extra on the mirror"))
        for name in sorted(src_list):
            child = rel + b"/" + name if rel else name
            s, d = src_list[name], dst_list.get(name)
            if d is None:
                findings.append(Finding(child, "missing on the mirror"))
            else:
                try:
                    why = _entry_diff(os.path.join(src_root, child), os.path.join(dst_root, child), s, d)
                except FileNotFoundError:
                    why = None
                if why:
                    findings.append(Finding(child, why))
            if stat.S_ISDIR(s.st_mode):
                stack.append(child)
    return findings


# ---------------------------------------------------------------------- rsync
_ESCAPE = re.compile(rb"\\#([0-7]{3})")
_ATTR_WHY = {
    2: "content differs",
    3: "size differs",
    5: "mode differs",
    6: "owner differs",
    7: "group differs",
}


def _unescape(name: bytes) -> bytes:
    """rsync prints unprintable bytes (and a backslash before '#') as ``\\#ooo``."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), name)


def classify_item(item: str) -> str | None:
    """Why an rsync itemize code (``>fc.t......``) means drift; None for
    differences the mirror contract ignores (times)."""
    if item.startswith("*deleting"):
        return "extra on the mirror"
    if item[2:] == "+" * 9:
        return "missing on the mirror"
    whys = [why for pos, why in _ATTR_WHY.items() if len(item) > pos and item[pos] not in ". "]
    if item[1:2] == "L" and "content differs" in whys:
        whys[whys.index("content differs")] = "symlink target differs"
    if "content differs" in whys and "size differs" in whys:
        whys.remove("size differs")
    return ", ".join(whys) or None


def parse_itemized(stdout: bytes) -> list[Finding]:
    """Findings from ``rsync -i --out-format='%i %n'`` output; a deleted
    directory's children are folded into it."""
    findings: dict[bytes, str] = {}
    for line in stdout.split(b"\n"):
        if len(line) < 13 or line[11:12] != b" ":
            continue
        item, name = line[:11].decode("ascii", "replace"), _unescape(line[12:]).rstrip(b"/")
        why = classify_item(item)
        if why and name not in (b"", b"."):
            findings[name] = why
    deleted = {p for p, w in findings.items() if w == "extra on the mirror"}
    return [
        Finding(p, w)
        for p, w in sorted(findings.items())
        if not (w == "extra on the mirror" and _below(p, deleted))
    ]


def _below(path: bytes, tops: set[bytes]) -> bool:
    """True when a proper parent of ``path`` is in ``tops``."""
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        if path in tops:
            return True
    return False


def audit_rsync(root: bytes, target: RsyncTarget, excludes: Excludes) -> list[Finding]:
    dest = target.dest if target.dest.endswith("/") else target.dest + "/"
    argv = [
        target.rsync,
        "-a",
        "--dry-run",
        "--checksum",
        "--itemize-changes",
        "--delete",
        "--out-format=%i %n",
        *(f"--exclude={p}" for p in excludes.patterns),
        *target.options,
        root.rstrip(b"/") + b"/",
        dest,
    ]
    result = _exec.run(argv, timeout=target.timeout_s)
    if result.missing or result.timed_out or result.returncode not in (0, 24):
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise AuditError(f"rsync check of {target.dest} failed (rc {result.returncode}): {detail[0]}")
    return [f for f in parse_itemized(result.stdout) if not excludes.match(f.path, False)]


# ---------------------------------------------------------------------- msync
_NG = re.compile(rb"^(\S+): NG (.+)$")
_MISSING = re.compile(rb"^error: No such file or directory (\S*?):(.+)$")


def parse_msync_check(stdout: bytes, stderr: bytes, host: str) -> list[tuple[bytes, str]]:
    """(base-relative path, why) from ``msync --check`` output for ``host``."""
    out = []
    for line in stdout.splitlines():
        if (m := _NG.match(line.rstrip(b"\r"))) and m.group(1).decode(errors="replace") == host:
            out.append((m.group(2), "content differs (msync --check NG)"))
    for line in stderr.splitlines():
        if (m := _MISSING.match(line.rstrip(b"\r"))) and m.group(1).decode(errors="replace") == host:
            out.append((m.group(2), "missing on the member"))
    return out


def _msync_base_argv(target: MsyncTarget) -> list[str]:
    argv = [target.msync]
    if target.console:
        argv += ["-c", target.console]
    if target.password_file:
        argv += ["-K", str(target.password_file)]
    return argv


def audit_msync(
    root: bytes, target: MsyncTarget, env: dict[str, str] | None = None
) -> tuple[list[Finding], str | None]:
    """``msync --check -r`` per expected member; absent members are an error.
    ``env`` is extra environment for msync (e.g. ``MSYNC_TARGET``)."""
    base = os.fsencode(target.base) if target.base else root
    listing = _exec.run([*_msync_base_argv(target), "--members"], timeout=target.timeout_s, env=env)
    if listing.returncode != 0 or listing.missing:
        detail = (listing.stderr or listing.stdout).decode(errors="replace").strip()[-200:]
        raise AuditError(f"msync --members failed (rc {listing.returncode}): {detail}")
    present = {
        line.split()[0].decode(errors="replace") for line in listing.stdout.splitlines() if line.strip()
    }
    absent = [m for m in target.members if m not in present]
    findings: list[Finding] = []
    for member in (m for m in target.members if m in present):
        argv = [*_msync_base_argv(target), "-t", member, "--check", "-r"]
        result = _exec.run(argv, timeout=target.timeout_s, env=env)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[-200:]
            raise AuditError(f"msync --check -t {member} failed (rc {result.returncode}): {detail}")
        for path, why in parse_msync_check(result.stdout, result.stderr, member):
            rel = os.path.relpath(os.path.join(base, path), root)
            findings.append(Finding(rel, why, track=f"{target.name}/{member}"))
    return findings, (f"members absent from msync --members: {', '.join(absent)}" if absent else None)


# ---------------------------------------------------------------------- command
def audit_target(root: bytes, target: TargetConfig, excludes: Excludes) -> tuple[list[Finding], str | None]:
    """Mirror findings of one target and an error text (None when audited)."""
    try:
        if isinstance(target, LocalTarget):
            return compare_trees(root, os.fsencode(target.path), excludes), None
        if isinstance(target, RsyncTarget):
            return audit_rsync(root, target, excludes), None
        return audit_msync(root, target)
    except (AuditError, OSError) as exc:
        return [], str(exc)


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
