"""The console relay forwards msync's conversation with a TCP console byte
for byte, both ways, and the shipper uses it only when the console answers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.config import MsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.msync.relay import ConsoleRelay, sweep, tcp_address
from agent.ship.msync.shipper import MsyncShipper
from tests.doubles.fixtures import make_double, write_file
from tests.doubles.greeter import Greeter

OLD = 1_700_000_000


class FakeConsole(Greeter):
    """A TCP server speaking the console's shape: a prompt, then for each
    ``CMD\\r\\n`` two answer lines and a prompt; ``quit`` closes."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.closed = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"> ")
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    self.seen.append(line)
                    if line == b"quit":
                        self.closed.set()
                        return
                    conn.sendall(b"update mk2:" + line + b"\r\n")
                    conn.sendall(b"update mk3:" + line + b"\r\n> ")
            self.closed.set()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self) -> None:
        self.srv.close()


@pytest.fixture
def console() -> Iterator[FakeConsole]:
    c = FakeConsole()
    yield c
    c.stop()


def read_prompt(s: socket.socket) -> bytes:
    got = b""
    while not got.endswith(b"> "):
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return got


def test_tcp_address() -> None:
    assert tcp_address("tcp:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert tcp_address("tcp:[::1]:5000") == ("::1", 5000)
    assert tcp_address("unix:/run/m.sock") is None
    assert tcp_address("tcp:nohost") is None


def test_a_conversation_passes_byte_for_byte(console: FakeConsole, tmp_path: Path) -> None:
    relay = ConsoleRelay(console.connect, str(tmp_path))
    try:
        assert relay.target == f"unix:{tmp_path}/console.sock"
        assert os.stat(relay.path).st_mode & 0o077 == 0
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(relay.path)
            assert read_prompt(s) == b"> "
            for cmd in (b"sync -l 2 a\\ b", b"send bad\xff\xfename"):
                s.sendall(cmd + b"\r\n")
                assert read_prompt(s) == b"update mk2:%s\r\nupdate mk3:%s\r\n> " % (cmd, cmd)
            s.sendall(b"quit\r\n")
            assert s.recv(10) == b""  # the console closed: so does the relay
        assert console.seen == [b"sync -l 2 a\\ b", b"send bad\xff\xfename", b"quit"]
    finally:
        relay.close()
    assert not os.path.exists(relay.path)


def test_msync_going_away_closes_the_console_side(console: FakeConsole, tmp_path: Path) -> None:
    relay = ConsoleRelay(console.connect, str(tmp_path))
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(relay.path)
        read_prompt(s)
        s.close()  # msync ended (or was ended) mid-conversation
        assert console.closed.wait(10)
    finally:
        relay.close()


def test_only_a_console_that_greets_counts_as_up(console: FakeConsole, tmp_path: Path) -> None:
    relay = ConsoleRelay(console.connect, str(tmp_path))
    try:
        assert relay.upstream_ok()
    finally:
        relay.close()
    with contextlib.closing(socket.create_server(("127.0.0.1", 0))) as mute:  # listens, says nothing
        port = mute.getsockname()[1]
        relay = ConsoleRelay(lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
        try:
            assert not relay.upstream_ok()
        finally:
            relay.close()


def test_upstream_down_is_seen_and_a_client_is_dropped(tmp_path: Path) -> None:
    def refuse() -> socket.socket:
        raise ConnectionRefusedError

    relay = ConsoleRelay(refuse)
    try:
        assert not relay.upstream_ok()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(relay.path)
            assert s.recv(10) == b""
    finally:
        relay.close()
    assert not os.path.exists(os.path.dirname(relay.path))


# ---------------------------------------------------------------------------- in the shipper
def ship_one(tmp_path: Path, console: str, relay_dir: Path, listening: tuple[str, ...], connect=None):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path, listening=listening)
    write_file(root / "f", b"x", mtime=OLD)
    target = MsyncTarget(name="c", members=("mk2", "mk3"), msync=str(dbl.msync), base=root, console=console)
    shipper = MsyncShipper(target, root, env=dbl.env(), relay_dir=relay_dir, relay_connect=connect)
    try:
        results = shipper.ship(Plan((Action(ActionKind.PUT, b"f"),)))
    finally:
        shipper.close()
    return {r.outcome for r in results}, [a[a.index(b"-c") + 1] for a in dbl.invocations() if b"-c" in a]


def test_the_shipper_talks_through_the_relay_when_the_console_answers(
    console: FakeConsole, tmp_path: Path
) -> None:
    tcp = f"tcp:127.0.0.1:{console.port}"
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    via = f"unix:{relay_dir}/console.sock"
    outcomes, used = ship_one(tmp_path, tcp, relay_dir, (via,))
    assert outcomes == {Outcome.OK}
    assert set(used) == {via.encode()}
    assert not (relay_dir / "console.sock").exists()  # closed with the shipper


def test_the_shipper_goes_direct_when_the_console_does_not_answer(tmp_path: Path) -> None:
    with contextlib.closing(socket.create_server(("127.0.0.1", 0))) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    tcp = f"tcp:127.0.0.1:{port}"
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    outcomes, used = ship_one(tmp_path, tcp, relay_dir, (tcp,))
    assert outcomes == {Outcome.OK}
    assert set(used) == {tcp.encode()}


# ---------------------------------------------------------------------------- leftovers
def test_a_relay_that_cannot_listen_leaves_no_directory(tmp_path: Path, monkeypatch) -> None:
    """A socket path too long for AF_UNIX: the relay fails, its directory goes."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(OSError):
        ConsoleRelay(lambda: socket.create_connection(("127.0.0.1", 9)), tag="t")
    assert os.listdir(deep) == []


def test_sweep_removes_only_dead_relays_of_its_tag(tmp_path: Path) -> None:
    """Dead (unlocked, socket inside) relay directories of the tag go; a live
    one (locked), another tag, a foreign file inside, a directory others may
    read, a symlink and one being set up (young, no socket yet) stay."""

    def relay_dir(name: str, mode: int = 0o700, sock: bool = True) -> Path:
        d = tmp_path / name
        d.mkdir(mode=mode)
        os.chmod(d, mode)
        if sock:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(d / "console.sock"))
        return d

    dead = relay_dir("msync-relay-abc-dead1")
    live = relay_dir("msync-relay-abc-live1")
    other = relay_dir("msync-relay-xyz-dead2")
    foreign = relay_dir("msync-relay-abc-foreign")
    (foreign / "keep").write_bytes(b"")
    shared = relay_dir("msync-relay-abc-shared", mode=0o755)
    young = relay_dir("msync-relay-abc-young", sock=False)
    (tmp_path / "msync-relay-abc-link").symlink_to(dead)
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep("abc", str(tmp_path)) == [str(dead)]
    finally:
        os.close(held)
    assert not dead.exists()
    assert all(d.exists() for d in (live, other, foreign, shared, young))
    assert (foreign / "keep").exists()


def test_a_relay_locks_its_directory_while_it_lives(
    console: FakeConsole, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    relay = ConsoleRelay(console.connect, tag="abc")
    try:
        assert os.path.basename(os.path.dirname(relay.path)).startswith("msync-relay-abc-")
        assert sweep("abc", str(tmp_path)) == []
        assert os.path.exists(relay.path)
    finally:
        relay.close()
    assert os.listdir(tmp_path) == []


def test_silent_calls_go_to_the_tcp_console_directly(console: FakeConsole, tmp_path: Path) -> None:
    """Only an exchange that prints before the prompt waits for msync's
    delayed ACK: the silent calls that settle parent directories (level 0)
    go to the TCP console directly, the answering ones through the relay."""
    root = tmp_path / "root"
    tcp = f"tcp:127.0.0.1:{console.port}"
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    via = f"unix:{relay_dir}/console.sock"
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path, listening=(via, tcp))
    for d in range(3):
        write_file(root / f"d{d}" / "f", b"x", mtime=OLD)
    target = MsyncTarget(name="c", members=("mk2", "mk3"), msync=str(dbl.msync), base=root, console=tcp)
    shipper = MsyncShipper(target, root, env=dbl.env(), relay_dir=relay_dir)
    try:
        results = shipper.ship(Plan(tuple(Action(ActionKind.PUT, b"d%d/f" % d) for d in range(3))))
    finally:
        shipper.close()
    assert {r.outcome for r in results} == {Outcome.OK}
    used = {
        (a[a.index(b"-l") + 1] if b"-l" in a else b"members", a[a.index(b"-c") + 1])
        for a in dbl.invocations()
    }
    assert used == {(b"members", via.encode()), (b"2", via.encode()), (b"0", tcp.encode())}
