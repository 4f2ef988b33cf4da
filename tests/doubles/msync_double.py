"""A test double of ``msync`` (makuosan 1.3.6's client) and its daemon.

Run as the ``msync`` executable (see ``fixtures.py``). State lives in the
directory named by ``$MSYNC_DOUBLE_STATE``:

- ``config.json``: ``base`` (makuosan -b), ``jail`` (nothing is written outside
  it), ``listening`` (console targets that accept: ``tcp:HOST:PORT`` or
  ``unix:PATH``), ``password`` (console -K secret or null), ``time_scale``
  (0 = instant, 1 = a real cluster's speed, see ``double_state``),
  ``timeout_delay`` (seconds added to the scaled 60 s dead-member stall),
  ``ping_delay`` (seconds, scaled, before a dropped member that answers again
  is listed again; default 10), ``member_order`` (``random``, the default:
  members answer in an order that changes per invocation, or ``listed``),
  ``cant_send`` (makuosan -s), ``parallel`` (makuosan -f: files in flight
  at once in the daemon, shared by concurrent invocations; default 5), and ``members``: name ->
  ``{dir, ip, state, timeout_after, update_then_timeout, immutable}`` where
  state is ``up``, ``down``/``absent`` (not listed, skipped silently),
  ``timeout`` (answers ``timeout_after`` commands, then stalls, times out and
  is dropped: for the rest of the invocation and for later ones until it
  answers again and pings), ``readonly`` (makuosan -r) or ``noname`` (listed
  with an empty name, §7); ``immutable`` paths fail to delete with EPERM.
- written by the double: ``invocations.log`` (argv per run), ``console.log``
  (each command line the daemon got), ``chmod_outside.log`` (symlink chmods
  that would have left the jail), ``stalls.log`` (``PID MEMBER PATH`` when a
  stall starts), ``dropped.json`` (the sender's dropped members). Output is
  written line by line as the daemon says it. Behaviour follows
docs/msync.md, quirks included: the client side here (§2, §3, §6:
option parsing, console targets, password, the 254-byte command line,
desync on newlines), the daemon side in ``double_daemon.py``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.doubles.double_daemon import Daemon, Desync, Member
from tests.doubles.double_fs import JailError
from tests.doubles.double_state import PARALLEL, PING_S, Drops, Timing

Sink = Callable[[bytes, bool], None]

__all__ = [
    "main",
    "parse_args",
    "Options",
    "VERSION",
    "MEMBER_VERSION",
    "USAGE",
    "DEFAULT_TARGET",
    "MAX_LINE",
]

VERSION = b"msync version 1.3.6 (CLI for makuosan)"
MEMBER_VERSION = b"(Ver1.3.6)"  # --members shows each peer's package version
USAGE = (
    b"usage: msync [OPTION] [FILENAME]\n"
    b"  --sync --delete --check --members -r -t HOST -n -v -l N -c TARGET -K FILE"
)
DEFAULT_TARGET = "tcp:127.0.0.1:5000"
MAX_LINE = 254  # "<cmd> PATH" must fit a 256-byte buffer with "\r\n" (§3)

_SHORT_WITH_ARG = set("cKltgf")
_SHORT_FLAGS = set("vnrhV")
_LONG = {"sync", "delete", "check", "members", "status", "help", "version"}


class UsageError(Exception):
    pass


@dataclass
class Options:
    flags: set[str] = field(default_factory=set)
    values: dict[str, bytes] = field(default_factory=dict)
    verbose: int = 0
    excludes: list[bytes] = field(default_factory=list)
    paths: list[bytes] = field(default_factory=list)


def parse_args(argv: list[bytes]) -> Options:
    """getopt_long with permutation: options may follow paths; ``--`` ends them."""
    o = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == b"--":
            o.paths.extend(argv[i:])
            break
        if arg.startswith(b"--"):
            name, eq, value = arg[2:].decode("latin-1").partition("=")
            if name == "exclude":
                if not eq:
                    if i >= len(argv):
                        raise UsageError
                    value, i = argv[i].decode("latin-1"), i + 1
                o.excludes.append(value.encode("latin-1"))
            elif name in _LONG and not eq:
                o.flags.add(name)
            else:
                raise UsageError
        elif arg.startswith(b"-") and arg != b"-":
            i = _short(o, arg, argv, i)
        else:
            o.paths.append(arg)
    return o


def _short(o: Options, arg: bytes, argv: list[bytes], i: int) -> int:
    j = 1
    while j < len(arg):
        ch = chr(arg[j])
        if ch in _SHORT_WITH_ARG:
            value = arg[j + 1 :]
            if not value:
                if i >= len(argv):
                    raise UsageError
                value, i = argv[i], i + 1
            o.values[ch] = value
            return i
        if ch not in _SHORT_FLAGS:
            raise UsageError
        if ch == "v":
            o.verbose += 1
        o.flags.add(ch)
        j += 1
    return i


def _load_state() -> tuple[Path, dict]:
    state = Path(os.environ["MSYNC_DOUBLE_STATE"])
    return state, json.loads((state / "config.json").read_text())


def _command_prefix(o: Options, word: bytes) -> bytes:
    parts = [word]
    if "r" in o.flags:
        parts.append(b"-r")
    if "n" in o.flags and word != b"check":
        parts.append(b"-n")
    if "t" in o.values:
        parts += [b"-t", o.values["t"]]
    if "g" in o.values and word != b"check":
        parts += [b"-g", o.values["g"]]
    return b" ".join(parts)


def _command_lines(o: Options, path: bytes | None) -> list[bytes]:
    words = [b"check"] if "check" in o.flags else [b"sync" if "sync" in o.flags else b"send"]
    if "delete" in o.flags:
        words.insert(0, b"dsync")
    tail = b"" if path is None else b" " + path
    return [_command_prefix(o, w) + tail for w in words]


def _daemon(state: Path, cfg: dict, o: Options, emit: Sink | None) -> Daemon:
    level = int(o.values["l"]) if "l" in o.values else o.verbose
    scale = float(cfg.get("time_scale", 0.0))
    drops = Drops(state, float(cfg.get("ping_delay", PING_S)) * scale)
    answering = {name: m.get("state", "up") != "timeout" for name, m in cfg["members"].items()}
    dropped = {n.encode() for n in drops.current(answering)}
    members = [
        Member(
            name.encode(),
            m.get("ip", "10.0.0.1").encode(),
            os.fsencode(m["dir"]),
            m.get("state", "up"),
            int(m.get("timeout_after", 0)),
            immutable=tuple(os.fsencode(x) for x in m.get("immutable", [])),
            update_then_timeout=bool(m.get("update_then_timeout", False)),
            lock=os.fsencode(state / f"member-{name}.lock"),
        )
        for name, m in cfg["members"].items()
    ]
    if cfg.get("member_order", "random") == "random":
        random.shuffle(members)  # acknowledgement order: whoever answers first
    return Daemon(
        base=os.fsencode(cfg["base"]),
        jail=os.fsencode(os.path.realpath(cfg["jail"])),
        members=members,
        level=level,
        excludes=o.excludes,
        timing=Timing(
            scale,
            _target(o).startswith(b"tcp:"),
            float(cfg.get("timeout_delay", 0.0)),
            slots=state,
            parallel=int(cfg.get("parallel", PARALLEL)),
        ),
        drops=drops,
        emit=emit,
        chmod_log=os.fsencode(state / "chmod_outside.log"),
        stall_log=os.fsencode(state / "stalls.log"),
        cant_send=bool(cfg.get("cant_send", False)),
        dropped=dropped,
    )


def _log(state: Path, name: str, record: list[bytes] | bytes) -> None:
    items = record if isinstance(record, list) else [record]
    with open(state / name, "a") as f:
        f.write(json.dumps([x.decode("latin-1") for x in items]) + "\n")


def _target(o: Options) -> bytes:
    return o.values.get("c", os.fsencode(os.environ.get("MSYNC_TARGET", DEFAULT_TARGET)))


def _connect(o: Options, cfg: dict) -> bytes | None:
    """None when the console accepts us, else msync's own error line (rc 1)."""
    target = _target(o)
    if target.decode("latin-1") not in cfg.get("listening", [DEFAULT_TARGET]):
        return b"can't connect " + target
    password = cfg.get("password")
    if password is not None:
        try:
            given = Path(os.fsdecode(o.values["K"])).read_bytes().rstrip(b"\r\n")
        except (KeyError, OSError):
            given = None
        if given != password.encode():
            return b"remote socket close"
    return None


