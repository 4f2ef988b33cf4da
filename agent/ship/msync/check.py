"""Content check of files members skipped (docs/msync.md §5, §6).

A member skips a file when size, mode and mtime second match, never looking
at content, so a same-size rewrite that kept (or restored) an already shipped
mtime second is lost silently. After a send, the regular files some member
skipped go through one ``msync -v --check``: a member that answers ``NG``
kept older content and the path is FAILED with a reason; any answer that is
not a clean ``OK`` keeps the path pending.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

import structlog

from agent.ship import process as _exec
from agent.ship.msync.carry import Prepared, command_prefix, fits, prepare
from agent.ship.msync.commands import build_argv
from agent.ship.msync.output import Entry, Kind, MemberOutcome, classify_check, skipped

__all__ = ["verify_skips"]

log = structlog.get_logger()
Outcomes = dict[tuple[bytes, int], MemberOutcome]


def _to_check(
    base: bytes,
    skips: dict[bytes, set[tuple[bytes, int]]],
    outcomes: Outcomes,
    host: bytes | None,
    unowned: frozenset[int] = frozenset(),
) -> tuple[list[Prepared], list[set[tuple[bytes, int]]], Outcomes]:
    """Regular files worth a check (only pairs still OK, and not ``unowned``:
    files sent along whose verdict nobody wants), and outcomes for skipped
    pairs that cannot be checked."""
    todo: list[Prepared] = []
    pairs: list[set[tuple[bytes, int]]] = []
    cannot: Outcomes = {}
    prefix = command_prefix(check=True, host=host)
    for path, skippers in sorted(skips.items()):
        open_pairs = {k for k in skippers if outcomes[k].kind == Kind.OK and k[1] not in unowned}
        if not open_pairs:
            continue
        try:
            st = os.lstat(base + b"/" + path)
        except OSError as exc:
            cannot |= dict.fromkeys(open_pairs, _retry(f"cannot stat before the check: {exc.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        prep = prepare(path)
        if isinstance(prep, str) or not fits(prep.token, prefix):
            cannot |= dict.fromkeys(open_pairs, _retry("path too long for msync --check; content unverified"))
            continue
        todo.append(prep)
        pairs.append(open_pairs)
    return todo, pairs, cannot


def _retry(why: str) -> MemberOutcome:
    return MemberOutcome(Kind.RETRY, why)


CHUNK = 500  # paths per check invocation: a recursive send can skip a whole tree


def verify_skips(
    run: Callable[[list[bytes]], _exec.ExecResult],
    msync: bytes,
    base: bytes,
    host: bytes | None,
    sent: tuple[bytes, bytes, Sequence[bytes], Sequence[Entry]],
    outcomes: Outcomes,
    unowned: frozenset[int] = frozenset(),
) -> Outcomes:
    """``outcomes`` of one send, with every skipped regular file checked.
    ``sent`` is (stdout, stderr, hosts, entries) of the send; ``run`` starts
    msync with the target's console options; ``host`` is the send's ``-t``."""
    stdout, stderr, hosts, entries = sent
    skips = skipped(stdout, stderr, hosts, entries)
    todo, pairs, cannot = _to_check(base, skips, outcomes, host, unowned)
    out = {**outcomes, **cannot}
    for start in range(0, len(todo), CHUNK):
        part = todo[start : start + CHUNK]
        checked = _check(run, msync, host, hosts, part)
        for j, open_pairs in enumerate(pairs[start : start + CHUNK]):
            for h, idx in open_pairs:
                v = checked[(h, j)]
                if v.kind != Kind.OK and out[(h, idx)].kind != Kind.FAILED:
                    out[(h, idx)] = v
    return out


def _check(
    run: Callable[[list[bytes]], _exec.ExecResult],
    msync: bytes,
    host: bytes | None,
    hosts: Sequence[bytes],
    todo: list[Prepared],
) -> Outcomes:
    """One ``msync -v --check`` over ``todo``: a verdict per (host, index)."""
    res = run(build_argv(msync, check=True, host=host, tokens=[p.token for p in todo]))
    if res.missing or res.timed_out:
        why = _retry(f"msync not found: {msync!r}" if res.missing else "msync --check timed out")
        return {(h, j): why for h in hosts for j in range(len(todo))}
    echoes = [p.echo for p in todo]
    checked = classify_check(res.returncode, res.stdout, res.stderr, hosts, echoes)
    stale = sum(v.kind == Kind.FAILED for v in checked.values())
    log.debug("ship.msync.check", paths=len(todo), rc=res.returncode, stale=stale)
    return checked
