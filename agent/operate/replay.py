"""``agent replay --since TIME``: re-queue the current state of every path
touched since TIME, for one target (or one msync member) or all.

Used after a mirror missed changes (a member was down during multicast
sends). Entries are appended in client mode; when no agent is running, this
process takes the agent lock and ships them itself, otherwise the running
agent does.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import IO

import structlog

from agent.errors import AgentError
from agent.operate.config import Config, ConfigError, MsyncTarget, TargetConfig, find_target, tracks_of
from agent.operate.logs import safe_path
from agent.operate.progress import Progress
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk, root_dev
from journal import IS_DIR, Entry, Journal, JournalLocked, Op, Record

__all__ = ["Since", "parse_since", "touched_paths", "current_entries", "select_tracks", "run_replay"]

log = structlog.get_logger("agent.operate.replay")

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DRAIN_STALL_S = 60.0  # give up shipping ourselves after this long without progress


class ReplayRefused(AgentError):
    """The requested start lies before what the journal still holds."""

    hint = "the journal no longer reaches that far back; run `agent verify --repair` instead"


@dataclass(frozen=True)
class Since:
    """Where a replay starts: a journal seq or a wall-clock time (ns)."""

    seq: int | None = None
    time_ns: int | None = None

    def __str__(self) -> str:
        if self.seq is not None:
            return f"seq:{self.seq}"
        return datetime.fromtimestamp(self.time_ns / 1e9).astimezone().isoformat(timespec="seconds")


def parse_since(text: str, now_ns: int) -> Since:
    """``seq:N``, a relative age (``45s``, ``90m``, ``2h``, ``3d``, ``1w``) or an
    ISO 8601 time (without a zone: local time)."""
    value = text.strip()
    if value.startswith("seq:"):
        digits = value[4:]
        if not digits.isdigit() or int(digits) < 1:
            raise ConfigError(f"--since: bad seq {text!r}", hint="use seq:N with N >= 1")
        return Since(seq=int(digits))
    if m := _AGE.match(value):
        return Since(time_ns=now_ns - int(Fraction(m.group(1)) * _UNIT_S[m.group(2)] * 10**9))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since: cannot read {text!r}",
            hint="use an ISO 8601 time (2026-01-31T14:00), an age (90m, 2h, 3d) or seq:N",
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return Since(time_ns=int(when.timestamp() * 1e9))


def touched_paths(records: Iterable[Record]) -> tuple[set[bytes], set[bytes]]:
    """Every path the records touched (a MOVE touches both ends) and the move
    destinations (which may be whole directories). RESCAN markers are
    skipped: the scans they caused journaled their findings as entries."""
    paths: set[bytes] = set()
    moved: set[bytes] = set()
    for record in records:
        entry = record.entry
        if entry.op == Op.RESCAN:
            continue
        paths.add(entry.path)
        if entry.op == Op.MOVE:
            paths.add(entry.dest)
            moved.add(entry.dest)
    paths.discard(b"")
    return paths, moved


def walk(
    root: bytes, excludes: Excludes, start: bytes = b"", skipped: list[bytes] | None = None
) -> Iterator[tuple[bytes, os.stat_result]]:
    """(relpath, lstat) of every non-excluded entry below ``root/start``,
    parents before children, from the tree's one walker: it never follows a
    symlink and never crosses a mount point. ``skipped`` (when given)
    receives the paths whose contents stayed unknown (mount points,
    unreadable or replaced directories)."""
    try:
        dev = root_dev(root)
    except OSError:
        return
    tree = Walk(root, excludes, dev, start)
    for listing in tree:
        prefix = listing.rel + b"/" if listing.rel else b""
        for name, st in zip(listing.names, listing.stats):
            yield prefix + name, st
    if skipped is not None:
        skipped.extend(tree.skipped)


def current_entries(
    root: bytes, paths: Iterable[bytes], moved: set[bytes], excludes: Excludes, now_ns: int
) -> list[Entry]:
    """One entry per path for its state *now*: CHANGE (IS_DIR for a directory)
    when it exists, DELETE when it does not. A moved-in directory also lists
    everything below it."""
    out: dict[bytes, Entry] = {}
    for path in sorted(paths):
        try:
            st = os.lstat(os.path.join(root, path))
        except (FileNotFoundError, NotADirectoryError):
            if not excludes.match(path, False):
                out[path] = Entry(Op.DELETE, path, time_ns=now_ns)
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if excludes.match(path, is_dir):
            continue
        out[path] = Entry(Op.CHANGE, path, time_ns=now_ns, flags=IS_DIR if is_dir else 0)
        if is_dir and path in moved:
            for rel, sub in walk(root, excludes, path):
                flags = IS_DIR if stat.S_ISDIR(sub.st_mode) else 0
                out[rel] = Entry(Op.CHANGE, rel, time_ns=now_ns, flags=flags)
    return [out[p] for p in sorted(out)]


def select_tracks(
    config: Config, target: str | None, host: str | None
) -> list[tuple[TargetConfig, tuple[str, ...]]]:
    """The (target, tracks) pairs a replay or repair is for."""
    if host is not None:
        msyncs = [t for t in config.targets if isinstance(t, MsyncTarget)]
        chosen = find_target(config, target) if target else (msyncs[0] if len(msyncs) == 1 else None)
        if chosen is None:
            raise ConfigError("--host: name the msync target with --target")
        if not isinstance(chosen, MsyncTarget):
            raise ConfigError(f"--host: target {chosen.name!r} is {chosen.kind}, not msync")
        if host not in chosen.members:
            raise ConfigError(
                f"--host: {host!r} is not a member of {chosen.name!r} (members: {', '.join(chosen.members)})",
                hint="list the member under members = [...] in the target's config",
            )
        return [(chosen, (f"{chosen.name}/{host}",))]
    chosen_list = [find_target(config, target)] if target else list(config.targets)
    if not chosen_list:
        raise ConfigError("target: no target configured", hint="add a [[target]] table or pass --target SPEC")
    return [(t, tracks_of(t)) for t in chosen_list]


def _check_reach(journal: Journal, since: Since) -> None:
    compacted = journal.compacted_through()
    if compacted is None:
        return
    if (since.seq is not None and since.seq <= compacted.seq) or (
        since.time_ns is not None and since.time_ns <= compacted.time_ns
    ):
        reach = datetime.fromtimestamp(compacted.time_ns / 1e9).astimezone().isoformat(timespec="seconds")
        raise ReplayRefused(
            f"--since {since}: the journal was compacted through seq {compacted.seq} ({reach}); "
            "entries before that are gone"
        )


def _collect(journal: Journal, since: Since, root: bytes, excludes: Excludes) -> list[Entry]:
    _check_reach(journal, since)
    records = journal.since(seq=since.seq) if since.seq is not None else journal.since(time_ns=since.time_ns)
    paths, moved = touched_paths(records)
    return current_entries(root, paths, moved, excludes, time.time_ns())


def _check_tracks(journal: Journal, selection: list[tuple[TargetConfig, tuple[str, ...]]]) -> None:
    known = set(journal.tracks())
    for _, tracks in selection:
        for track in tracks:
            if track not in known:
                raise ConfigError(
                    f"target: track {track!r} is not in the journal yet",
                    hint="start `agent run` once with this target so it is registered (and seeded)",
                )


def run_replay(
    config: Config, since_text: str, target: str | None, host: str | None, dry_run: bool, out: IO[str]
) -> int:
    """The ``agent replay`` command; returns the exit status."""
    since = parse_since(since_text, time.time_ns())
    selection = select_tracks(config, target, host)
    root = os.fsencode(config.root)
    excludes = Excludes(list(config.exclude))
    tracks = [t for _, ts in selection for t in ts]
    if dry_run:
        with Journal.open(config.journal, root=str(config.root), mode="read") as journal:
            entries = _collect(journal, since, root, excludes)
        for entry in entries:
            out.write(f"{entry.op.name:<6} {safe_path(entry.path)}{'/' if entry.is_dir else ''}\n")
        out.write(f"{len(entries)} paths since {since} would be queued for {', '.join(tracks)} (dry run)\n")
        return 0
    if not (config.journal / "data.mdb").exists():
        raise ConfigError(f"journal: no journal at {config.journal}", hint="start `agent run` first")
    try:
        journal = Journal.open(config.journal, root=str(config.root), mode="agent")
    except JournalLocked as exc:
        return _hand_off(config, since, selection, root, excludes, exc.holder_pid, out)
    with journal:
        _check_tracks(journal, selection)
        entries = _collect(journal, since, root, excludes)
        if not entries:
            out.write(f"nothing touched since {since}\n")
            return 0
        span = journal.append(entries, tracks=tracks)
        log.info("replay.queued", paths=len(entries), tracks=tracks, since=str(since))
        out.write(f"queued {len(entries)} paths since {since} for {', '.join(tracks)}; shipping\n")
        left = _drain(config, journal, selection, span)
        dead = [d for d in journal.dead_letters() if d.track in tracks and span[0] <= d.record.seq <= span[1]]
    if left:
        out.write(f"{left} entries still pending (target unreachable?); `agent run` ships them later\n")
    for letter in dead:
        out.write(f"dead letter on {letter.track}: {safe_path(letter.record.entry.path)}: {letter.reason}\n")
    if left or dead:
        return 1
    out.write(f"shipped {len(entries)} paths\n")
    return 0


def _hand_off(
    config: Config,
    since: Since,
    selection: list[tuple[TargetConfig, tuple[str, ...]]],
    root: bytes,
    excludes: Excludes,
    pid: int | None,
    out: IO[str],
) -> int:
    """An agent is running: append the entries and let it ship them."""
    tracks = [t for _, ts in selection for t in ts]
    with Journal.open(config.journal, root=str(config.root), mode="client") as journal:
        _check_tracks(journal, selection)
        entries = _collect(journal, since, root, excludes)
        if entries:
            journal.append(entries, tracks=tracks)
    log.info("replay.handed_off", paths=len(entries), tracks=tracks, agent_pid=pid)
    out.write(
        f"queued {len(entries)} paths since {since} for {', '.join(tracks)}; "
        f"the running agent (pid {pid or 'unknown'}) ships them (see `agent status`)\n"
    )
    return 0


def _remaining(journal: Journal, tracks: list[str], span: tuple[int, int]) -> int:
    first, last = span
    total = last - first + 1
    return sum(
        sum(1 for r in journal.pending(t, limit=total, after=first - 1) if r.seq <= last) for t in tracks
    )


def _drain(
    config: Config,
    journal: Journal,
    selection: list[tuple[TargetConfig, tuple[str, ...]]],
    span: tuple[int, int],
) -> int:
    """Ship with this process's own replayers until the replayed entries are
    done (or nothing moves for :data:`DRAIN_STALL_S`); returns what is left."""
    from agent.ship.backends import build_replayers

    tracks = [t for _, ts in selection for t in ts]
    replayers = build_replayers(
        journal, config, [target for target, _ in selection], settle_s=0.0, quiet_s=0.0
    )
    stop = threading.Event()
    left = _remaining(journal, tracks, span)
    total = left
    stalled_since = time.monotonic()
    try:
        with Progress("replay", total) as progress:
            while left and time.monotonic() - stalled_since < DRAIN_STALL_S:
                for replayer in replayers:
                    replayer.step()
                now_left = _remaining(journal, tracks, span)
                if now_left < left:
                    stalled_since = time.monotonic()
                else:
                    stop.wait(0.05)
                left = now_left
                progress.set(total - left)
    finally:
        for replayer in replayers:
            replayer.shipper.close()
    return left
