"""What msync prints, read (docs/msync.md §6, §7): the member list, the
per-member answers of a send or a dry run, the files members skipped, and
the answers of ``--check``. Each (member, path) gets a :class:`MemberOutcome`;
a line not understood never yields OK. Pure: no file system, no process.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Entry",
    "Kind",
    "MemberOutcome",
    "Parsed",
    "parse_members",
    "parse_output",
    "classify",
    "classify_dry_run",
    "skipped",
    "classify_check",
    "STALE_REASON",
]

# strerror texts a member reports that will not go away by retrying (§5, §6).
_PERMANENT_MEMBER_ERRORS = {
    b"File name too long": "name component too long for the member (makuosan temp suffix)",
    b"File exists": "member has a non-directory where a directory must go; msync cannot replace it, "
    "remove it on the member by hand",
}
_ACK = re.compile(rb"^(update|skip  |delete) ([^: ]*):(.*)\Z", re.S)
_DRY = re.compile(rb"^\(dryrun\) (update|delete|skip  ) ([^: ]*):(.*)\Z", re.S)
_TIMEOUT = b"error: receive time out: "
_MISSING = b"error: No such file or directory "


def parse_members(stdout: bytes) -> list[bytes] | None:
    """Names from ``msync --members`` (``NAME IP (VerN)`` lines, then
    ``Total: N members``); an empty name is kept as b"". None if malformed."""
    names: list[bytes] = []
    total = None
    for line in stdout.splitlines():
        if line.startswith(b"Total:"):
            total = line
            continue
        words = line.split()
        if not words:
            continue
        names.append(words[0] if len(words) >= 3 else b"")
    return names if total is not None else None


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of an invocation: ``delete`` when it is missing locally (a
    member that never had it says nothing); ``recursive`` for ``-r``."""

    echo: bytes
    delete: bool = False
    recursive: bool = False


