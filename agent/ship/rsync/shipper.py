"""Ship plans with rsync: ``--files-from`` batches to a path, daemon or ssh.

A plan becomes at most four rsync runs, in this order: a dry run of the
deletes and the deletes of what it found (from a skeleton of empty parent
directories, so every listed name is "missing" and ``--delete-missing-args``
removes it; the dry run keeps absent paths out, since rsync would create
their parents), plain PUTs (``--dirs``, no recursion)
and recursive PUTs (``-r --delete``, so a moved-in directory loses extra
files). Listed paths are known to have changed, so rsync's size+mtime quick
check (blind to a same-size rewrite within one second) is switched off with
``--ignore-times``. Names travel NUL-separated on stdin, never on a command line or
through a shell; remote-side names are protected from word splitting.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.ship import process as _exec
from agent.ship.actions import Action, ActionKind, Plan, tracks_for
from agent.ship.base import Outcome, ShipResult
from agent.ship.rsync.codes import (
    PROBE_FORMAT,
    CodeRule,
    ExitClass,
    PathOutcome,
    attribute_errors,
    classify_exit,
    deleted_names,
)
from agent.ship.rsync.filters import exclude_args
from agent.ship.targets import RsyncTarget
from agent.tree.excludes import Excludes
from agent.tree.walk import relpath_problem

__all__ = [
    "RsyncShipper",
    "Batches",
    "split_plan",
    "batch_argv",
    "listed_name",
    "covering_ancestors",
    "source_kind",
]

log = structlog.get_logger()

_BASE_FLAGS = ("-a", "-H", "--numeric-ids", "--no-D", "--force", "--delete-missing-args", "--from0")
_MODE_FLAGS = {
    "delete": ("--no-r", "--dirs", "--no-implied-dirs"),
    "probe": (
        "--no-r",
        "--dirs",
        "--no-implied-dirs",
        "--dry-run",
        "--no-motd",
        f"--out-format={PROBE_FORMAT}",
    ),
    "plain": ("--no-r", "--dirs", "--ignore-times"),
    "recursive": ("-r", "-xx", "--delete", "--ignore-times"),  # -xx: a mount point is not part of the tree
}
_protect_cache: dict[str, tuple[str, ...]] = {}
# rsync opens a file it listed without O_NONBLOCK: one replaced by a fifo
# meanwhile makes it wait in open() for a writer, which its --timeout does not
# cover. Waiting this long there ends the call (RETRY); the next ship sees the fifo.
FIFO_WAIT_LIMIT_S = 5.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SKELETON_PREFIX = "msync-agent-rsync-del-"
_SKELETON_RE = re.compile(re.escape(_SKELETON_PREFIX) + r"(\d+)-[^/]+")


@dataclass
class Batches:
    """Actions sorted by how rsync must be run for them."""

    delete: list[Action] = field(default_factory=list)
    plain: list[Action] = field(default_factory=list)
    recursive: list[Action] = field(default_factory=list)
    refused: list[tuple[Action, Outcome, str]] = field(default_factory=list)
    # A recursive PUT's specials below it, deleted on the mirror by the delete
    # batch (rsync -r --no-D skips them and keeps what the mirror has there).
    specials: dict[int, list[Action]] = field(default_factory=dict)


def source_kind(root: bytes, path: bytes) -> str | None:
    """ "file", "dir", "symlink" or "special" for ``root/path`` without
    following any symlink on the way; None when it is not in the tree."""
    cur = root
    parts = path.split(b"/")
    for i, part in enumerate(parts):
        cur = cur + b"/" + part
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(st.st_mode) else "special"


def split_plan(actions: Sequence[Action], root: bytes) -> Batches:
    """Sort actions into batches by the source's state now."""
    out = Batches()
    for action in actions:
        problem = relpath_problem(action.path)
        if problem:
            out.refused.append((action, Outcome.FAILED, problem))
            continue
        if action.kind is ActionKind.DELETE:
            out.delete.append(action)
            continue
        try:
            kind = source_kind(root, action.path)
        except OSError as exc:
            out.refused.append((action, Outcome.RETRY, f"cannot read source: {exc.strerror}"))
            continue
        if kind is None or kind == "special":  # specials are not replicated: absent on the mirror
            out.delete.append(action)
        elif action.recursive and kind == "dir":
            out.recursive.append(action)
            below = [
                Action(ActionKind.DELETE, p, False, action.tracks) for p in specials_below(root, action.path)
            ]
            if below:
                out.specials[id(action)] = below
                out.delete += below
        else:
            out.plain.append(action)
    return out


