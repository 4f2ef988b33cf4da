"""msync shipper: brings makuosan members up to date with ``msync`` (docs/msync.md §10).

Progress is per member (docs/design.md §7): a (member, path) is OK only when that
member acknowledged it in msync's output, because msync exits 0 whatever the
members report and silently skips members that are down. Before each plan the
member list is read with ``msync --members``; absent members stay pending and
are caught up later with ``-t MEMBER``. Paths msync cannot carry exactly are
FAILED with a reason, never sent approximately. Paths go out with
``--sync`` (create, update or delete in one command); a recursive PUT with
``--delete -r`` so the member's subtree ends up equal, extras removed. A
file some member skipped is content-checked (check.py), so a lost
same-size rewrite is FAILED, not OK. A call that stops making progress
(a member stopped answering and makuosan waits a minute for it) is ended and
each member is tried alone, so the live ones are not held (stall.py).
Over makuosan's TCP console each answering exchange costs 40 ms: a
directory the plan holds goes out as one ``-l 2 -r`` (group.py), and a
TCP console is reached through a relay that acknowledges at once
(relay.py); the per-member answers are the same either way.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from agent.errors import ConfigError
from agent.ship import process as _exec
from agent.ship.actions import Action, Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.msync.carry import command_prefix, fits, prepare
from agent.ship.msync.commands import build_argv, daemon_options
from agent.ship.msync.group import group_items, list_dir
from agent.ship.msync.invoke import Invoker
from agent.ship.msync.jobs import (
    Item,
    Job,
    lane_jobs,
    lane_of,
    lane_roots,
    parent_dirs,
    restamp_levels,
    size_of,
)
from agent.ship.msync.members import Members
from agent.ship.msync.relay import ConsoleRelay, greets, relay_tag, sweep, tcp_address
from agent.ship.msync.source import Source
from agent.ship.msync.stall import SUSPECT_S, idle_limit
from agent.ship.targets import MsyncTarget, tracks_of
from agent.tree.walk import root_dev

__all__ = ["MsyncShipper"]

log = structlog.get_logger()


def password_file_problem(path: Path | None) -> str | None:
    """msync -K files must be private: refuse one readable by group or others."""
    if path is None:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"password file {path}: {exc.strerror}"
    if mode & 0o077:
        perms = f"{stat.S_IMODE(mode):04o}"
        return f"password file {path} is accessible by group/others (mode {perms}); chmod 600 it"
    return None


class MsyncShipper:
    """Ships plans to one makuosan cluster. ``env`` is extra environment for the
    msync process (e.g. ``MSYNC_TARGET``); ``clock`` gives the current time;
    a member that stalled a call is sent nothing for ``suspect_s`` seconds.
    A TCP console is reached through a :class:`ConsoleRelay` (made in
    ``relay_dir``, else a private temporary directory, whose leftovers from
    a killed agent it removes when made; ``relay_connect``
    opens a connection to the console) while it takes connections."""

    def __init__(
        self,
        target: MsyncTarget,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        excludes: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        suspect_s: float = SUSPECT_S,
        relay_dir: Path | None = None,
        relay_connect: Callable[[], socket.socket] | None = None,
    ) -> None:
        self.name = target.name
        self.tracks = tracks_of(target)
        self._t = target
        self._env = dict(env or {})
        self._clock = clock
        self._source = Source(target, root, excludes, clock)
        problem = password_file_problem(target.password_file)
        if problem is not None:
            raise ConfigError(f"target {target.name}: {problem}")
        self._members = Members(target, suspect_s)
        self._invoker = Invoker(target, self._source, self._members, self._exec, self._set)
        self._lock = threading.Lock()
        self._relay: ConsoleRelay | None = None
        self._relay_dir = str(relay_dir) if relay_dir is not None else None
        self._relay_connect = relay_connect
        self._relay_tag = relay_tag(self._source.root, target.name)
        if relay_dir is None and target.console_relay:
            for path in sweep(self._relay_tag):
                log.info("ship.msync.relay_swept", target=self.name, path=path)
        self._via = target.console  # the -c msync gets for the plan being shipped

    # ------------------------------------------------------------------ public
    def ship(self, plan: Plan) -> list[ShipResult]:
        """One result per (track, path) of the plan; never raises for a path."""
        items = [self._item(a) for a in plan.actions]
        live = [it for it in items if it.entry is not None]
        if live:
            self._via = self._console()
            self._ship_live(live)
            self._restamp_parents(live)
        for it in items:  # safety net: a track nobody reported on stays pending
            missing = [tr for tr in it.tracks if tr not in it.results]
            self._set(it, missing, Outcome.RETRY, "no result from msync for this member")
        results = [r for it in items for r in it.results.values()]
        counts = {o.value: sum(r.outcome is o for r in results) for o in Outcome}
        log.info("ship.msync.done", target=self.name, paths=len(items), **counts)
        return results

    def close(self) -> None:
        """Stop the console relay, if one was made."""
        with self._lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()

    def _console(self) -> str | None:
        """msync's ``-c`` for this plan: the relay while the TCP console takes
        connections (relay.py), else the configured console."""
        t = self._t
        address = tcp_address(self._console_named())
        if not t.console_relay or address is None:
            return t.console
        connect = self._relay_connect or (lambda: socket.create_connection(address, timeout=5))
        if not greets(connect):
            return t.console  # msync itself says what is wrong
        if self._relay is None:
            try:
                self._relay = ConsoleRelay(connect, self._relay_dir, self._relay_tag)
            except OSError as exc:
                log.warning("ship.msync.relay_failed", target=self.name, error=str(exc))
                return t.console
        return self._relay.target

    def _console_named(self) -> str:
        """The console msync reaches without ``-c``: configured, from the
        environment, or makuosan's default."""
        return self._t.console or self._env.get("MSYNC_TARGET") or "tcp:127.0.0.1:5000"

    # ------------------------------------------------------------------ preparation
    def _set(self, it: Item, tracks: Sequence[str], outcome: Outcome, reason: str = "") -> None:
        with self._lock:
            for tr in tracks:
                it.results[tr] = ShipResult(tr, it.action.path, outcome, reason)
        if outcome != Outcome.OK and tracks:
            log.debug(
                "ship.msync.not_ok",
                target=self.name,
                path=it.action.path,
                outcome=outcome.value,
                reason=reason,
            )

    def _item(self, action: Action) -> Item:
        tracks = tuple(sorted(action.tracks)) if action.tracks else self.tracks
        it = Item(action, tracks)
        unknown = [t for t in tracks if t not in self.tracks]
        if unknown:
            self._set(it, unknown, Outcome.FAILED, "not a track of this target")
            it.tracks = tuple(t for t in tracks if t in self.tracks)
        prep = prepare(self._source.rel(action.path))
        if isinstance(prep, str):
            self._set(it, it.tracks, Outcome.FAILED, prep)
            return it
        why = self._source.look(it, prep)
        if why is not None:
            self._set(it, it.tracks, why[0], why[1])
        return it

    def _ship_live(self, live: list[Item]) -> None:
        problem = password_file_problem(self._t.password_file)
        if problem is not None:
            for it in live:
                self._set(it, it.tracks, Outcome.FAILED, problem)
            return
        listed, why = self._members.look(self._exec, self._t.msync)
        if listed is None:
            for it in live:
                self._set(it, it.tracks, Outcome.RETRY, why)
            return
        lanes = self._lanes(live, listed)
        with ThreadPoolExecutor(max_workers=max(1, len(lanes))) as pool:
            list(pool.map(lambda lane: [self._invoker.run_job(j, listed) for j in lane], lanes))

    def absent_seconds(self) -> dict[str, float]:
        """Per member track: seconds since it was last seen missing from
        ``msync --members`` (:meth:`Members.absent_seconds`)."""
        return self._members.absent_seconds()

    # ------------------------------------------------------------------ parent directories
    def _restamp_parents(self, live: list[Item]) -> None:
        """Send the parent directories of what was shipped OK again, deepest
        first, so members take their mtime (and mode) from the source after
        entries inside changed. Best effort: a member that misses it differs
        in that directory's mtime only, which verify reports and repairs.
        Only members that took part get it (``-t`` unless every expected
        member did), silently (level 0), and a call that stays silent past
        its time is ended: a member cut off must not hold the others."""
        tokens = []
        shipped = [it.action.path for it in live if any(r.outcome is Outcome.OK for r in it.results.values())]
        for parent in parent_dirs(shipped):
            try:
                if not stat.S_ISDIR(os.lstat(self._source.root + b"/" + parent).st_mode):
                    continue
            except OSError:
                continue
            prep = prepare(self._source.rel(parent))
            if not isinstance(prep, str):
                tokens.append(prep.token)
        for host in self._restamp_hosts(live) if tokens else []:
            fitting = [t for t in tokens if fits(t, command_prefix(host=host))]
            for level in restamp_levels(fitting, self._t.concurrency):
                with ThreadPoolExecutor(max_workers=len(level)) as pool:
                    stalled = any(pool.map(functools.partial(self._restamp, host), level))
                if stalled:
                    log.warning("ship.msync.restamp_stalled", target=self.name, host=host)
                    break

    def _restamp(self, host: bytes | None, chunk: list[bytes]) -> bool:
        """One silent send of directories; whether it stalled. It prints
        nothing before a prompt, so it pays no delayed ACK on a TCP console
        and goes there directly, unless msync cannot reach the console
        itself (the relay was given its own way there)."""
        argv = build_argv(
            os.fsencode(self._t.msync), excludes=self._source.excludes, level=0, host=host, tokens=chunk
        )
        direct = self._relay_connect is None and self._via != self._t.console
        via = self._console_named() if direct else self._via
        res = self._exec(argv, idle_limit(self._t.stall_s, 0, 2 * len(chunk)), via=via)
        log.debug("ship.msync.restamp_dirs", target=self.name, paths=len(chunk), rc=res.returncode)
        return res.stalled

    def _restamp_hosts(self, live: list[Item]) -> list[bytes | None]:
        """[None] (no ``-t``) when every expected member took the plan, else
        each member that did."""
        member_of = self._members.of_track
        if not member_of:
            return [None]
        took = {r.track for it in live for r in it.results.values() if r.outcome is Outcome.OK}
        hosts = sorted({member_of[t] for t in took if t in member_of})
        return [None] if len(hosts) == len(set(member_of.values())) else list(hosts)

    # ------------------------------------------------------------------ shipping
    def _exec(self, argv: list[bytes], idle: float | None = None, via: str | None = None) -> _exec.ExecResult:
        t = self._t
        console = self._via if via is None else via
        opts = daemon_options(
            os.fsencode(console) if console else None,
            os.fsencode(t.password_file) if t.password_file else None,
        )
        full = [argv[0], *opts, *argv[1:]]
        return _exec.run(full, timeout=t.timeout_s, env=self._env, idle_timeout=idle)

    def _hosts_needed(self, it: Item, listed: list[bytes]) -> list[bytes]:
        """Members this item goes to; tracks of absent members are RETRY."""
        member_of = self._members.of_track
        if not member_of:
            if not listed:
                self._set(it, it.tracks, Outcome.RETRY, "no makuosan member is listed")
            return listed
        absent = [tr for tr in it.tracks if member_of[tr] not in listed]
        if absent:
            self._set(it, absent, Outcome.RETRY, "member absent from msync --members")
        silent = [tr for tr in it.tracks if tr not in absent and self._members.suspects.active(member_of[tr])]
        if silent:
            self._set(it, silent, Outcome.RETRY, "member stopped answering lately; tried again in a minute")
        return [member_of[tr] for tr in it.tracks if tr not in absent and tr not in silent]

    def _lanes(self, live: list[Item], listed: list[bytes]) -> list[list[Job]]:
        """Lanes run concurrently, the jobs of a lane strictly in plan order.
        A path and every planned path inside it share a lane (jobs.py,
        lane_roots), so ordering inside a subtree (delete before put,
        parents) is kept for every member, while scattered paths spread over
        the lanes: makuosan has the files of concurrent calls in flight
        together. There are only as many lanes as full batches, up to
        ``concurrency``. Items for a subset of the members (catch-up) go out
        with ``-t``, once per member."""
        everyone = {m for m in self._members.of_track.values() if m in listed} or set(listed)
        keyed: list[tuple[tuple[bytes, ...] | None, Item]] = []
        for it in live:
            hosts = self._hosts_needed(it, listed)
            if hosts:
                keyed.append((None if set(hosts) == everyone else tuple(sorted(hosts)), it))
        keyed = self._grouped(keyed)
        width = max(1, min(self._t.concurrency, -(-len(keyed) // max(1, self._t.batch))))
        roots = lane_roots([it.entry.echo for _, it in keyed])
        lanes: list[list[tuple[tuple[bytes, ...] | None, Item]]] = [[] for _ in range(width)]
        for (key, it), lane in zip(
            keyed, lane_of(roots, [size_of(it) for _, it in keyed], width), strict=True
        ):
            lanes[lane].append((key, it))
        return [lane_jobs(lane, self._t.batch) for lane in lanes if lane]

    def _grouped(self, keyed: list) -> list:
        """Whole planned directories become one ``-r`` send each (group.py)."""
        try:
            dev = root_dev(self._source.root)
        except OSError:
            return keyed
        now = self._clock()
        unbounded = bool(self._source.excludes)  # excluded entries do not count against a bound
        listdir = lambda rel, most: list_dir(self._source.root, rel, dev, now, None if unbounded else most)  # noqa: E731
        return group_items(keyed, listdir, self._source.rel, self._source.makuosan_skips)