def run(
    argv: list[bytes], state: Path, cfg: dict, emit: Sink | None = None
) -> tuple[int, list[bytes], list[bytes]]:
    """One msync invocation: (exit status, stdout lines, stderr lines). The
    daemon's lines also go to ``emit`` as they are said; msync's own lines
    (usage, connection errors) only in the result. Its wall-clock span goes
    to ``spans.log``."""
    _log(state, "invocations.log", argv)
    start = time.time()
    try:
        return _run(argv, state, cfg, emit)
    finally:
        _log(state, "spans.log", [b"%.6f" % start, b"%.6f" % time.time(), *argv])


def _run(
    argv: list[bytes], state: Path, cfg: dict, emit: Sink | None
) -> tuple[int, list[bytes], list[bytes]]:
    try:
        o = parse_args(argv)
    except UsageError:
        return 1, [USAGE], []
    if "V" in o.flags or "version" in o.flags:
        return 0, [VERSION], []
    exclusive = {"check", "status", "members"} & o.flags
    if "delete" in o.flags and exclusive:
        return 1, [USAGE], []
    if not o.paths and "r" not in o.flags and not exclusive:
        return 1, [USAGE], []
    refused = _connect(o, cfg)
    if refused is not None:
        return 1, [], [refused]
    d = _daemon(state, cfg, o, emit)
    d.timing.invocation()
    if "members" in o.flags:
        listed = d.listed()
        names = max((len(m.label) for m in listed), default=0)
        ips = max((len(m.ip) for m in listed), default=0)
        for m in listed:
            d.say_out(m.label.ljust(names) + b" " + m.ip.ljust(ips) + b" " + MEMBER_VERSION)
        d.say_out(b"Total: %d members" % len(listed))
        d.timing.command(produced_output=True)
        _log(state, "timing.log", [b"%.6f" % d.timing.model, *argv])
        return 0, d.out, d.err
    rc = _send_all(o, d, state)
    _log(state, "timing.log", [b"%.6f" % d.timing.model, *argv])
    return rc, d.out, d.err