def specials_below(root: bytes, path: bytes) -> list[bytes]:
    """Root-relative paths of the fifos, sockets and devices below the
    directory ``root/path``, found without following a symlink or leaving
    its filesystem; a directory that cannot be read is passed over."""
    out: list[bytes] = []
    try:
        top = os.open(root + b"/" + path, _DIR_FLAGS)
    except OSError:
        return out
    dev = os.fstat(top).st_dev
    stack = [(top, path)]
    while stack:
        fd, rel = stack.pop()
        try:
            with os.scandir(fd) as entries:
                for de in entries:
                    try:
                        mode, same_fs = _entry_mode(de, dev)
                        if stat.S_ISDIR(mode) and same_fs:
                            stack.append(
                                (os.open(de.name, _DIR_FLAGS, dir_fd=fd), rel + b"/" + os.fsencode(de.name))
                            )
                    except OSError:
                        continue  # vanished or replaced meanwhile: the watcher reports it
                    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
                        out.append(rel + b"/" + os.fsencode(de.name))
        except OSError:
            pass  # unreadable directory: rsync reports what it cannot send
        finally:
            os.close(fd)
    return out


def _entry_mode(de: os.DirEntry[str], dev: int) -> tuple[int, bool]:
    st = de.stat(follow_symlinks=False)
    return st.st_mode, st.st_dev == dev


def covering_ancestors(paths: Sequence[bytes]) -> dict[bytes, bytes | None]:
    """For each path, the outermost other path of the list that contains it."""
    present = set(paths)
    out: dict[bytes, bytes | None] = {}
    for path in paths:
        parts = path.split(b"/")
        prefixes = (b"/".join(parts[:n]) for n in range(1, len(parts)))
        out[path] = next((p for p in prefixes if p in present), None)
    return out


def sweep_skeletons(tmpdir: str) -> None:
    """Remove delete skeletons left by killed agents (their pid is gone)."""
    for name in os.listdir(tmpdir):
        m = _SKELETON_RE.fullmatch(name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmpdir, name), ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def protect_flags(rsync: str) -> tuple[str, ...]:
    """The option that sends remote names through the protocol, by what this
    rsync offers: --secluded-args (3.3+), --protect-args (3.0-3.2), none."""
    if rsync in _protect_cache:
        return _protect_cache[rsync]
    res = _exec.run([rsync, "--help"], timeout=30)
    if res.missing or res.timed_out:
        return ()  # not cached: the ship will report the missing program
    text = res.stdout + res.stderr
    flags = next(((f,) for f in ("--secluded-args", "--protect-args") if f.encode() in text), ())
    _protect_cache[rsync] = flags
    return flags


def batch_argv(
    target: RsyncTarget, mode: str, source: bytes, protect: Sequence[str], filters: Sequence[bytes] = ()
) -> list[bytes | str]:
    """argv for one batch; names come on stdin (``--files-from=-``).
    ``filters`` (exclude rules) apply to recursive batches, the only ones
    where rsync chooses the names itself."""
    dest = target.dest if target.dest.endswith("/") else target.dest + "/"
    argv: list[bytes | str] = [target.rsync, *_BASE_FLAGS, *_MODE_FLAGS[mode], *protect]
    argv += filters if mode == "recursive" else []
    argv.append(f"--timeout={max(1, int(target.timeout_s))}")
    if dest.startswith("rsync://"):
        argv.append(f"--contimeout={max(1, int(min(target.timeout_s, 60)))}")
    argv += [*target.options, "--files-from=-", "--", source.rstrip(b"/") + b"/", dest]
    return argv


