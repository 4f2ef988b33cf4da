"""rsync result classification: the exit-code table and per-path attribution."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from agent.ship.base import Outcome
from agent.ship.rsync.codes import (
    EXIT_CODES,
    ExitClass,
    attribute_errors,
    classify_exit,
    deleted_names,
    rsync_escape,
)

names = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b)
paths = st.lists(names, min_size=1, max_size=4).map(b"/".join)


def unescape(text: bytes) -> bytes:
    return re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), text)


def test_table_rows() -> None:
    """The documented codes map to the agreed verdicts."""
    assert classify_exit(0).exit_class is ExitClass.OK
    for code in (23, 24):
        assert classify_exit(code).exit_class is ExitClass.PARTIAL
    for code in (1, 2, 4):
        assert classify_exit(code).exit_class is ExitClass.FAILED
    for code in (3, 5, 10, 11, 12, 30, 35, 127, 255):
        assert classify_exit(code).exit_class is ExitClass.RETRY


@given(st.integers(min_value=-64, max_value=512), st.booleans(), st.booleans())
def test_only_a_clean_exit_is_ok(code: int, timed_out: bool, missing: bool) -> None:
    """Any other code, a timeout or a missing program is never OK; unknown codes retry."""
    rule = classify_exit(code, timed_out=timed_out, missing=missing)
    assert rule.meaning
    if rule.exit_class is ExitClass.OK:
        assert code == 0 and not timed_out and not missing
    if timed_out or missing or (code not in EXIT_CODES):
        assert rule.exit_class is ExitClass.RETRY


@given(st.binary(max_size=60))
def test_escape_is_printable_and_reversible(name: bytes) -> None:
    """rsync's message escaping leaves printable ASCII and loses nothing."""
    out = rsync_escape(name)
    assert all(0x20 <= b < 0x7F or b == 0x09 for b in out)
    assert unescape(out) == name


@given(st.lists(paths, min_size=1, max_size=6, unique=True), st.data())
def test_a_named_path_is_never_ok(batch: list[bytes], data: st.DataObject) -> None:
    """Whatever error line names a path (full source path, module-relative,
    temp file), that path is not reported OK; unnamed paths stay OK."""
    bad = data.draw(st.sampled_from(batch))
    form = data.draw(st.sampled_from(["vanished", "refused", "mkstemp"]))
    esc = rsync_escape(bad)
    head, _, base = bad.rpartition(b"/")
    line = {
        "vanished": b'file has vanished: "/srv/root/' + esc + b'"',
        "refused": b'ERROR: daemon refused to receive file "' + esc + b'"',
        "mkstemp": b'rsync: [receiver] mkstemp "/m/'
        + rsync_escape((head + b"/" if head else b"") + b"." + base + b".Ab12Cd")
        + b'" failed: Permission denied (13)',
    }[form]
    stderr = line + b"\nrsync error: some files/attrs were not transferred (code 23)\n"
    verdicts = attribute_errors(batch, stderr, "rsync exit 23")
    assert verdicts[bad].outcome is not Outcome.OK
    assert verdicts[bad].reason
    assert set(verdicts) == set(batch)


def test_unrelated_paths_stay_ok() -> None:
    """A failure of one path leaves a sibling OK; a dir's failure covers its children."""
    stderr = b'rsync: [generator] recv_generator: mkdir "/m/d" failed: Read-only file system (30)\n'
    verdicts = attribute_errors([b"d/x", b"e", b"dd"], stderr, "x")
    assert verdicts[b"d/x"].outcome is Outcome.RETRY
    assert verdicts[b"e"].outcome is Outcome.OK
    assert verdicts[b"dd"].outcome is Outcome.OK


def test_unattributable_line_retries_everything() -> None:
    """An error naming none of the paths proves nothing: every path retries."""
    stderr = b"rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n"
    verdicts = attribute_errors([b"a", b"b"], stderr, "rsync exit 23")
    assert {v.outcome for v in verdicts.values()} == {Outcome.RETRY}
    assert all("rsync exit 23" in v.reason for v in verdicts.values())


def test_permanent_name_errors_fail() -> None:
    """A name the receiver cannot hold, or the daemon refuses, is FAILED."""
    stderr = b'ERROR: daemon refused to receive file "blo\\#012cked"\n'
    verdicts = attribute_errors([b"blo\ncked", b"ok"], stderr, "x")
    assert verdicts[b"blo\ncked"].outcome is Outcome.FAILED
    assert verdicts[b"ok"].outcome is Outcome.OK


def test_mirror_refusals_fail_but_a_number_in_a_name_does_not() -> None:
    """EPERM/EACCES at the end of a line are FAILED; "(1)" inside a quoted
    name with a transient errno stays RETRY."""
    stderr = (
        b"rsync: [generator] delete_file: unlink(locked/f) failed: Operation not permitted (1)\n"
        b'rsync: [receiver] mkstemp "/d/.photo (13).jpg.Xa1" failed: No space left on device (28)\n'
        b'rsync: [receiver] mkstemp "/e/.x.Yb2" failed: Permission denied (13)\n'
        b'rsync: [generator] recv_generator: mkdir "/m/f24/d0" failed: Not a directory (20)\n'
    )
    v = attribute_errors([b"locked/f", b"d/photo (13).jpg", b"e/x", b"f24/d0/x", b"ok"], stderr, "x")
    assert v[b"f24/d0/x"].outcome is Outcome.FAILED
    assert v[b"locked/f"].outcome is Outcome.FAILED
    assert v[b"d/photo (13).jpg"].outcome is Outcome.RETRY
    assert v[b"e/x"].outcome is Outcome.FAILED
    assert v[b"ok"].outcome is Outcome.OK


@given(st.lists(paths, min_size=1, max_size=6, unique=True), st.data())
def test_probe_output_names_exactly_the_present_paths(batch: list[bytes], data: st.DataObject) -> None:
    """Deletion lines of listed paths (directories with their contents and a
    trailing slash) give back exactly those paths; a stray line gives None."""
    present = data.draw(st.lists(st.sampled_from(batch), unique=True))
    lines = []
    for p in present:
        if data.draw(st.booleans()):
            lines += [b"*deleting  |" + rsync_escape(p) + b"/inner", b"*deleting  |" + rsync_escape(p) + b"/"]
        else:
            lines.append(b"*deleting  |" + rsync_escape(p))
    out = b"".join(line + b"\n" for line in lines)
    assert deleted_names(batch, out) == set(present)
    assert deleted_names(batch, out + b"Welcome to the mirror\n") is None
    assert deleted_names(batch, out + b"*deleting  |not-listed-\xff\n") is None
