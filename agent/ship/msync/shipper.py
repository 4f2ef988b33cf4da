"""msync shipper: brings makuosan members up to date with ``msync`` (docs/msync.md §10).

Progress is per member (docs/design.md §7): a (member, path) is OK only when that
member acknowledged it in msync's output, because msync exits 0 whatever the
members report and silently skips members that are down. Before each plan the
member list is read with ``msync --members``; absent members stay pending and
are caught up later with ``-t MEMBER``. Paths msync cannot carry exactly are
FAILED with a reason, never sent approximately. Paths go out with
``--sync`` (create, update or delete in one command); a recursive PUT with
``--delete -r`` so the member's subtree ends up equal, extras removed. A
file some member skipped is content-checked (msync_check), so a lost
same-size rewrite is FAILED, not OK. A call that stops making progress
(a member stopped answering and makuosan waits a minute for it) is ended and
each member is tried alone, so the live ones are not held (msync_stall).
Over makuosan's TCP console each answering exchange costs 40 ms: a
directory the plan holds goes out as one ``-l 2 -r`` (msync_group), and a
TCP console is reached through a relay that acknowledges at once
(msync_relay); the per-member answers are the same either way.
"""

from __future__ import annotations

import errno
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
from agent.ship.base import Outcome, ShipResult
from agent.ship.msync import parse as mp
from agent.ship.msync.check import verify_skips
from agent.ship.msync.filters import makuosan_patterns
from agent.ship.msync.group import group_items, list_dir
from agent.ship.msync.jobs import (
    Item,
    Job,
    expand,
    lane_jobs,
    lane_of,
    lane_roots,
    parent_dirs,
    settle_levels,
    size_of,
)
from agent.ship.msync.relay import ConsoleRelay, greets, relay_tag, sweep, tcp_address
from agent.ship.msync.stall import SUSPECT_S, Suspects, idle_limit
from agent.ship.plan import Action, Plan
from agent.ship.targets import MsyncTarget, tracks_of
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk, join, root_dev

__all__ = ["MsyncShipper"]

log = structlog.get_logger()
_NO_EXCLUDES = Excludes(())  # msync's own excludes are applied, with its matching rules
_RANK = {mp.Kind.OK: 0, mp.Kind.UNACKED: 1, mp.Kind.RETRY: 2, mp.Kind.FAILED: 3}
_OUTCOME = {mp.Kind.OK: Outcome.OK, mp.Kind.RETRY: Outcome.RETRY, mp.Kind.FAILED: Outcome.FAILED}


def _worst(a: mp.Verdict, b: mp.Verdict) -> mp.Verdict:
    return b if _RANK[b.kind] > _RANK[a.kind] else a