def listed_name(path: bytes) -> bytes:
    """One ``--files-from`` record. rsync skips records starting with ``#`` or
    ``;`` as comments (even NUL-separated); a leading ``./`` keeps every name
    a name and, with the implied ``--relative``, adds no path component."""
    return b"./" + path + b"\0"


_TAIL_RE = re.compile(rb"\s+")


def _stderr_tail(stderr: bytes, limit: int = 300) -> str:
    text = _TAIL_RE.sub(b" ", stderr.strip()[-limit:]).decode("utf-8", "backslashreplace")
    return f": {text}" if text else ""


class RsyncShipper:
    """One rsync target (``target.dest``: local path, rsync:// URL or host:path)."""

    restamps_parents = frozenset({ActionKind.PUT, ActionKind.DELETE})  # implied dirs; _restamp_delete_parents
    links_sent_together = True  # -H links only the names of one run: groups must travel whole

    def __init__(self, target: RsyncTarget, root: Path, excludes: Sequence[str] = ()) -> None:
        self.name = target.name
        self._filters = exclude_args(Excludes(list(excludes)))
        self.tracks: tuple[str, ...] = (target.name,)
        self._target = target
        self._root = os.fsencode(os.path.abspath(root))
        self._log = log.bind(target=target.name)
        self._swept = False

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        mine = [a for a in plan.actions if tracks_for(a, self.tracks)]
        batches = split_plan(mine, self._root)
        outcomes: dict[int, PathOutcome] = {}
        for action, outcome, reason in batches.refused:
            outcomes[id(action)] = PathOutcome(outcome, reason)
        if batches.delete:
            outcomes.update(self._run_deletes(batches.delete))
            self._restamp_delete_parents(batches, outcomes)
        for mode, todo in (("plain", batches.plain), ("recursive", batches.recursive)):
            if todo:
                outcomes.update(self._run(mode, todo, self._root))
        for owner, below in batches.specials.items():
            failed = [outcomes[id(a)] for a in below if outcomes[id(a)].outcome is not Outcome.OK]
            if failed and outcomes[owner].outcome is Outcome.OK:
                outcomes[owner] = PathOutcome(failed[0].outcome, f"special file inside: {failed[0].reason}")
        results = []
        for action in mine:
            v = outcomes[id(action)]
            results += [
                ShipResult(t, action.path, v.outcome, v.reason) for t in tracks_for(action, self.tracks)
            ]
        return results

    def close(self) -> None:
        """Nothing is held between ships."""

    def _restamp_delete_parents(self, batches: Batches, outcomes: dict[int, PathOutcome]) -> None:
        """A delete leaves the mirror's parent directory with the time of the
        delete (rsync sets no implied directory there): send each parent again
        as a directory entry, so it takes the source's mtime and mode. A parent
        this plan sends anyway is left to that; a delete whose parent could not
        be sent is RETRY (deleting again is a no-op), so the manifest never
        claims an mtime the mirror did not get."""
        sent = {a.path for a in (*batches.plain, *batches.recursive)}
        by_parent: dict[bytes, list[Action]] = {}
        for action in batches.delete:
            parent = action.path.rpartition(b"/")[0]
            if parent and parent not in sent and outcomes[id(action)].outcome is Outcome.OK:
                by_parent.setdefault(parent, []).append(action)
        parents = [
            Action(ActionKind.PUT, p) for p in sorted(by_parent) if source_kind(self._root, p) == "dir"
        ]
        if not parents:
            return
        sent_parents = self._run("plain", parents, self._root)
        for parent in parents:
            parent_outcome = sent_parents[id(parent)]
            if parent_outcome.outcome is not Outcome.OK:
                for action in by_parent[parent.path]:
                    outcomes[id(action)] = PathOutcome(
                        Outcome.RETRY, f"parent mtime not set: {parent_outcome.reason}"
                    )

    def _run_deletes(self, actions: list[Action]) -> dict[int, PathOutcome]:
        """Deletes run from a skeleton holding only parent directories; a path
        under another deleted path is done by that (recursive) delete."""
        cover = covering_ancestors([a.path for a in actions])
        listed = [a for a in actions if cover[a.path] is None]
        skeleton = ""
        try:
            if not self._swept:
                self._swept = True
                sweep_skeletons(tempfile.gettempdir())
            skeleton = tempfile.mkdtemp(prefix=f"{_SKELETON_PREFIX}{os.getpid()}-")
            skel = os.fsencode(skeleton)
            for action in listed:
                head = action.path.rpartition(b"/")[0]
                if head:
                    os.makedirs(skel + b"/" + head, exist_ok=True)
            outcomes, present = self._probe(listed, skel)
            if present:
                outcomes.update(self._run("delete", present, skel))
        except OSError as exc:  # no room for the skeleton: nothing was sent
            reason = f"cannot prepare deletes in {tempfile.gettempdir()}: {exc.strerror}"
            return {id(a): PathOutcome(Outcome.RETRY, reason) for a in actions}
        finally:
            if skeleton:
                shutil.rmtree(skeleton, ignore_errors=True)
        by_path = {a.path: outcomes[id(a)] for a in listed}
        for action in actions:
            ancestor = cover[action.path]
            if ancestor is not None:
                outcomes[id(action)] = by_path[ancestor]
        return outcomes

    def _probe(self, actions: list[Action], skel: bytes) -> tuple[dict[int, PathOutcome], list[Action]]:
        """A dry run of the deletes tells which listed paths the mirror holds
        below real directories; only those are deleted for real, because the
        real run creates the missing parents of every listed name (and fails
        below a file). Absent paths are done; a failed probe marks nothing done
        it cannot prove: unreachable is RETRY, anything unclear deletes all."""
        res, rule = self._exec("probe", actions, skel)
        if rule.exit_class is ExitClass.RETRY or rule.exit_class is ExitClass.FAILED:
            return self._outcomes(actions, res, rule), []
        found = (
            deleted_names([a.path for a in actions], res.stdout) if rule.exit_class is ExitClass.OK else None
        )
        if found is None:
            return {}, actions
        present = [a for a in actions if a.path in found]
        return {id(a): PathOutcome(Outcome.OK) for a in actions if a.path not in found}, present

    def _exec(self, mode: str, actions: list[Action], source: bytes) -> tuple[_exec.ExecResult, CodeRule]:
        argv = batch_argv(self._target, mode, source, protect_flags(self._target.rsync), self._filters)
        names = b"".join(listed_name(a.path) for a in actions)
        res = _exec.run(
            argv, timeout=self._target.timeout_s + 30, stdin=names, fifo_wait_limit=FIFO_WAIT_LIMIT_S
        )
        rule = classify_exit(
            res.returncode, timed_out=res.timed_out, missing=res.missing, fifo_blocked=res.fifo_blocked
        )
        self._log.info(
            "rsync.batch",
            mode=mode,
            paths=len(actions),
            rc=res.returncode,
            verdict=rule.exit_class.value,
            seconds=round(res.seconds, 3),
        )
        return res, rule

    def _run(self, mode: str, actions: list[Action], source: bytes) -> dict[int, PathOutcome]:
        res, rule = self._exec(mode, actions, source)
        return self._outcomes(actions, res, rule)

    def _outcomes(
        self, actions: list[Action], res: _exec.ExecResult, rule: CodeRule
    ) -> dict[int, PathOutcome]:
        if rule.exit_class is ExitClass.OK:
            return {id(a): PathOutcome(Outcome.OK) for a in actions}
        reason = f"rsync exit {res.returncode} ({rule.meaning}){_stderr_tail(res.stderr)}"
        if rule.exit_class is ExitClass.PARTIAL:
            by_path = attribute_errors([a.path for a in actions], res.stderr, reason)
            return {id(a): by_path[a.path] for a in actions}
        outcome = Outcome.FAILED if rule.exit_class is ExitClass.FAILED else Outcome.RETRY
        return {id(a): PathOutcome(outcome, reason) for a in actions}
