"""Pure parts of the msync shipper: what msync can carry (carry.py), its argv
(commands.py) and the reading of its output (output.py); docs/msync.md §3, §6."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.ship.actions import Action, ActionKind
from agent.ship.msync.carry import carry_problem, command_prefix, escape, fits, same_second, scanner_carries
from agent.ship.msync.commands import build_argv
from agent.ship.msync.filters import excluded
from agent.ship.msync.jobs import Item, lane_jobs
from agent.ship.msync.output import (
    STALE_REASON,
    Entry,
    Kind,
    classify,
    classify_check,
    classify_dry_run,
    parse_members,
    parse_output,
    skipped,
)
from tests.doubles.double_daemon import getopt, tokenize

_names = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"/" not in b and b"\n" not in b and b"\r" not in b and b not in (b".", b"..")
)
_paths = st.lists(_names, min_size=1, max_size=4).map(b"/".join).filter(lambda p: not p.endswith(b" "))


@given(_paths)
def test_escaped_path_tokenises_back_to_the_original(rel: bytes) -> None:
    """An escaped path read the daemon's way (strtok, backslash joins, getopt) names the original."""
    if carry_problem(rel) is not None:
        return
    token = escape(rel)
    tokens = tokenize(b"sync -t mk2 " + token)
    opts, operands, bad = getopt(tokens[1:], b"rnt:g:")
    assert bad is None and opts == {b"t": b"mk2"}
    expect = b"./" + rel if rel.startswith(b"-") else rel
    assert operands[-1] == expect


@pytest.mark.parametrize(
    ("rel", "fragment"),
    [
        (b"", "empty"),
        (b"/etc/passwd", "absolute"),
        (b"a/../b", ".."),
        (b"x\ny", "newline"),
        (b"cr\rname", "carriage return"),
        (b"trail ", "ends with a space"),
        (b"a//b", "normalised"),
        (b"d/" + b"c" * 241, "241 bytes"),
    ],
)
def test_carry_problems(rel: bytes, fragment: str) -> None:
    """Paths msync cannot carry are refused with a precise reason (§3, §10.1)."""
    problem = carry_problem(rel)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "rel", [b"a b", b"-rf", b"--delete", b"$(touch pwned)", b"\xff\xfe", b"c" * 240, b"x\\"]
)
def test_carriable_paths(rel: bytes) -> None:
    """Spaces, leading dashes, shell syntax, non-UTF-8 bytes and 240-byte names are carried (§3)."""
    assert carry_problem(rel) is None


def test_escape_examples() -> None:
    """Leading '-' gets './', spaces become backslash-space (§3)."""
    assert escape(b"-dash.txt") == b"./-dash.txt"
    assert escape(b"n/-dash.txt") == b"n/-dash.txt"
    assert escape(b"two  spaces") == b"two\\ \\ spaces"


def test_length_limits() -> None:
    """ "<cmd> PATH" fits 254 bytes: 249 for sync, 246 with -r, 242 with -t mk2 (§3)."""
    for prefix, limit in [
        (command_prefix(), 249),
        (command_prefix(recursive=True), 246),
        (command_prefix(recursive=True, delete=True), 245),
        (command_prefix(host=b"mk2"), 242),
    ]:
        assert fits(b"a" * limit, prefix) and not fits(b"a" * (limit + 1), prefix)


def test_build_argv_puts_paths_after_double_dash() -> None:
    """argv only: options first, then ``--`` and the tokens (§10)."""
    argv = build_argv(b"msync", host=b"mk3", excludes=[b"*.swp"], tokens=[b"./-r", b"a\\ b"])
    assert argv == [
        b"msync",
        b"-l",
        b"2",
        b"--sync",
        b"-t",
        b"mk3",
        b"--exclude=*.swp",
        b"--",
        b"./-r",
        b"a\\ b",
    ]


def test_parse_members() -> None:
    """--members lines NAME IP (VerX) then Total; an empty name is kept empty (§6, §7)."""
    out = b"mk2 10.77.0.2 (Ver7)\n    10.77.0.3 (Ver7)\nTotal: 2 members\n"
    assert parse_members(out) == [b"mk2", b""]
    assert parse_members(b"") is None


_E = [Entry(b"a"), Entry(b"b"), Entry(b"c")]
_H = [b"mk2", b"mk3"]


