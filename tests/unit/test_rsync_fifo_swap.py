"""A source file replaced by a fifo between rsync's listing and its open:
rsync waits in ``open`` for a writer that never comes (its ``--timeout``
covers I/O, not ``open``). The shipper ends it within seconds, keeps the
batch pending (RETRY), and the next ship sees the fifo (specials are not
replicated: the mirror's copy is removed).

The race is made certain, not hoped for: rsync runs under ``strace``, which
delays its ``open`` of the one name by a few seconds; the test swaps the
file for a fifo as soon as that ``open`` is entered."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.findings import AuditError, Finding
from agent.ship.rsync.audit import audit_rsync
from agent.ship.rsync.shipper import RsyncShipper
from agent.ship.targets import RsyncTarget
from agent.tree.excludes import Excludes
from tests.helpers.descendants import descendants, end_descendants
from tests.helpers.wait import wait_until

DELAY_US = 6_000_000  # the open waits this long before it runs: time enough to swap, even on a busy machine


@pytest.fixture(autouse=True)
def _short_fifo_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second of waiting on the fifo is proof enough here (5 s in the agent)."""
    monkeypatch.setattr("agent.ship.rsync.shipper.FIFO_WAIT_LIMIT_S", 1.0)
    monkeypatch.setattr("agent.ship.rsync.audit.FIFO_WAIT_LIMIT_S", 1.0)


def _delaying_rsync(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An rsync program that delays its ``open`` of ``name`` and logs it to a trace."""
    trace = tmp_path / "trace"
    wrapper = tmp_path / "rsync-delaying-open"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec strace -f -qq -o "{trace}" -e trace=openat -e inject=openat:delay_enter={DELAY_US} '
        f'-P "{name}" "{shutil.which("rsync")}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, trace


def _runs_on(pid: int, src: Path) -> bool:
    try:
        return os.fsencode(src) in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (ops/test installs it)")
def test_a_file_swapped_for_a_fifo_mid_ship_is_retried_not_waited_on(tmp_path: Path) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    (src / "victim").write_bytes(b"a file when listed\n")
    (src / "other").write_bytes(b"travels in the same batch\n")
    (mirror / "victim").write_bytes(b"the mirror's older copy\n")
    wrapper, trace = _delaying_rsync(tmp_path, "victim")
    shipper = RsyncShipper(RsyncTarget("t", str(mirror), rsync=str(wrapper), timeout_s=600), src)
    plan = Plan((Action(ActionKind.PUT, b"victim"), Action(ActionKind.PUT, b"other")))

    got: list[Sequence[ShipResult]] = []
    worker = threading.Thread(target=lambda: got.append(shipper.ship(plan)))
    worker.start()
    try:
        wait_until(
            lambda: trace.exists() and b"openat(" in trace.read_bytes() and b'"victim"' in trace.read_bytes(),
            timeout=60,
            message="rsync never opened the listed file",
        )
        os.unlink(src / "victim")
        os.mkfifo(src / "victim")
    finally:
        worker.join(120)  # the call's own timeout is 630 s
        if worker.is_alive():  # the shipper waited: end this test's rsync, then fail below
            end_descendants([p for p in descendants(os.getpid()) if _runs_on(p[0], src)])
            worker.join(60)
    assert not worker.is_alive(), "the ship waited on the fifo"
    results = {r.path: r for r in got[0]}
    assert results[b"victim"].outcome is Outcome.RETRY and "fifo" in results[b"victim"].reason
    assert results[b"other"].outcome is Outcome.RETRY  # one batch: nothing in it is proven
    assert (mirror / "victim").read_bytes() == b"the mirror's older copy\n"  # nothing shipped wrongly

    again = {r.path: r.outcome for r in RsyncShipper(RsyncTarget("t", str(mirror)), src).ship(plan)}
    assert again == {b"victim": Outcome.OK, b"other": Outcome.OK}
    assert not os.path.lexists(mirror / "victim")  # a fifo is not replicated
    assert (mirror / "other").read_bytes() == b"travels in the same batch\n"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (ops/test installs it)")
def test_verify_checksum_run_meeting_the_swap_is_an_error_not_clean(tmp_path: Path) -> None:
    """verify's rsync (--checksum opens every file) meets the same race: the
    check ends with an error that says so; it never reports the mirror clean."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    (src / "victim").write_bytes(b"a file when listed\n")
    (mirror / "victim").write_bytes(b"a different mirror copy\n")
    wrapper, trace = _delaying_rsync(tmp_path, "victim")
    target = RsyncTarget("t", str(mirror), rsync=str(wrapper), timeout_s=600)
    got: list[BaseException | list[Finding]] = []

    def check() -> None:
        try:
            got.append(audit_rsync(os.fsencode(src), target, Excludes([])))
        except AuditError as exc:
            got.append(exc)

    worker = threading.Thread(target=check)
    worker.start()
    try:
        wait_until(lambda: trace.exists() and b'"victim"' in trace.read_bytes(), timeout=60)
        os.unlink(src / "victim")
        os.mkfifo(src / "victim")
    finally:
        worker.join(120)
        if worker.is_alive():
            end_descendants([p for p in descendants(os.getpid()) if _runs_on(p[0], src)])
            worker.join(60)
    assert isinstance(got[0], AuditError) and "fifo" in str(got[0]), got
