"""The makuosan side of the msync double: one console line at a time.

Reproduces docs/msync.md §2 to §6: tokenising on spaces with ``\\ `` joins, getopt
permutation over at most 8 tokens, the last non-option token as the path,
``\\r`` truncation, ``\\n`` splitting a line into two commands, the statcmp
update rule, per-member output lines and timeouts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.doubles import double_fs as fs
from tests.doubles.double_state import Drops, Timing

__all__ = ["Member", "Daemon", "Desync", "tokenize", "getopt", "SEND_HELP", "SYNC_HELP", "DSYNC_HELP"]

SEND_HELP = (
    b"send [-n] [-r] [-t host] [path]\n"
    b"  -n  # dryrun\n"
    b"  -r  # recursive\n"
    b"  -D  # with delete\n"
    b"  -t  # target host"
)
SYNC_HELP = b"sync [-n] [-r] [-t host] [path]\n  -n  # dryrun\n  -r  # recursive\n  -t  # target host"
DSYNC_HELP = b"dsync [-r] [-t host] [-n] [path]\n  -r  # recursive\n  -t  # target host\n  -n  # dryrun"
_OPTSTRINGS = {b"send": b"g:t:nr", b"sync": b"g:t:nr", b"dsync": b"t:nr", b"check": b"t:r"}
_LISTED = ("up", "timeout", "readonly", "noname")


class Desync(Exception):
    """msync lost step with the console (a newline inside a command)."""


def tokenize(line: bytes, limit: int = 8) -> list[bytes]:
    """Split on spaces like strtok (empty tokens vanish); a token ending in a
    backslash is joined to the next with one space. At most ``limit`` tokens."""
    parts = [p for p in line.split(b" ") if p]
    tokens: list[bytes] = []
    cur: bytes | None = None
    for i, part in enumerate(parts):
        cur = part if cur is None else cur + part
        if cur.endswith(b"\\") and i + 1 < len(parts):
            cur = cur[:-1] + b" "
            continue
        tokens.append(cur)
        cur = None
    return tokens[:limit]


def getopt(args: list[bytes], optstring: bytes) -> tuple[dict[bytes, bytes], list[bytes], bytes | None]:
    """glibc getopt with permutation: (options, operands, first bad option char)."""
    opts: dict[bytes, bytes] = {}
    operands: list[bytes] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == b"--":
            operands.extend(args[i:])
            break
        if not arg.startswith(b"-") or arg == b"-":
            operands.append(arg)
            continue
        j = 1
        while j < len(arg):
            ch = arg[j : j + 1]
            pos = optstring.find(ch)
            if ch == b":" or pos < 0:
                return opts, operands, ch
            if optstring[pos + 1 : pos + 2] == b":":
                value = arg[j + 1 :] or (args[i] if i < len(args) else None)
                if value is None:
                    return opts, operands, ch
                if not arg[j + 1 :]:
                    i += 1
                opts[ch] = value
                break
            opts[ch] = b""
            j += 1
    return opts, operands, None


@dataclass
class Member:
    name: bytes
    ip: bytes
    dir: bytes
    state: str = "up"
    timeout_after: int = 0
    handled: int = 0
    immutable: tuple[bytes, ...] = ()  # paths whose delete fails with EPERM (chattr +i)
    update_then_timeout: bool = False  # agrees to the update, then dies mid-transfer (§6)
    lock: bytes = b""  # a lock file: one member daemon applies one entry at a time

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the member while it writes or deletes: its daemon is one
        process serving every sender connection in turn."""
        if not self.lock:
            yield
            return
        fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def label(self) -> bytes:
        """The name the sender knows it by: empty after a stray ack (§7 ``noname``)."""
        return b"" if self.state == "noname" else self.name

    def remove(self, rel: bytes, jail: bytes) -> None:
        if rel in self.immutable:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        dst = self.dir + b"/" + rel if rel else self.dir
        fs.check_jail(jail, os.path.dirname(dst))
        with self.writing():
            fs.remove_entry(dst)


