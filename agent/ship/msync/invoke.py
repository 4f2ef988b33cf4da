"""One msync job, run and read (docs/msync.md §6): the call itself, a
dry run for deletes no member reported, each member alone when a call
stalls, and every item's tracks given the outcome msync's output shows for
their member (the worst over the paths the item sent).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import structlog

from agent.ship import process as _exec
from agent.ship.base import Outcome
from agent.ship.msync.carry import MAX_COMMAND, command_prefix, fits
from agent.ship.msync.check import verify_skips
from agent.ship.msync.commands import build_argv
from agent.ship.msync.jobs import Item, Job, expand
from agent.ship.msync.members import Members
from agent.ship.msync.output import Entry, Kind, MemberOutcome, classify, classify_dry_run
from agent.ship.msync.source import Source
from agent.ship.msync.stall import idle_limit
from agent.ship.targets import MsyncTarget

__all__ = ["Invoker"]

log = structlog.get_logger()
_RANK = {Kind.OK: 0, Kind.UNACKED: 1, Kind.RETRY: 2, Kind.FAILED: 3}
_OUTCOME = {Kind.OK: Outcome.OK, Kind.RETRY: Outcome.RETRY, Kind.FAILED: Outcome.FAILED}
SetResult = Callable[[Item, Sequence[str], Outcome, str], None]


Outcomes = dict[tuple[bytes, int], MemberOutcome]  # (member, entry index) -> outcome


def _worst(a: MemberOutcome, b: MemberOutcome) -> MemberOutcome:
    return b if _RANK[b.kind] > _RANK[a.kind] else a


@dataclass(frozen=True)
class _Call:
    """What one msync call sends (``tokens``, read back as ``entries``) and
    which members answer; ``dry`` for a dry run; ``unowned`` entries are sent
    along with no outcome wanted."""

    tokens: list[bytes]
    hosts: list[bytes]
    entries: list[Entry]
    dry: bool = False
    unowned: frozenset[int] = frozenset()


class Invoker:
    """Runs the jobs of one target: ``run(argv, idle=None)`` starts msync
    with the target's console options; ``set_result`` records outcomes."""

    def __init__(
        self,
        target: MsyncTarget,
        source: Source,
        members: Members,
        run: Callable[..., _exec.ExecResult],
        set_result: SetResult,
    ) -> None:
        self.name = target.name
        self._t = target
        self._source = source
        self._members = members
        self._exec = run
        self._set = set_result

    def run_job(self, job: Job, listed: list[bytes]) -> None:
        """Run ``job`` (``listed``: the members msync --members listed); an
        item naming a path too long for the command is FAILED instead."""
        prefix = command_prefix(recursive=job.recursive, delete=job.delete, host=job.host)
        items = []
        for it in job.items:
            if any(not fits(m.token, prefix) for m in it.more):
                it.bad = it.bad or "a path inside is too long for msync"
                it.more = [m for m in it.more if fits(m.token, prefix)]
            too_long = [t for t in (it.token, it.resend.token if it.resend else b"") if not fits(t, prefix)]
            if too_long:
                limit = MAX_COMMAND - len(prefix) - 1
                reason = f"escaped path is {len(too_long[0])} bytes; msync carries at most {limit} here"
                self._set(it, self._tracks_for(it, job.host), Outcome.FAILED, reason)
            else:
                items.append(it)
        if items:
            self._invoke(Job(job.host, job.recursive, items, job.delete), listed)

    def _tracks_for(self, it: Item, host: bytes | None) -> list[str]:
        if host is None or not self._members.of_track:
            return [tr for tr in it.tracks if tr not in it.results]
        return [tr for tr in it.tracks if self._members.of_track[tr] == host]

    def _invoke(self, job: Job, listed: list[bytes]) -> None:
        sent, main = expand(job)
        hosts = [job.host] if job.host is not None else listed
        tokens = [t for _, _, t in sent if t is not None]
        unowned = frozenset(k for k, (owner, _, _) in enumerate(sent) if owner is None)
        outcomes = self._run(job, _Call(tokens, hosts, [e for _, e, _ in sent], unowned=unowned))
        own: dict[int, list[int]] = {}
        owners: dict[int, Item] = {}
        for k, (owner, _, _) in enumerate(sent):
            if owner is not None:
                own.setdefault(id(owner), []).append(k)
                owners[id(owner)] = owner
        unacked = []
        for oid, it in owners.items():
            v_of = {h: outcomes[(h, main[oid])] for h in hosts}
            for k in own[oid]:
                if k != main[oid]:
                    v_of = {h: _worst(v, outcomes[(h, k)]) for h, v in v_of.items()}
            if it.bad:
                v_of = {h: _worst(v, MemberOutcome(Kind.FAILED, it.bad)) for h, v in v_of.items()}
            if any(v.kind == Kind.UNACKED for v in v_of.values()):
                unacked.append((it, v_of))
            else:
                self._report(it, job.host, v_of)
        if unacked:
            self._verify_deletes(job, unacked, hosts)

    def _run(self, job: Job, call: _Call) -> Outcomes:
        """Outcomes of one invocation; files a member skipped get their content
        checked, but for ``unowned`` entries."""
        tokens, hosts, entries, dry = call.tokens, call.hosts, call.entries, call.dry
        argv = build_argv(
            os.fsencode(self._t.msync),
            excludes=self._source.excludes,
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
            return self._after_stall(job, call)
        if res.missing or res.timed_out:
            why = f"msync not found: {self._t.msync}" if res.missing else "msync timed out"
            return {(h, i): MemberOutcome(Kind.RETRY, why) for h in hosts for i in range(len(entries))}
        if dry:
            return classify_dry_run(res.returncode, res.stdout, res.stderr, hosts, entries)
        outcomes = classify(res.returncode, res.stdout, res.stderr, hosts, entries)
        sent = (res.stdout, res.stderr, hosts, entries)
        check = lambda a: self._exec(a, idle)  # noqa: E731
        msync, base = os.fsencode(self._t.msync), self._source.base
        return verify_skips(check, msync, base, job.host, sent, outcomes, call.unowned)

    def _after_stall(self, job: Job, call: _Call) -> Outcomes:
        """The call went silent: a member stopped answering and makuosan would
        wait a minute for it. Each member is tried alone, in parallel: who
        answers gets its outcomes now; who stalls alone becomes suspect."""
        hosts, count = call.hosts, len(call.entries)
        named = [h for h in hosts if h] if job.host is None else []
        if len(named) < 2:
            for h in [job.host] if job.host is not None else named:
                self._members.suspects.mark(h)
            who = b", ".join([job.host] if job.host is not None else named).decode("utf-8", "replace")
            log.warning("ship.msync.stalled", target=self.name, members=who, paths=len(call.tokens))
            why = MemberOutcome(Kind.RETRY, f"no progress from msync: member {who} stopped answering")
            return {(h, i): why for h in hosts for i in range(count)}
        out = {
            (h, i): MemberOutcome(Kind.RETRY, "member listed without a name")
            for h in hosts
            if not h
            for i in range(count)
        }

        def alone(host: bytes) -> Outcomes:
            return self._run(Job(host, job.recursive, job.items, job.delete), replace(call, hosts=[host]))

        with ThreadPoolExecutor(max_workers=len(named)) as pool:
            for part in pool.map(alone, named):
                out.update(part)
        return out

    def _verify_deletes(
        self, job: Job, unacked: list[tuple[Item, dict[bytes, MemberOutcome]]], hosts: list[bytes]
    ) -> None:
        """Members that said nothing about a delete: ask a dry run which still
        have the path, then check they are still listed (a member that left
        would also say nothing)."""
        entries = [it.entry for it, _ in unacked]
        tokens = [it.token for it, _ in unacked]
        dry = self._run(job, _Call(tokens, hosts, entries, dry=True))
        still, why = self._members.look(self._exec, self._t.msync)
        for i, (it, v_of) in enumerate(unacked):
            final = {}
            for h, v in v_of.items():
                if v.kind == Kind.UNACKED:
                    v = dry[(h, i)]
                    if v.kind == Kind.OK and (still is None or h not in still):
                        v = MemberOutcome(Kind.RETRY, "member left while the delete was verified " + why)
                final[h] = v
            self._report(it, job.host, final)

    def _report(self, it: Item, host: bytes | None, v_of: dict[bytes, MemberOutcome]) -> None:
        if self._members.of_track:
            for tr in self._tracks_for(it, host):
                v = v_of.get(self._members.of_track[tr], MemberOutcome(Kind.RETRY, "member not sent to"))
                self._set(it, [tr], _OUTCOME.get(v.kind, Outcome.RETRY), v.reason)
            return
        total = MemberOutcome(Kind.OK)
        for v in v_of.values():
            total = _worst(total, v)
        self._set(it, it.tracks, _OUTCOME.get(total.kind, Outcome.RETRY), total.reason)