def _kinds(v: dict) -> dict:
    return {(h.decode(), i): x.kind.value for (h, i), x in v.items()}


def test_classify_acks_and_silence() -> None:
    """OK needs the host's ack line; a silent host is RETRY (§6 silent failures)."""
    out = b"update mk2:a\nskip   mk2:b\nupdate mk2:c\nupdate mk3:a\n"
    v = _kinds(classify(0, out, b"", _H, _E))
    assert v == {("mk2", 0): "ok", ("mk2", 1): "ok", ("mk2", 2): "ok", ("mk3", 0): "ok",
                 ("mk3", 1): "retry", ("mk3", 2): "retry"}  # fmt: skip


def test_classify_timeout_mid_batch() -> None:
    """After receive time out the host may have missed any path of the invocation: the
    daemon pipelines files, an acknowledged one may still have been in flight."""
    out = b"update mk2:a\nupdate mk3:a\nupdate mk2:b\nupdate mk3:b\nupdate mk2:c\n"
    err = b"error: receive time out: send b\nerror: receive time out: 10.77.0.3(mk3)\n"
    v = _kinds(classify(0, out, err, _H, _E))
    assert [v[("mk3", i)] for i in range(3)] == ["retry", "retry", "retry"]
    assert all(v[("mk2", i)] == "ok" for i in range(3))


def test_classify_member_errors() -> None:
    """error: STRERROR HOST:P: permanent for name-too-long and File exists, else RETRY (§5, §6)."""
    out = b"update mk2:a\nupdate mk3:a\nupdate mk2:b\nupdate mk3:b\nupdate mk2:c\nupdate mk3:c\n"
    err = b"error: File name too long mk2:a\nerror: close error mk3:b\nerror: File exists mk2:c\n"
    v = classify(0, out, err, _H, _E)
    assert v[(b"mk2", 0)].kind == Kind.FAILED and "too long" in v[(b"mk2", 0)].reason
    assert v[(b"mk3", 1)].kind == Kind.RETRY
    assert v[(b"mk2", 2)].kind == Kind.FAILED and "by hand" in v[(b"mk2", 2)].reason
    assert v[(b"mk3", 0)].kind == Kind.OK


@pytest.mark.parametrize(
    ("rc", "out", "err"),
    [
        (1, b"", b"can't connect tcp:127.0.0.1:5000\n"),
        (1, b"", b"error: command too long\n"),
        (0, b"invalid option -- d\n", b""),
        (0, b"[error] Log lost: 3 lines\n", b""),
        (0, b"recursive process active now!\n", b""),
    ],
)
def test_classify_failures_retry_everything(rc: int, out: bytes, err: bytes) -> None:
    """rc != 0, or a line that cannot be attributed, makes the whole invocation RETRY (§6)."""
    acks = b"".join(b"update %s:%s\n" % (h, e.echo) for h in _H for e in _E)
    v = classify(rc, acks + out, err, _H, _E)
    assert {x.kind for x in v.values()} == {Kind.RETRY}


def test_classify_deletes_and_not_contained() -> None:
    """A delete no member reports is UNACKED (verify it); -t to an unlisted host is RETRY (§4, §6)."""
    entries = [Entry(b"gone", delete=True)]
    v = classify(0, b"delete mk2:gone\n", b"", _H, entries)
    assert (v[(b"mk2", 0)].kind, v[(b"mk3", 0)].kind) == (Kind.OK, Kind.UNACKED)
    v = classify(0, b"mk3 is not contained in members\n", b"", [b"mk3"], entries)
    assert v[(b"mk3", 0)].kind == Kind.RETRY
    dry = classify_dry_run(0, b"(dryrun) delete mk3:gone\n", b"", _H, entries)
    assert (dry[(b"mk2", 0)].kind, dry[(b"mk3", 0)].kind) == (Kind.OK, Kind.RETRY)


def test_classify_dot_slash_and_recursive_children() -> None:
    """Acks may echo a ./ prefix; errors under a -r path count against it."""
    v = classify(0, b"update mk2:./-rf\n", b"", [b"mk2"], [Entry(b"-rf")])
    assert v[(b"mk2", 0)].kind == Kind.OK
    entries = [Entry(b"d", recursive=True)]
    v = classify(0, b"update mk2:d/x\nupdate mk2:d\n", b"error: close error mk2:d/x\n", [b"mk2"], entries)
    assert v[(b"mk2", 0)].kind == Kind.RETRY