class Kind(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    FAILED = "failed"
    UNACKED = "unacked"  # a delete no member reported: verify with a dry run


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """What msync's output says of one (member, path)."""

    kind: Kind
    reason: str = ""


@dataclass
class Parsed:
    acks: Counter = field(default_factory=Counter)  # (host, echo) -> count
    skips: set[tuple[bytes, bytes]] = field(default_factory=set)  # (host, echo) members left alone
    dry: set[tuple[bytes, bytes]] = field(default_factory=set)  # (host, echo) a dry run would touch
    member_errors: dict[tuple[bytes, int], MemberOutcome] = field(default_factory=dict)
    path_errors: dict[int, MemberOutcome] = field(default_factory=dict)
    timeouts: dict[bytes, int] = field(default_factory=dict)  # host -> first entry index it missed
    absent: set[bytes] = field(default_factory=set)  # "HOST is not contained in members"
    fatal: list[bytes] = field(default_factory=list)  # lines that cannot be attributed


def _norm(p: bytes) -> bytes:
    while p.startswith(b"./"):
        p = p[2:]
    return p


class _Lookup:
    """Which entry a reported path belongs to: the first entry naming it
    exactly, else the first recursive entry it lies inside. Built once per
    output, so a recursive send of thousands of planned paths is read in
    linear time."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = entries
        self.exact: dict[bytes, int] = {}
        self.tree: dict[bytes, int] = {}
        for i, e in enumerate(entries):
            self.exact.setdefault(e.echo, i)
            if e.recursive:
                self.tree.setdefault(e.echo, i)

    def __call__(self, path: bytes) -> int | None:
        path = _norm(path)
        if path in self.exact:
            return self.exact[path]
        best = None
        while self.tree and b"/" in path:
            path = path.rpartition(b"/")[0]
            i = self.tree.get(path)
            if i is not None and (best is None or i < best):
                best = i
        return best


def _index(entries: Sequence[Entry] | _Lookup, path: bytes) -> int | None:
    """Entry a reported path belongs to (itself, or inside a recursive entry)."""
    return (entries if isinstance(entries, _Lookup) else _Lookup(entries))(path)


def _host_path(rest: bytes, hosts: Sequence[bytes], entries: _Lookup) -> tuple[bytes, int] | None:
    """Find ``HOST:P`` at the end of ``rest`` for a known host and entry."""
    for host in hosts:
        marker = host + b":"
        pos = rest.find(marker)
        while pos >= 0:
            if pos == 0 or rest[pos - 1 : pos] == b" ":
                idx = _index(entries, rest[pos + len(marker) :])
                if idx is not None:
                    return host, idx
            pos = rest.find(marker, pos + 1)
    return None


def _member_failure(line: bytes) -> MemberOutcome:
    for text, why in _PERMANENT_MEMBER_ERRORS.items():
        if text in line:
            return MemberOutcome(Kind.FAILED, why)
    return MemberOutcome(Kind.RETRY, "member reported: " + line.decode("utf-8", "replace"))


def _parse_timeout(line: bytes, state: dict, entries: _Lookup, p: Parsed) -> None:
    """``receive time out: CMDLINE`` names one command, then ``IP(HOST)`` the
    dropped member. The daemon pipelines several files, so paths before the
    named one may have been acknowledged (``update``) and still be in flight;
    only one command is named. The host therefore missed the whole invocation."""
    rest = line[len(_TIMEOUT) :]
    if rest.endswith(b")") and b"(" in rest:
        p.timeouts[rest[rest.rfind(b"(") + 1 : -1]] = 0


def _parse_line(line: bytes, hosts: Sequence[bytes], entries: _Lookup, p: Parsed, st: dict) -> None:
    if not line or line == b"alive":
        return
    if m := _ACK.match(line):
        p.acks[(m.group(2), _norm(m.group(3)))] += 1
        if m.group(1) == b"skip  ":
            p.skips.add((m.group(2), _norm(m.group(3))))
    elif m := _DRY.match(line):
        if m.group(1) != b"skip  ":
            p.dry.add((m.group(2), _norm(m.group(3))))
    elif line.startswith(_TIMEOUT):
        _parse_timeout(line, st, entries, p)
    elif (
        line.endswith(b" is not contained in members")
        and line[: -len(b" is not contained in members")] in hosts
    ):
        p.absent.add(line[: -len(b" is not contained in members")])
    elif line.startswith(_MISSING) and (idx := _index(entries, line[len(_MISSING) :])) is not None:
        if not entries.entries[idx].delete:
            p.path_errors[idx] = MemberOutcome(Kind.RETRY, "path vanished while msync ran")
    elif line.startswith((b"error:", b"delete error")) and (hit := _host_path(line, hosts, entries)):
        p.member_errors.setdefault(hit, _member_failure(line))
    elif line.startswith(b"skip: ") and (idx := _index(entries, line.rsplit(b" ", 1)[-1])) is not None:
        p.path_errors[idx] = MemberOutcome(
            Kind.FAILED, "makuosan refuses it: " + line.decode("utf-8", "replace")
        )
    else:
        p.fatal.append(line)


def parse_output(stdout: bytes, stderr: bytes, hosts: Sequence[bytes], entries: Sequence[Entry]) -> Parsed:
    """Read every line msync printed; anything not understood is ``fatal``.
    A member listed without a name (§7) reports as ``:P``; its lines are
    attributed to host b"" so they do not count as unexplained."""
    p = Parsed()
    state: dict = {}
    known = [*hosts, b""]
    lookup = _Lookup(entries)
    for stream in (stdout, stderr):
        for line in stream.split(b"\n"):
            _parse_line(line.rstrip(b"\r"), known, lookup, p, state)
    return p


def classify(
    rc: int, stdout: bytes, stderr: bytes, hosts: Sequence[bytes], entries: Sequence[Entry]
) -> dict[tuple[bytes, int], MemberOutcome]:
    """A verdict for every (host, entry index) of one invocation (§6)."""
    if rc != 0:
        first = (stderr or stdout).strip().split(b"\n")[0].decode("utf-8", "replace")
        return {
            (h, i): MemberOutcome(Kind.RETRY, f"msync exited {rc}: {first}")
            for h in hosts
            for i in range(len(entries))
        }
    p = parse_output(stdout, stderr, hosts, entries)
    need = Counter(e.echo for e in entries)
    out = {}
    for h in hosts:
        for i, e in enumerate(entries):
            out[(h, i)] = _outcome(p, h, i, e, need[e.echo])
    return out


def _outcome(p: Parsed, host: bytes, i: int, e: Entry, need: int) -> MemberOutcome:
    name = host.decode("utf-8", "replace")
    if p.fatal:
        return MemberOutcome(Kind.RETRY, "unexpected msync output: " + p.fatal[0].decode("utf-8", "replace"))
    if host in p.absent:
        return MemberOutcome(Kind.RETRY, f"{name} is not contained in members")
    if host in p.timeouts and i >= p.timeouts[host]:
        return MemberOutcome(Kind.RETRY, f"receive time out from {name}: it missed this and later paths")
    if (host, i) in p.member_errors:
        return p.member_errors[(host, i)]
    if i in p.path_errors:
        return p.path_errors[i]
    if p.acks[(host, e.echo)] >= need:
        return MemberOutcome(Kind.OK)
    if e.delete:
        return MemberOutcome(Kind.UNACKED)
    return MemberOutcome(Kind.RETRY, f"no acknowledgement from {name}")


def classify_dry_run(
    rc: int, stdout: bytes, stderr: bytes, hosts: Sequence[bytes], entries: Sequence[Entry]
) -> dict[tuple[bytes, int], MemberOutcome]:
    """Verdicts from ``msync -n -v --sync P...`` over locally missing paths:
    it lists exactly the members that still have P (§4), so a listed member
    is RETRY and an unlisted, answering member is OK."""
    if rc != 0:
        return classify(rc, stdout, stderr, hosts, entries)
    p = parse_output(stdout, stderr, hosts, entries)
    out = {}
    for h in hosts:
        for i, e in enumerate(entries):
            v = _outcome(p, h, i, e, 1 << 30)
            if v.kind == Kind.UNACKED:
                v = MemberOutcome(Kind.OK)
            if v.kind == Kind.OK and (h, e.echo) in p.dry:
                v = MemberOutcome(
                    Kind.RETRY, f"delete not done: {h.decode('utf-8', 'replace')} still has the path"
                )
            out[(h, i)] = v
    return out


def skipped(
    stdout: bytes, stderr: bytes, hosts: Sequence[bytes], entries: Sequence[Entry]
) -> dict[bytes, set[tuple[bytes, int]]]:
    """Paths members answered ``skip`` for: base-relative path -> {(host,
    entry index)}. A skip means only that size, mode and mtime second matched
    (§5), so the content may still differ."""
    out: dict[bytes, set[tuple[bytes, int]]] = {}
    lookup = _Lookup(entries)
    for host, path in parse_output(stdout, stderr, hosts, entries).skips:
        idx = lookup(path)
        if host in hosts and idx is not None:
            out.setdefault(path, set()).add((host, idx))
    return out


STALE_REASON = (
    "member kept older content with the same size and mtime second (msync compares only size "
    "and mtime); change the file's mtime (e.g. touch it) to re-send"
)
_CHECK_RANK = {Kind.OK: 0, Kind.RETRY: 1, Kind.FAILED: 2}
# What ``msync -v --check P...`` prints (§6): (stream, pattern, verdict). A
# pattern with two groups names (host, path), with one group the path for
# every host. The first row whose host and path are known wins.
_CHECK_LINES: tuple[tuple[str, re.Pattern[bytes], MemberOutcome], ...] = (
    ("out", re.compile(rb"^([^: ]*): NG (.*)\Z", re.S), MemberOutcome(Kind.FAILED, STALE_REASON)),
    ("out", re.compile(rb"^([^: ]*): OK (.*)\Z", re.S), MemberOutcome(Kind.OK)),
    (
        "err",
        re.compile(rb"^error: No such file or directory ([^: ]*):(.*)\Z", re.S),
        MemberOutcome(Kind.RETRY, "member has no such file although it skipped the send"),
    ),
    (
        "err",
        re.compile(rb"^error: No such file or directory (.*)\Z", re.S),
        MemberOutcome(Kind.RETRY, "path vanished before its content was checked"),
    ),
)


def _check_line(
    stream: str, line: bytes, hosts: Sequence[bytes], paths: Sequence[bytes]
) -> list[tuple[tuple[bytes, int], MemberOutcome]] | None:
    """(host, path index) verdicts one check line gives, or None if not understood."""
    for where, pattern, verdict in _CHECK_LINES:
        m = pattern.match(line) if where == stream else None
        if m is None:
            continue
        path = _norm(m.group(m.lastindex))
        named = [m.group(1)] if m.lastindex == 2 else list(hosts)
        if path in paths and all(h in hosts for h in named):
            return [((h, paths.index(path)), verdict) for h in named]
    return None


def classify_check(
    rc: int, stdout: bytes, stderr: bytes, hosts: Sequence[bytes], paths: Sequence[bytes]
) -> dict[tuple[bytes, int], MemberOutcome]:
    """A verdict for every (host, path index) of one ``msync -v --check``:
    ``NG`` is FAILED, ``OK`` is OK; anything else, a missing answer or a line
    not understood is RETRY, never OK on doubt."""
    if rc != 0:
        first = (stderr or stdout).strip().split(b"\n")[0].decode("utf-8", "replace")
        why = MemberOutcome(Kind.RETRY, f"msync --check exited {rc}: {first}")
        return {(h, i): why for h in hosts for i in range(len(paths))}
    seen: dict[tuple[bytes, int], MemberOutcome] = {}
    fatal = b""
    for stream, text in (("out", stdout), ("err", stderr)):
        for line in text.split(b"\n"):
            line = line.rstrip(b"\r")
            if not line or line == b"alive":
                continue
            hits = _check_line(stream, line, [*hosts, b""], paths)
            if hits is None:
                fatal = fatal or line
            for key, v in hits or ():
                if key not in seen or _CHECK_RANK[v.kind] > _CHECK_RANK[seen[key].kind]:
                    seen[key] = v
    out = {}
    for h in hosts:
        name = h.decode("utf-8", "replace")
        for i in range(len(paths)):
            if fatal:
                out[(h, i)] = MemberOutcome(
                    Kind.RETRY, "unexpected msync --check output: " + fatal.decode("utf-8", "replace")
                )
            else:
                out[(h, i)] = seen.get((h, i), MemberOutcome(Kind.RETRY, f"no --check answer from {name}"))
    return out