def _inside(base: bytes, path: bytes) -> bool:
    return path == base or path.startswith(base.rstrip(b"/") + b"/")


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
    a killed agent it removes when made; ``relay_connect`` opens a
    connection to the console) while it takes connections."""

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
        self._root = os.fsencode(os.path.realpath(root))
        self._excludes = makuosan_patterns(
            excludes, self._root
        )  # the agent's patterns, as makuosan reads them
        self._base = os.fsencode(os.path.realpath(target.base or root))
        if not _inside(self._base, self._root):
            raise ConfigError(
                f"target {target.name}: root {root} is not inside the makuosan base {target.base}"
            )
        self._prefix = os.path.relpath(self._root, self._base) if self._root != self._base else b""
        self._member_of = {f"{target.name}/{m}": os.fsencode(m) for m in target.members}
        problem = password_file_problem(target.password_file)
        if problem is not None:
            raise ConfigError(f"target {target.name}: {problem}")
        self._lock = threading.Lock()
        self._absent_since: dict[str, float] = {}  # track -> monotonic time first seen absent
        self._suspects = Suspects(hold_s=suspect_s)
        self._relay: ConsoleRelay | None = None
        self._relay_dir = str(relay_dir) if relay_dir is not None else None
        self._relay_connect = relay_connect
        self._relay_tag = relay_tag(self._root, target.name)
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
            self._settle_dirs(live)
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
        connections (msync_relay), else the configured console."""
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

    def _rel(self, path: bytes) -> bytes:
        return self._prefix + b"/" + path if self._prefix and path else self._prefix or path

    def _item(self, action: Action) -> Item:
        tracks = tuple(sorted(action.tracks)) if action.tracks else self.tracks
        it = Item(action, tracks)
        unknown = [t for t in tracks if t not in self.tracks]
        if unknown:
            self._set(it, unknown, Outcome.FAILED, "not a track of this target")
            it.tracks = tuple(t for t in tracks if t in self.tracks)
        prep = mp.prepare(self._rel(action.path))
        if isinstance(prep, str):
            self._set(it, it.tracks, Outcome.FAILED, prep)
            return it
        why = self._local(it, prep)
        if why is not None:
            self._set(it, it.tracks, why[0], why[1])
        return it

    def _local(self, it: Item, prep: mp.Prepared) -> tuple[Outcome, str] | None:
        """Look at the path now: a delete, a hazard, or what to send."""
        abspath = self._root + b"/" + it.action.path if it.action.path else self._root
        try:
            st = os.lstat(abspath)
        except (FileNotFoundError, NotADirectoryError):
            it.entry, it.token = mp.Entry(prep.echo, delete=True), prep.token
            return None
        except OSError as exc:
            return Outcome.RETRY, f"cannot stat the source: {exc.strerror}"
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return Outcome.OK, ""  # fifo, socket, device: not replicated, never listed to msync
        if stat.S_ISLNK(st.st_mode):
            try:
                target = self._link_target(abspath)
            except OSError as exc:
                return Outcome.RETRY, f"cannot read the link: {exc.strerror}"
            if isinstance(target, str):
                return Outcome.FAILED, target
            if target is not None:
                resend = mp.prepare(target)
                if isinstance(resend, str):
                    return Outcome.FAILED, f"symlink target cannot be re-sent after the link: {resend}"
                it.resend = resend
        it.is_dir = stat.S_ISDIR(st.st_mode)
        it.plain = it.is_dir or stat.S_ISREG(st.st_mode)
        it.biggest = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if not it.is_dir and mp.same_second(st.st_mtime_ns, self._clock()):
            return Outcome.RETRY, "mtime is the current second (a same-second rewrite would be lost)"
        it.entry = mp.Entry(prep.echo, recursive=it.action.recursive and it.is_dir)
        it.token = prep.token
        if it.entry.recursive:
            try:
                self._plan_tree(it, abspath)
            except OSError as exc:
                return Outcome.RETRY, f"cannot read the tree: {exc.strerror}"
        return None

    def _plan_tree(self, it: Item, abspath: bytes) -> None:
        """A tree msync's -r would carry wrongly (msync_parse.scanner_carries)
        goes out as explicit entries, children first, with --delete but no -r;
        so does a tree holding a special file or a mount point, which msync's
        -r would send or cross."""
        sizes: list[int] = []
        below, unlisted = self._walk(it.action.path, it.entry.echo, sizes)
        it.biggest, it.below = max(sizes, default=0), len(below)
        if not unlisted and mp.scanner_carries(it.entry.echo, below):
            return
        it.entry, it.mirror = mp.Entry(it.entry.echo), True
        for rel, _ in below:
            prep = mp.prepare(rel)
            if isinstance(prep, str):
                it.bad = it.bad or f"{rel!r} inside cannot be sent: {prep}"
            else:
                it.more.append(prep)

    def _walk(self, top: bytes, echo: bytes, sizes: list[int]) -> tuple[list[tuple[bytes, bool]], bool]:
        """(base-relative path, is_dir) of everything below the directory
        ``top`` that msync's excludes leave in, children before their
        directory, but no fifo, socket or device (makuosan's -r would send
        those), read by the tree's one walker (no symlink followed, no mount
        point crossed); and whether a special file or a mount point was met.
        The sizes of its regular files go to ``sizes``. A directory it cannot
        read raises: its contents are unknown, not absent."""
        tree = Walk(self._root, _NO_EXCLUDES, root_dev(self._root), top)
        pre: list[tuple[bytes, bool]] = []
        pruned: set[bytes] = set()  # excluded directories: nothing below them is sent
        specials = False
        for listing in tree:
            sub = listing.rel[len(top) :].lstrip(b"/")
            base = join(echo, sub) if sub else echo
            for name, st in zip(listing.names, listing.stats):
                is_dir = stat.S_ISDIR(st.st_mode)
                child = join(base, name)
                if listing.rel in pruned or self._makuosan_skips(child, is_dir):
                    if is_dir:
                        pruned.add(join(listing.rel, name))
                    continue
                if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    specials = True
                    continue
                pre.append((child, is_dir))
                if stat.S_ISREG(st.st_mode):
                    sizes.append(st.st_size)
        if tree.errors:
            raise OSError(errno.EACCES, f"{tree.errors} unreadable entries below")
        return pre[::-1], specials or bool(tree.skipped)

    def _link_target(self, abspath: bytes) -> bytes | str | None:
        """Base-relative final target of a link (re-sent to undo makuosan's chmod
        0777 of it), None when dangling or not a file or directory, or why the
        link cannot be sent."""
        target = os.readlink(abspath)
        lexical = os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(abspath)), target))
        real = os.path.realpath(abspath)
        if not (_inside(self._base, lexical) and _inside(self._base, real)):
            return (
                "symlink target resolves outside the makuosan base; sending it would chmod "
                "that file 0777 on every member"
            )
        if real == self._base:
            return "symlink points at the base itself; sending it would chmod the base 0777 on every member"
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            return None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None  # a fifo, socket or device is never sent
        return os.path.relpath(real, self._base)

    # ------------------------------------------------------------------ shipping
    def _ship_live(self, live: list[Item]) -> None:
        problem = password_file_problem(self._t.password_file)
        if problem is not None:
            for it in live:
                self._set(it, it.tracks, Outcome.FAILED, problem)
            return
        listed, why = self._members()
        if listed is None:
            for it in live:
                self._set(it, it.tracks, Outcome.RETRY, why)
            return
        lanes = self._lanes(live, listed)
        with ThreadPoolExecutor(max_workers=max(1, len(lanes))) as pool:
            list(pool.map(lambda lane: [self._run_job(j, listed) for j in lane], lanes))

    def absent_seconds(self) -> dict[str, float]:
        """Per member track: seconds since it was first seen missing from
        ``msync --members`` (or the list could not be read), 0 when listed
        at the last look. Only a ship looks, so an idle target keeps its
        last answer."""
        now = time.monotonic()
        with self._lock:
            return {
                t: now - self._absent_since[t] if t in self._absent_since else 0.0 for t in self._member_of
            }

    def _settle_dirs(self, live: list[Item]) -> None:
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
                if not stat.S_ISDIR(os.lstat(self._root + b"/" + parent).st_mode):
                    continue
            except OSError:
                continue
            prep = mp.prepare(self._rel(parent))
            if not isinstance(prep, str):
                tokens.append(prep.token)
        for host in self._settle_hosts(live) if tokens else []:
            fitting = [t for t in tokens if mp.fits(t, mp.command_prefix(host=host))]
            for level in settle_levels(fitting, self._t.concurrency):
                with ThreadPoolExecutor(max_workers=len(level)) as pool:
                    stalled = any(pool.map(functools.partial(self._settle, host), level))
                if stalled:
                    log.warning("ship.msync.settle_stalled", target=self.name, host=host)
                    break

    def _settle(self, host: bytes | None, chunk: list[bytes]) -> bool:
        """One silent send of directories; whether it stalled. It prints
        nothing before a prompt, so it pays no delayed ACK on a TCP console
        and goes there directly, unless msync cannot reach the console
        itself (the relay was given its own way there)."""
        argv = mp.build_argv(
            os.fsencode(self._t.msync), excludes=self._excludes, level=0, host=host, tokens=chunk
        )
        direct = self._relay_connect is None and self._via != self._t.console
        via = self._console_named() if direct else self._via
        res = self._exec(argv, idle_limit(self._t.stall_s, 0, 2 * len(chunk)), via=via)
        log.debug("ship.msync.settle_dirs", target=self.name, paths=len(chunk), rc=res.returncode)
        return res.stalled

    def _settle_hosts(self, live: list[Item]) -> list[bytes | None]:
        """[None] (no ``-t``) when every expected member took the plan, else
        each member that did."""
        if not self._member_of:
            return [None]
        took = {r.track for it in live for r in it.results.values() if r.outcome is Outcome.OK}
        hosts = sorted({self._member_of[t] for t in took if t in self._member_of})
        return [None] if len(hosts) == len(set(self._member_of.values())) else list(hosts)

    def _members(self) -> tuple[list[bytes] | None, str]:
        listed, why = self._read_members()
        now = time.monotonic()
        with self._lock:
            for track, member in self._member_of.items():
                if listed is not None and member in listed:
                    self._absent_since.pop(track, None)
                else:
                    self._absent_since.setdefault(track, now)
        return listed, why

    def _read_members(self) -> tuple[list[bytes] | None, str]:
        res = self._exec(mp.build_argv(os.fsencode(self._t.msync), members=True))
        if res.missing:
            return None, f"msync not found: {self._t.msync}"
        if res.timed_out or res.returncode != 0:
            first = (res.stderr or res.stdout).strip().split(b"\n")[0].decode("utf-8", "replace")
            return None, f"msync --members failed (rc {res.returncode}): {first}"
        names = mp.parse_members(res.stdout)
        if names is None:
            return None, "msync --members printed no member list"
        return [n for n in names if n], ""

    def _exec(self, argv: list[bytes], idle: float | None = None, via: str | None = None) -> _exec.ExecResult:
        t = self._t
        console = self._via if via is None else via
        opts = mp.daemon_options(
            os.fsencode(console) if console else None,
            os.fsencode(t.password_file) if t.password_file else None,
        )
        full = [argv[0], *opts, *argv[1:]]
        return _exec.run(full, timeout=t.timeout_s, env=self._env, idle_timeout=idle)

    def _hosts_needed(self, it: Item, listed: list[bytes]) -> list[bytes]:
        """Members this item goes to; tracks of absent members are RETRY."""
        if not self._member_of:
            if not listed:
                self._set(it, it.tracks, Outcome.RETRY, "no makuosan member is listed")
            return listed
        absent = [tr for tr in it.tracks if self._member_of[tr] not in listed]
        if absent:
            self._set(it, absent, Outcome.RETRY, "member absent from msync --members")
        silent = [tr for tr in it.tracks if tr not in absent and self._suspects.active(self._member_of[tr])]
        if silent:
            self._set(it, silent, Outcome.RETRY, "member stopped answering lately; tried again in a minute")
        return [self._member_of[tr] for tr in it.tracks if tr not in absent and tr not in silent]

    def _lanes(self, live: list[Item], listed: list[bytes]) -> list[list[Job]]:
        """Lanes run concurrently, the jobs of a lane strictly in plan order.
        A path and every planned path inside it share a lane (msync_jobs
        lane_roots), so ordering inside a subtree (delete before put,
        parents) is kept for every member, while scattered paths spread over
        the lanes: makuosan has the files of concurrent calls in flight
        together. There are only as many lanes as full batches, up to
        ``concurrency``. Items for a subset of the members (catch-up) go out
        with ``-t``, once per member."""
        everyone = {m for m in self._member_of.values() if m in listed} or set(listed)
        keyed: list[tuple[tuple[bytes, ...] | None, Item]] = []
        for it in live:
            hosts = self._hosts_needed(it, listed)
            if hosts:
                keyed.append((None if set(hosts) == everyone else tuple(sorted(hosts)), it))
        keyed = self._grouped(keyed)
        width = max(1, min(self._t.concurrency, -(-len(keyed) // max(1, self._t.batch))))
        roots = lane_roots([it.entry.echo for _, it in keyed])
        lanes: list[list[tuple[tuple[bytes, ...] | None, Item]]] = [[] for _ in range(width)]
        for (key, it), lane in zip(keyed, lane_of(roots, [size_of(it) for _, it in keyed], width)):
            lanes[lane].append((key, it))
        return [lane_jobs(lane, self._t.batch) for lane in lanes if lane]

    def _grouped(self, keyed: list) -> list:
        """Whole planned directories become one ``-r`` send each (msync_group)."""
        try:
            dev = root_dev(self._root)
        except OSError:
            return keyed
        now = self._clock()
        # makuosan's excluded entries do not count against a bound on the entries
        listdir = lambda rel, most: list_dir(self._root, rel, dev, now, None if self._excludes else most)  # noqa: E731
        return group_items(keyed, listdir, self._rel, self._makuosan_skips)

    def _makuosan_skips(self, echo: bytes, is_dir: bool) -> bool:
        """Does makuosan's own walk skip the base-relative ``echo``?"""
        return bool(self._excludes) and mp.excluded(self._base + b"/" + echo, self._excludes, is_dir)

    # ------------------------------------------------------------------ one invocation
    def _run_job(self, job: Job, listed: list[bytes]) -> None:
        prefix = mp.command_prefix(recursive=job.recursive, delete=job.delete, host=job.host)
        items = []
        for it in job.items:
            if any(not mp.fits(m.token, prefix) for m in it.more):
                it.bad = it.bad or "a path inside is too long for msync"
                it.more = [m for m in it.more if mp.fits(m.token, prefix)]
            too_long = [
                t for t in (it.token, it.resend.token if it.resend else b"") if not mp.fits(t, prefix)
            ]
            if too_long:
                limit = mp.MAX_COMMAND - len(prefix) - 1
                reason = f"escaped path is {len(too_long[0])} bytes; msync carries at most {limit} here"
                self._set(it, self._tracks_for(it, job.host), Outcome.FAILED, reason)
            else:
                items.append(it)
        if items:
            self._invoke(Job(job.host, job.recursive, items, job.delete), listed)

    def _tracks_for(self, it: Item, host: bytes | None) -> list[str]:
        if host is None or not self._member_of:
            return [tr for tr in it.tracks if tr not in it.results]
        return [tr for tr in it.tracks if self._member_of[tr] == host]

    def _invoke(self, job: Job, listed: list[bytes]) -> None:
        sent, main = expand(job)
        hosts = [job.host] if job.host is not None else listed
        tokens = [t for _, _, t in sent if t is not None]
        unowned = frozenset(k for k, (owner, _, _) in enumerate(sent) if owner is None)
        verdicts = self._run(job, tokens, hosts, [e for _, e, _ in sent], dry=False, unowned=unowned)
        own: dict[int, list[int]] = {}
        owners: dict[int, Item] = {}
        for k, (owner, _, _) in enumerate(sent):
            if owner is not None:
                own.setdefault(id(owner), []).append(k)
                owners[id(owner)] = owner
        unacked = []
        for oid, it in owners.items():
            v_of = {h: verdicts[(h, main[oid])] for h in hosts}
            for k in own[oid]:
                if k != main[oid]:
                    v_of = {h: _worst(v, verdicts[(h, k)]) for h, v in v_of.items()}
            if it.bad:
                v_of = {h: _worst(v, mp.Verdict(mp.Kind.FAILED, it.bad)) for h, v in v_of.items()}
            if any(v.kind == mp.Kind.UNACKED for v in v_of.values()):
                unacked.append((it, v_of))
            else:
                self._report(it, job.host, v_of)
        if unacked:
            self._verify_deletes(job, unacked, hosts)

    def _run(
        self,
        job: Job,
        tokens: list[bytes],
        hosts: list[bytes],
        entries: list[mp.Entry],
        *,
        dry: bool,
        unowned: frozenset[int] = frozenset(),
    ) -> dict[tuple[bytes, int], mp.Verdict]:
        """Verdicts of one invocation; files a member skipped get their content
        checked, but for ``unowned`` entries (sent along, no verdict wanted)."""
        argv = mp.build_argv(
            os.fsencode(self._t.msync),
            excludes=self._excludes,
            level=1 if dry else 2,
            recursive=job.recursive,
            delete=job.delete and not dry,
            dry=dry,
            host=job.host,
            tokens=tokens,
        )
        biggest = max((it.biggest for it in job.items), default=0)  # a group's: its largest file
        idle = idle_limit(self._t.stall_s, biggest, sum(it.below for it in job.items))
        res = self._exec(argv, idle)
        log.debug("ship.msync.run", target=self.name, paths=len(tokens), rc=res.returncode, s=res.seconds)
        if res.stalled:
            return self._after_stall(job, tokens, hosts, entries, dry=dry, unowned=unowned)
        if res.missing or res.timed_out:
            why = f"msync not found: {self._t.msync}" if res.missing else "msync timed out"
            return {(h, i): mp.Verdict(mp.Kind.RETRY, why) for h in hosts for i in range(len(entries))}
        if dry:
            return mp.classify_dry_run(res.returncode, res.stdout, res.stderr, hosts, entries)
        verdicts = mp.classify(res.returncode, res.stdout, res.stderr, hosts, entries)
        sent = (res.stdout, res.stderr, hosts, entries)
        check = lambda a: self._exec(a, idle)  # noqa: E731
        return verify_skips(check, os.fsencode(self._t.msync), self._base, job.host, sent, verdicts, unowned)

    def _after_stall(
        self,
        job: Job,
        tokens: list[bytes],
        hosts: list[bytes],
        entries: list[mp.Entry],
        *,
        dry: bool,
        unowned: frozenset[int] = frozenset(),
    ) -> dict[tuple[bytes, int], mp.Verdict]:
        """The call went silent: a member stopped answering and makuosan would
        wait a minute for it. Each member is tried alone, in parallel: who
        answers gets its verdicts now; who stalls alone becomes suspect."""
        named = [h for h in hosts if h] if job.host is None else []
        if len(named) < 2:
            for h in [job.host] if job.host is not None else named:
                self._suspects.mark(h)
            who = b", ".join([job.host] if job.host is not None else named).decode("utf-8", "replace")
            log.warning("ship.msync.stalled", target=self.name, members=who, paths=len(tokens))
            why = mp.Verdict(mp.Kind.RETRY, f"no progress from msync: member {who} stopped answering")
            return {(h, i): why for h in hosts for i in range(len(entries))}
        out = {
            (h, i): mp.Verdict(mp.Kind.RETRY, "member listed without a name")
            for h in hosts
            if not h
            for i in range(len(entries))
        }

        def alone(host: bytes) -> dict[tuple[bytes, int], mp.Verdict]:
            alone = Job(host, job.recursive, job.items, job.delete)
            return self._run(alone, tokens, [host], entries, dry=dry, unowned=unowned)

        with ThreadPoolExecutor(max_workers=len(named)) as pool:
            for part in pool.map(alone, named):
                out.update(part)
        return out

    def _verify_deletes(
        self, job: Job, unacked: list[tuple[Item, dict[bytes, mp.Verdict]]], hosts: list[bytes]
    ) -> None:
        """Members that said nothing about a delete: ask a dry run which still
        have the path, then check they are still listed (a member that left
        would also say nothing)."""
        entries = [it.entry for it, _ in unacked]
        tokens = [it.token for it, _ in unacked]
        dry = self._run(job, tokens, hosts, entries, dry=True)
        still, why = self._members()
        for i, (it, v_of) in enumerate(unacked):
            final = {}
            for h, v in v_of.items():
                if v.kind == mp.Kind.UNACKED:
                    v = dry[(h, i)]
                    if v.kind == mp.Kind.OK and (still is None or h not in still):
                        v = mp.Verdict(mp.Kind.RETRY, "member left while the delete was verified " + why)
                final[h] = v
            self._report(it, job.host, final)

    def _report(self, it: Item, host: bytes | None, v_of: dict[bytes, mp.Verdict]) -> None:
        if self._member_of:
            for tr in self._tracks_for(it, host):
                v = v_of.get(self._member_of[tr], mp.Verdict(mp.Kind.RETRY, "member not sent to"))
                self._set(it, [tr], _OUTCOME.get(v.kind, Outcome.RETRY), v.reason)
            return
        total = mp.Verdict(mp.Kind.OK)
        for v in v_of.values():
            total = _worst(total, v)
        self._set(it, it.tracks, _OUTCOME.get(total.kind, Outcome.RETRY), total.reason)