@pytest.mark.parametrize(
    ("mtime", "now", "held"),
    [
        (100.2, 100.9, True),  # same second
        (100.99, 101.01, True),  # new second, but the coarse clock may still say 100
        (100.5, 101.2, False),
        (99.0, 101.0, False),
        (500.0, 101.0, False),  # future mtime: not held back forever
    ],
)
def test_same_second(mtime: float, now: float, held: bool) -> None:
    """Files are held back while a rewrite could share their mtime second (§5 hazard)."""
    assert same_second(int(mtime * 1e9), now) is held


@given(st.integers(min_value=0, max_value=2**40), st.floats(min_value=0.06, max_value=10.0))
def test_same_second_never_holds_an_older_second(mtime_ns: int, later: float) -> None:
    """Once the clock is past the mtime's second (plus slack), the file ships."""
    next_second = (mtime_ns // 1_000_000_000) + 1
    assert not same_second(mtime_ns, next_second + later)


def test_nameless_member_lines_are_not_fatal() -> None:
    """Lines of a member listed without a name (``update :P``, errors) leave the others' verdicts alone."""
    out = b"update mk2:a\nupdate :a\n"
    v = classify(0, out, b"error: close error :a\n", [b"mk2"], [Entry(b"a")])
    assert v[(b"mk2", 0)].kind == Kind.OK


def test_delete_error_is_a_failure_not_an_ack() -> None:
    """``delete error (...) HOST:P`` (stdout, §6) under a --delete -r path is RETRY for that host."""
    entries = [Entry(b"d", recursive=True)]
    out = b"delete error (Operation not permitted) mk3:d/x\nskip   mk2:d\nskip   mk3:d\n"
    v = classify(0, out, b"", _H, entries)
    assert (v[(b"mk2", 0)].kind, v[(b"mk3", 0)].kind) == (Kind.OK, Kind.RETRY)


def _item(path: bytes, *, is_dir: bool = False, recursive: bool = False) -> Item:
    it = Item(Action(ActionKind.PUT, path), ("c/mk2",), is_dir=is_dir)
    it.entry = Entry(path, recursive=recursive)
    return it


def test_lane_jobs_keep_plan_order_per_member() -> None:
    """Segments by member set in plan order; a subset segment runs once per member with -t;
    recursive items get their own jobs; directories go after files in a plain job."""
    a, b, c = _item(b"a"), _item(b"b", is_dir=True), _item(b"b/c")
    r, d = _item(b"r", recursive=True), _item(b"d")
    lane = [(None, a), (None, b), (None, c), (None, r), ((b"mk3",), d), (None, a)]
    jobs = lane_jobs(lane, batch=10)
    shape = [(j.host, j.recursive, [it.entry.echo for it in j.items]) for j in jobs]
    assert shape == [
        (None, False, [b"a", b"b/c", b"b"]),
        (None, True, [b"r"]),
        (b"mk3", False, [b"d"]),
        (None, False, [b"a"]),
    ]
    two = lane_jobs([((b"mk2", b"mk3"), a), ((b"mk2", b"mk3"), c)], batch=1)
    assert [(j.host, [it.entry.echo for it in j.items]) for j in two] == [
        (b"mk2", [b"a"]), (b"mk2", [b"b/c"]), (b"mk3", [b"a"]), (b"mk3", [b"b/c"])
    ]  # fmt: skip


@given(
    st.lists(st.tuples(st.sampled_from(_H), st.integers(0, 2), st.booleans()), max_size=12),
    st.integers(0, 2),
)
def test_classify_ok_exactly_when_acked(acks: list, rc: int) -> None:
    """OK for (host, path) iff rc is 0 and that host's ack line for that path was printed;
    every (host, path) of the invocation gets a verdict."""
    kinds = [b"update ", b"skip   "]
    out = b"".join(kinds[k] + h + b":" + _E[i].echo + b"\n" for h, i, k in acks)
    v = classify(rc, out, b"", _H, _E)
    assert set(v) == {(h, i) for h in _H for i in range(len(_E))}
    acked = {(h, i) for h, i, _ in acks}
    for key, verdict in v.items():
        assert (verdict.kind == Kind.OK) == (rc == 0 and key in acked)


@pytest.mark.parametrize(
    ("root", "entries", "ok"),
    [
        (b"d", [(b"d/a b", False), (b"d/sub", True), (b"d/sub/x", False)], True),
        (b"d", [(b"d/sp dir", True)], False),  # never entered by the scanner
        (b"sp d", [(b"sp d/x", False)], False),  # root re-split by the daemon
        (b"d", [(b"d/nl\nx", False)], False),
        (b"d", [(b"d/cr\rx", False)], False),
        (b"d", [(b"d/trail ", False)], False),
        (b"d", [], True),
    ],
)
def test_scanner_carries(root: bytes, entries: list[tuple[bytes, bool]], ok: bool) -> None:
    assert scanner_carries(root, entries) is ok


@pytest.mark.parametrize(
    ("rel", "pats", "is_dir", "hit"),
    [
        (b"/srv/a/b/x.tmp", [b"*.tmp"], False, True),
        (b"/srv/a/b/x.tmp", [b"b/*.tmp"], False, True),
        (b"/srv/a/b/x.tmp", [b"a/*.tmp"], False, False),  # * never crosses /
        (b"/srv/a/cache", [b"cache/"], True, True),
        (b"/srv/a/cache", [b"cache/"], False, False),
        (b"/srv/a/keep", [b"*.tmp"], False, False),
        (b"/srv/a/b", [b"/srv/a/b"], False, True),  # an absolute pattern: anchored
        (b"/srv/z/a/b", [b"/srv/a/b"], False, False),
        (b"/srv/d/1.log", [b"[0-9]*.log"], False, False),  # a tail shorter than the pattern: given up
        (b"/srv/d/12345678.log", [b"[0-9]*.log"], False, True),
        (b"/srv/we*b/x", [b"/srv/we\\*b/x"], False, False),  # quoted, but longer than the path: given up
        (b"/srv/we*b/x", [b"/srv/we?b/x"], False, True),
    ],
)
def test_excluded_like_makuosan(rel: bytes, pats: list[bytes], is_dir: bool, hit: bool) -> None:
    assert excluded(rel, pats, is_dir) is hit


def test_dry_run_skip_lines_are_understood() -> None:
    """At -l 2 a dry run prints ``(dryrun) skip   HOST:P``; it is neither fatal nor a pending change."""
    entries = [Entry(b"f")]
    p = parse_output(b"(dryrun) skip   mk2:f\n", b"", [b"mk2"], entries)
    assert not p.fatal and not p.dry


def test_skipped_names_only_skip_acks() -> None:
    """``skip   HOST:P`` (and children of a recursive entry) are reported; updates are not."""
    entries = [Entry(b"a"), Entry(b"d", recursive=True), Entry(b"-x")]
    out = b"update mk2:a\nskip   mk3:a\nskip   mk2:d/c\nskip   mk2:./-x\nskip   mk9:a\n"
    assert skipped(out, b"", [b"mk2", b"mk3"], entries) == {
        b"a": {(b"mk3", 0)},
        b"d/c": {(b"mk2", 1)},
        b"-x": {(b"mk2", 2)},
    }


def test_build_argv_for_check() -> None:
    """A check runs at -v with the send's console options and -t; paths after ``--``."""
    argv = build_argv(b"msync", console=b"unix:/s", check=True, host=b"mk3", tokens=[b"./-a\\ b"])
    assert argv == [b"msync", b"-c", b"unix:/s", b"-v", b"--check", b"-t", b"mk3", b"--", b"./-a\\ b"]
    assert command_prefix(check=True, host=b"mk3") == b"check -t mk3"


_H = [b"mk2", b"mk3"]
_P = [b"a", b"b c", b"-x"]


@pytest.mark.parametrize(
    ("rc", "out", "err", "want"),
    [
        # every member answers OK
        (0, b"mk2: OK a\nmk3: OK a\n", b"", {b"mk2": Kind.OK, b"mk3": Kind.OK}),
        # NG is a FAILED member, OK beside it stays OK
        (0, b"mk2: OK a\nmk3: NG a\n", b"", {b"mk2": Kind.OK, b"mk3": Kind.FAILED}),
        # NG wins over an OK for the same member
        (0, b"mk2: OK a\nmk2: NG a\nmk3: OK a\n", b"", {b"mk2": Kind.FAILED, b"mk3": Kind.OK}),
        # silence from one member
        (0, b"mk2: OK a\n", b"", {b"mk2": Kind.OK, b"mk3": Kind.RETRY}),
        # missing on a member
        (
            0,
            b"mk2: OK a\n",
            b"error: No such file or directory mk3:a\n",
            {b"mk2": Kind.OK, b"mk3": Kind.RETRY},
        ),
        # missing locally: every member
        (0, b"", b"error: No such file or directory a\n", {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY}),
        # NG on stderr is not the documented form
        (0, b"mk2: OK a\n", b"mk3: NG a\n", {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY}),
        # anything not understood poisons the whole check
        (
            0,
            b"mk2: OK a\nmk3: OK a\nmexec: command error\n",
            b"",
            {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY},
        ),
        (0, b"mk2: OK a\nmk3: OK zz\n", b"", {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY}),
        (0, b"mk2: OK a\nmk9: OK a\n", b"", {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY}),
        (
            0,
            b"mk2: OK a\nmk3: OK a\n",
            b"error: receive time out: 10.77.0.3(mk3)\n",
            {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY},
        ),
        # msync itself failed
        (
            1,
            b"mk2: OK a\nmk3: OK a\n",
            b"error: can't read socket\n",
            {b"mk2": Kind.RETRY, b"mk3": Kind.RETRY},
        ),
    ],
)
def test_classify_check_table(rc: int, out: bytes, err: bytes, want: dict) -> None:
    got = classify_check(rc, out, err, _H, [b"a"])
    assert {h: v.kind for (h, _), v in got.items()} == want
    assert all(v.reason for v in got.values() if v.kind != Kind.OK)
    if Kind.FAILED in want.values():
        assert got[(b"mk3", 0)].reason == STALE_REASON or got[(b"mk2", 0)].reason == STALE_REASON


def test_classify_check_paths_with_dot_slash_and_spaces() -> None:
    """The daemon echoes ``./-x`` and unescaped spaces; both name the checked path."""
    out = b"mk2: OK ./-x\nmk2: NG b c\nmk2: OK a\n"
    got = classify_check(0, out, b"", [b"mk2"], _P)
    assert [got[(b"mk2", i)].kind for i in range(3)] == [Kind.OK, Kind.FAILED, Kind.OK]


_check_lines = st.sampled_from(
    [
        *(h + b": " + w + b" " + p for h in [*_H, b"mk9"] for w in (b"OK", b"NG") for p in [*_P, b"zz"]),
        *(b"error: No such file or directory " + h + b":" + p for h in _H for p in _P),
        *(b"error: No such file or directory " + p for p in _P),
        b"alive",
        b"",
        b"junk",
    ]
)


@given(st.lists(_check_lines, max_size=8), st.lists(_check_lines, max_size=3), st.sampled_from([0, 0, 1]))
def test_classify_check_ok_only_on_a_clean_ok(out: list, err: list, rc: int) -> None:
    """Every (host, path) gets a verdict; OK exactly when rc is 0, every line is
    understood, the member said ``OK`` and nothing worse about the path; FAILED
    only on an ``NG`` line on stdout."""
    got = classify_check(rc, b"\n".join(out), b"\n".join(err), _H, _P)
    assert set(got) == {(h, i) for h in _H for i in range(len(_P))}
    understood = all(
        line in (b"", b"alive")
        or (line.split(b": ", 1)[0] in _H and line.split(b" ", 2)[-1] in _P and b": " in line)
        for line in out
    ) and all(
        line in (b"", b"alive")
        or (line.startswith(b"error: No such file or directory ") and line.rsplit(b":", 1)[-1] in _P)
        or (line.startswith(b"error: No such file or directory ") and line.split(b" ", 6)[-1] in _P)
        for line in err
    )
    for h in _H:
        for i, p in enumerate(_P):
            v = got[(h, i)]
            ok = h + b": OK " + p in out
            ng = h + b": NG " + p in out
            gone = b"error: No such file or directory " + h + b":" + p in err
            gone_here = b"error: No such file or directory " + p in err
            expect_ok = rc == 0 and understood and ok and not (ng or gone or gone_here)
            assert (v.kind == Kind.OK) == expect_ok, (h, p, v)
            if v.kind == Kind.FAILED:
                assert ng and rc == 0 and understood