def _send_all(o: Options, d: Daemon, state: Path) -> int:
    for pat in o.excludes:
        _log(state, "console.log", b"exclude add " + pat)
    for path in o.paths or [None]:
        for line in _command_lines(o, path):
            if len(line) > MAX_LINE:
                d.err += [b"error: command too long", b"error: makuosan socket error. (" + line + b")"]
                return 1
            _log(state, "console.log", line)
            said = len(d.out) + len(d.err)
            try:
                d.execute(line + b"\r\n")
            except Desync:
                d.err.append(b"quit error?!")
                return 1
            d.timing.command(produced_output=len(d.out) + len(d.err) > said)
    return 0


def _emit(line: bytes, err: bool) -> None:
    stream = sys.stderr.buffer if err else sys.stdout.buffer
    stream.write(line + b"\n")
    stream.flush()


def main(argv: list[bytes] | None = None) -> int:
    args = [os.fsencode(a) for a in sys.argv[1:]] if argv is None else argv
    state, cfg = _load_state()
    streamed: list[tuple[bytes, bool]] = []

    def emit(line: bytes, err: bool) -> None:
        streamed.append((line, err))
        _emit(line, err)

    try:
        rc, out, err = run(args, state, cfg, emit)
    except JailError as exc:
        sys.stderr.write(f"msync-double: {exc}\n")
        return 99
    said = {False: [x for x, e in streamed if not e], True: [x for x, e in streamed if e]}
    for is_err, lines in ((False, out), (True, err)):
        for line in lines[len(said[is_err]) :]:  # msync's own lines, after the daemon's
            _emit(line, is_err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