@dataclass
class Daemon:
    base: bytes
    jail: bytes
    members: list[Member]
    level: int = 0
    excludes: list[bytes] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    drops: Drops | None = None  # kept by the sender across invocations
    emit: Callable[[bytes, bool], None] | None = None  # (line, to stderr) as it is said
    chmod_log: bytes = b"/dev/null"
    stall_log: bytes = b"/dev/null"
    cant_send: bool = False  # makuosan -s
    out: list[bytes] = field(default_factory=list)
    err: list[bytes] = field(default_factory=list)
    dropped: set[bytes] = field(default_factory=set)
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    cmdline: bytes = b""

    # ------------------------------------------------------------------ output
    def say(self, line: bytes) -> None:
        """msync puts lines starting with ``error:`` on stderr, the rest on stdout."""
        self._put(line, line.startswith(b"error:"))

    def say_out(self, line: bytes) -> None:
        self._put(line, False)

    def _put(self, line: bytes, err: bool) -> None:
        (self.err if err else self.out).append(line)
        if self.emit is not None:
            self.emit(line, err)

    def listed(self) -> list[Member]:
        return [m for m in self.members if m.state in _LISTED and m.name not in self.dropped]

    # ------------------------------------------------------------------ console
    def execute(self, data: bytes) -> None:
        """Run what msync wrote for one command; raise Desync if it held a newline."""
        lines = [ln.split(b"\r", 1)[0] for ln in data.split(b"\n")]
        commands = [ln for ln in lines if ln]
        for line in commands:
            self.run_line(line)
        if len(commands) > 1:
            raise Desync

    def run_line(self, line: bytes) -> None:
        self.cmdline = line  # a timeout names the console line being served
        tokens = tokenize(line)
        word = tokens[0] if tokens else b""
        if word not in _OPTSTRINGS:
            self.say(b"mexec: command error '" + word + b"'")
            return
        if self.cant_send and word != b"check":
            self.say(b"error: this server can't send")
            return
        opts, operands, bad = getopt(tokens[1:], _OPTSTRINGS[word])
        if bad is not None:
            self.say(b"invalid option -- " + bad)
            return
        path = operands[-1] if operands else None
        if path and path.endswith(b"/"):
            path = path[:-1]  # makuosan drops one trailing slash
        if word == b"dsync" and len(tokens) < 2:
            self.say(DSYNC_HELP)
            return
        if path is None and b"r" not in opts and word != b"dsync":
            self.say(SYNC_HELP if word == b"sync" else SEND_HELP)
            return
        members = self.select(opts.get(b"t"))
        if members is None:
            return
        rel = path or b""
        if word == b"check":
            self.check(rel, members, b"r" in opts)
        elif word == b"dsync":
            self.dsync(rel, members, b"r" in opts, b"n" in opts)
        elif b"r" in opts:
            self.send_tree(rel, opts.get(b"t"), b"n" in opts)
        else:
            self.send(rel, members, word == b"sync", b"n" in opts)

    def select(self, host: bytes | None) -> list[Member] | None:
        if host is None:
            return self.listed()
        found = [m for m in self.listed() if m.label == host and host]
        if not found:
            self.say_out(host + b" is not contained in members")
            return None
        return found

    def contact(self, m: Member, rel: bytes) -> bool:
        """False when the member does not take part: read-only, or it times out
        (then it is dropped for the rest of the invocation, §7)."""
        if m.name in self.dropped:
            return False
        if m.state == "readonly":
            if self.level >= 3:
                self.say(b"skipro " + m.label + b":" + rel)
            return False
        if m.state == "timeout" and m.handled >= m.timeout_after:
            self._time_out(m, rel)
            return False
        m.handled += 1
        return True

    def _time_out(self, m: Member, rel: bytes) -> None:
        """The member stopped answering: the sender retries it (500 ms x 120),
        then drops it for this and every later invocation until it pings. One
        cut during a transfer keeps the partial temp file in its tree."""
        if m.update_then_timeout:
            if self.level >= 1:
                self.say(b"update " + m.label + b":" + rel)  # not a completion receipt
            st = fs.lstat_or_none(self.src(rel))
            if st is not None and stat.S_ISREG(st.st_mode):
                fs.leave_partial(self.src(rel), self.dst(m, rel), st, self.jail)
        with open(self.stall_log, "ab") as f:
            f.write(b"%d %s %s\n" % (os.getpid(), m.name, rel))
        self.timing.stall()
        self.say(b"error: receive time out: " + self.cmdline)
        self.say(b"error: receive time out: " + m.ip + b"(" + m.label + b")")
        self.dropped.add(m.name)
        if self.drops is not None:
            self.drops.drop(m.name.decode("latin-1"))

    # ------------------------------------------------------------------ paths
    def src(self, rel: bytes) -> bytes:
        return os.path.join(self.base, rel) if rel else self.base

    def dst(self, m: Member, rel: bytes) -> bytes:
        return m.dir + b"/" + rel if rel else m.dir

    def excluded(self, rel: bytes, top: bytes | None = None) -> bool:
        """makuosan's own test (common.c): each pattern is matched, with
        FNM_PATHNAME, against the absolute path ``top/rel`` and against every
        suffix of it that follows a ``/``; a directory is tried with a
        trailing ``/``. ``top`` is the daemon's directory (the base for the
        sender's walks, the member's for its dsync listing)."""
        full = (self.base if top is None else top) + b"/" + rel
        st = fs.lstat_or_none(full)
        names = [full, full + b"/"] if st is not None and stat.S_ISDIR(st.st_mode) else [full]
        return any(_suffix_match(name, pat) for name in names for pat in self.excludes)

    # ------------------------------------------------------------------ send / sync
    def send(self, rel: bytes, members: list[Member], sync: bool, dry: bool) -> None:
        st = fs.lstat_or_none(self.src(rel))
        if st is None:
            if not sync:
                self.say(b"error: No such file or directory " + rel)
                return
            self.delete_on(rel, members, dry)
            return
        if stat.S_ISSOCK(st.st_mode):
            self.say_out(b"skip: unix domain socket " + rel)
            return
        self.timing.entry()
        dry_hit = False
        for m in members:
            if not self.contact(m, rel):
                continue
            if not fs.needs_update(st, self.dst(m, rel), self.as_root, self.src(rel)):
                if self.level >= 2:
                    self.say((b"(dryrun) " if dry else b"") + b"skip   " + m.label + b":" + rel)
                continue
            if dry:
                dry_hit = True
                if self.level >= 1:
                    self.say(b"(dryrun) update " + m.label + b":" + rel)
                continue
            if self.level >= 1:
                self.say(b"update " + m.label + b":" + rel)
            try:
                with m.writing():
                    fs.apply_entry(
                        self.src(rel),
                        self.dst(m, rel),
                        st,
                        as_root=self.as_root,
                        jail=self.jail,
                        log=self.chmod_log,
                    )
            except OSError as exc:
                self.say(b"error: " + os.fsencode(exc.strerror or str(exc)) + b" " + m.label + b":" + rel)
        if dry_hit and self.level == 0:
            self.say(b"(dryrun) [update:" + rel + b"]")

    def delete_on(self, rel: bytes, members: list[Member], dry: bool) -> None:
        """--sync of a missing path: delete it on every member that has it.
        A failing delete says nothing, even at -v (§6 silent failure 2)."""
        dry_hit = False
        for m in members:
            if not self.contact(m, rel):
                continue
            dst = self.dst(m, rel)
            if fs.lstat_or_none(dst) is None:
                continue
            if dry:
                dry_hit = True
                if self.level >= 1:
                    self.say(b"(dryrun) delete " + m.label + b":" + rel)
                continue
            try:
                m.remove(rel, self.jail)
            except OSError:
                continue
            if self.level >= 1:
                self.say(b"delete " + m.label + b":" + rel)
        if dry_hit and self.level == 0:
            self.say(b"(dryrun) [delete:" + rel + b"]")

    def walk(self, rel: bytes) -> Iterator[bytes]:
        """Post-order walk of the sender's tree (children before their directory),
        as ``check -r`` uses it; the base itself is not an entry."""
        st = fs.lstat_or_none(self.src(rel))
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            for name in fs.listdir(self.src(rel)):
                child = rel + b"/" + name if rel else name
                if not self.excluded(child):
                    yield from self.walk(child)
        if rel:
            yield rel

    def scan(self, rel: bytes, host: bytes | None, dry: bool) -> Iterator[bytes]:
        """The console lines makuosan's own ``-r`` scanner writes, lazily. Like
        the real one it space-escapes each child path *before* testing whether
        it is a directory, so a directory whose name holds a space is sent as an
        entry and never entered; the root goes last exactly as given (unescaped,
        so the daemon re-splits it on its spaces); the base itself is not sent."""
        opts = (b"-n " if dry else b"") + (b" -t " + host + b" " if host else b"")
        if not rel:
            for name in fs.listdir(self.base):
                yield from self._scan_child(name.replace(b" ", b"\\ "), opts)
            return
        yield from self._scan_child(rel, opts)

    def _scan_child(self, path: bytes, opts: bytes) -> Iterator[bytes]:
        if self.excluded(path):
            return
        st = fs.lstat_or_none(self.src(path))
        if st is not None and stat.S_ISDIR(st.st_mode):
            for name in fs.listdir(self.src(path)):
                yield from self._scan_child((path + b"/" + name).replace(b" ", b"\\ "), opts)
        yield b"send " + opts + path

    def send_tree(self, rel: bytes, host: bytes | None, dry: bool) -> None:
        """``-r``: every line the scanner writes is run as a console command; a
        newline in a name splits one of them in two and desyncs msync (§3)."""
        if fs.lstat_or_none(self.src(rel)) is None:
            self.say(b"error: No such file or directory " + rel)
            return
        for line in self.scan(rel, host, dry):
            self.execute(line + b"\r\n")

    # ------------------------------------------------------------------ dsync
    def dsync(self, rel: bytes, members: list[Member], recursive: bool, dry: bool) -> None:
        """Delete on members what the sender lacks among what each member lists:
        P and its direct children, or (with -r) P's whole subtree (§4). Each
        delete is reported, children before their directory, at every level."""
        for m in members:
            if not self.contact(m, rel):
                continue
            for victim in self._extras(m, rel, recursive):
                if dry:
                    self.say(b"(dryrun) delete " + m.label + b":" + victim)
                    continue
                try:
                    m.remove(victim, self.jail)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    reason = os.fsencode(exc.strerror or str(exc))
                    self.say_out(b"delete error (" + reason + b") " + m.label + b":" + victim)
                    continue
                self.say(b"delete " + m.label + b":" + victim)

    def _extras(self, m: Member, rel: bytes, recursive: bool) -> list[bytes]:
        return [p for p in self._listing(m, rel, recursive, True) if fs.lstat_or_none(self.src(p)) is None]

    def _listing(self, m: Member, rel: bytes, recursive: bool, top: bool) -> list[bytes]:
        """What a member lists for a dsync of ``rel``, in post-order."""
        st = fs.lstat_or_none(self.dst(m, rel))
        if st is None:
            return []
        out: list[bytes] = []
        if stat.S_ISDIR(st.st_mode) and (top or recursive):
            for name in fs.listdir(self.dst(m, rel)):
                child = rel + b"/" + name if rel else name
                if not self.excluded(child, m.dir):
                    out += self._listing(m, child, recursive, False)
        return [*out, rel] if rel else out

    # ------------------------------------------------------------------ check
    def check(self, rel: bytes, members: list[Member], recursive: bool) -> None:
        st = fs.lstat_or_none(self.src(rel))
        if st is None:
            self.say(b"error: No such file or directory " + rel)
            return
        if stat.S_ISDIR(st.st_mode) and not recursive:
            self.say(b"error: file read error(Is a directory) " + rel)
            return
        entries = self.walk(rel) if recursive else iter([rel])
        for entry in entries:
            if stat.S_ISREG(os.lstat(self.src(entry)).st_mode):
                self._check_one(entry, members)

    def _check_one(self, rel: bytes, members: list[Member]) -> None:
        for m in members:
            if not self.contact(m, rel):
                continue
            dst = self.dst(m, rel)
            dst_st = fs.lstat_or_none(dst)
            if dst_st is None or not stat.S_ISREG(dst_st.st_mode):
                self.say(b"error: No such file or directory " + m.label + b":" + rel)
            elif not fs.same_content(self.src(rel), dst):
                self.say_out(m.label + b": NG " + rel)
            elif self.level >= 1:
                self.say_out(m.label + b": OK " + rel)


def _suffix_match(path: bytes, pattern: bytes) -> bool:
    """makuosan's mfnmatch: the whole path, then each part after a ``/``,
    until a part is shorter than the pattern."""
    regex = _pathname_regex(pattern)
    start = 0
    while start < len(path):
        part = path[start:]
        if len(part) < len(pattern):
            return False
        if regex.fullmatch(part):
            return True
        slash = path.find(b"/", start)
        if slash < 0:
            return False
        start = slash + 1
    return False


def _pathname_regex(pattern: bytes) -> re.Pattern[bytes]:
    """fnmatch(3) with FNM_PATHNAME: no wildcard matches ``/``; a backslash
    quotes the next byte."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < len(pattern):  # quotes the next byte (no FNM_NOESCAPE)
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        elif c == b"*":
            out.append(b"[^/]*")
        elif c == b"?":
            out.append(b"[^/]")
        elif c == b"[" and (end := pattern.find(b"]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            neg = body[:1] in (b"!", b"^")
            body = body[1:] if neg else body
            out.append(b"(?!/)[" + (b"^" if neg else b"") + body.replace(b"\\", b"\\\\") + b"]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)
