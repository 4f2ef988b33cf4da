"""Ship plans to a mirror directory on this machine.

Every mirror operation goes through directory file descriptors opened with
``O_NOFOLLOW``: a symlink inside the mirror is an entry to replace, never a
way out of it. Files are replaced atomically (temp file in the same
directory, then rename); mode, mtime (ns), symlink targets and, as root,
ownership follow the source. Directory mtimes are restamped last, after their
children changed, and temp files a killed ship left behind are swept from a
directory the first time this process ships into it. Fifos, sockets and
devices are not replicated: the mirror holds nothing where the source has one.

Durability is group-committed: one ``syncfs`` of the mirror's filesystem
after the whole plan, before any path is reported OK, instead of an fsync
per file (which capped shipping at the disk's sync rate).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import structlog

from agent.ship.actions import Action, ActionKind, Plan, tracks_for
from agent.ship.base import Outcome, ShipResult
from agent.ship.local.fsops import (
    DIR_FLAGS,
    NOT_A_DIR,
    TMP_FLAGS,
    copy_bytes,
    lstat_at,
    mount_points,
    open_chain,
    remove,
    replace,
    split_path,
    sweep_temps,
    syncfs,
    tmp_name,
)
from agent.ship.local.links import LinkedCopies
from agent.ship.targets import LocalTarget
from agent.tree.excludes import Excludes
from agent.tree.walk import relpath_problem

__all__ = ["LocalShipper", "classify_oserror", "SourceChanged"]

log = structlog.get_logger()

_NAME_ERRNOS = {errno.ENAMETOOLONG: "name too long for the mirror", errno.EILSEQ: "mirror rejects the name"}


class SourceChanged(Exception):
    """The source changed while it was being copied: ship it again later."""


def classify_oserror(exc: OSError) -> tuple[Outcome, str]:
    """A name the mirror filesystem cannot hold is permanent; everything else
    (read-only, full, permission, I/O) is the target being down: retry."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if code in _NAME_ERRNOS:
        return Outcome.FAILED, f"{_NAME_ERRNOS[code]} ({name})"
    return Outcome.RETRY, f"target down: {exc.strerror or exc} ({name})"


class LocalShipper:
    """A mirror directory (``target.path``) of the tree at ``root``."""

    restamps_parents = frozenset({ActionKind.PUT, ActionKind.DELETE})  # _restamp_dirs

    def __init__(self, target: LocalTarget, root: Path, excludes: Sequence[str] = ()) -> None:
        self.name = target.name
        self._excludes = Excludes(list(excludes))
        self.tracks: tuple[str, ...] = (target.name,)
        self._mirror = os.fsencode(target.path)
        self._root = os.fsencode(root)
        self._as_root = os.geteuid() == 0
        self._swept: set[bytes] = set()  # mirror dirs already swept of stale temp files
        self._linked = LinkedCopies()  # recent copies of multiply-linked files: keeps groups on the mirror
        self._log = log.bind(target=target.name)

    def close(self) -> None:
        """Only the directories of recent copies of multiply-linked files are held between ships."""
        self._linked.clear()

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        mine = [a for a in plan.actions if tracks_for(a, self.tracks)]
        try:
            verdicts = self._ship_all(mine)
        except OSError as exc:
            outcome, reason = classify_oserror(exc)
            self._log.warning("ship.target_down", reason=reason)
            verdicts = [(outcome, reason)] * len(mine)
        results = []
        for action, (outcome, reason) in zip(mine, verdicts):
            results += [ShipResult(t, action.path, outcome, reason) for t in tracks_for(action, self.tracks)]
        return results

    def _ship_all(self, actions: Sequence[Action]) -> list[tuple[Outcome, str]]:
        os.makedirs(self._mirror, exist_ok=True)
        mroot = os.open(self._mirror, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                sroot = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                return [(Outcome.RETRY, f"source root unreadable: {exc.strerror}")] * len(actions)
            try:
                touched: set[bytes] = set()
                verdicts = [self._ship_one(sroot, mroot, a, touched) for a in actions]
                self._restamp_dirs(sroot, mroot, touched)
                syncfs(mroot)  # nothing is reported OK before it is on disk
                return verdicts
            finally:
                os.close(sroot)
        finally:
            os.close(mroot)

    def _ship_one(self, sroot: int, mroot: int, action: Action, touched: set[bytes]) -> tuple[Outcome, str]:
        problem = relpath_problem(action.path)
        if problem:
            return Outcome.FAILED, problem
        try:
            if action.kind is ActionKind.DELETE:
                self._delete(mroot, action.path, touched)
            else:
                self._put(sroot, mroot, action.path, action.recursive, touched)
        except SourceChanged as exc:
            return Outcome.RETRY, f"source changed during copy: {exc}"
        except OSError as exc:
            outcome, reason = classify_oserror(exc)
            self._log.warning("ship.path_error", path=action.path, outcome=outcome.value, reason=reason)
            return outcome, reason
        return Outcome.OK, ""

    def _delete(self, mroot: int, path: bytes, touched: set[bytes]) -> None:
        parents, name = split_path(path)
        opened = open_chain(mroot, parents)
        if opened is None:
            return  # a parent is missing or not a real directory: nothing there
        mdir, _ = opened
        try:
            remove(mdir, name)
            touched.add(b"/".join(parents))  # also sweeps a temp file of a killed copy
        finally:
            os.close(mdir)

    def _put(self, sroot: int, mroot: int, path: bytes, recursive: bool, touched: set[bytes]) -> None:
        parents, name = split_path(path)
        opened = open_chain(sroot, parents)
        if opened is None or lstat_at(name, opened[0]) is None:
            if opened is not None:
                os.close(opened[0])
            self._delete(mroot, path, touched)  # gone from the source: gone from the mirror
            return
        sdir, sstats = opened
        try:
            mdir = self._mirror_parents(mroot, parents, sstats, touched)
            try:
                self._put_entry(sdir, mdir, name, path if recursive else None)
                touched.add(b"/".join(parents))
            finally:
                os.close(mdir)
        finally:
            os.close(sdir)

    def _mirror_parents(
        self, mroot: int, parents: Sequence[bytes], sstats: Sequence[os.stat_result], touched: set[bytes]
    ) -> int:
        """Open (creating or replacing as needed) the mirror's parent directories."""
        fd = os.dup(mroot)
        try:
            for i, part in enumerate(parents):
                try:
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in NOT_A_DIR:
                        raise
                    remove(fd, part)  # a file or symlink where a directory belongs
                    os.mkdir(part, 0o700, dir_fd=fd)
                    nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
                    self._set_owner_mode(nfd, sstats[i])
                    touched.add(b"/".join(parents[:i]))
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _set_owner_mode(self, fd: int, st: os.stat_result) -> None:
        if self._as_root:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))

    def _put_entry(self, sdir: int, mdir: int, name: bytes, tree: bytes | None) -> None:
        """Bring ``name`` to the source's state; ``tree``, its root-relative
        path, when a directory goes out with its whole subtree."""
        st = lstat_at(name, sdir)
        if st is None:
            remove(mdir, name)
        elif stat.S_ISREG(st.st_mode):
            self._put_file(sdir, mdir, name)
        elif stat.S_ISDIR(st.st_mode):
            self._put_dir(sdir, mdir, name, tree)
        elif stat.S_ISLNK(st.st_mode):
            self._put_symlink(sdir, mdir, name, st)
        else:  # fifo, socket, device: not replicated, so absent on the mirror
            remove(mdir, name)
            self._log.debug("ship.skip_special", name=name)

    def _put_file(self, sdir: int, mdir: int, name: bytes) -> None:
        try:
            sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sdir)
        except FileNotFoundError:
            remove(mdir, name)
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SourceChanged("became a symlink") from exc
            raise
        try:
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceChanged("no longer a regular file")
            if self._linked.link(st, mdir, name):
                return  # another name of a file copied in this plan: the mirror keeps the group
            tmp = tmp_name()
            tfd = os.open(tmp, TMP_FLAGS, 0o600, dir_fd=mdir)
            try:
                try:
                    self._fill(sfd, tfd, st)
                finally:
                    os.close(tfd)
                replace(mdir, tmp, name)
                self._linked.remember(st, mdir, name)
            except BaseException:
                remove(mdir, tmp)
                raise
        finally:
            os.close(sfd)

    def _fill(self, sfd: int, tfd: int, st: os.stat_result) -> None:
        """Copy content and metadata into the temp file; make it durable."""
        copied = copy_bytes(sfd, tfd)
        after = os.fstat(sfd)
        if copied != st.st_size or (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            raise SourceChanged(f"{copied} bytes copied, size now {after.st_size}")
        self._set_owner_mode(tfd, st)
        os.utime(tfd, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _put_symlink(self, sdir: int, mdir: int, name: bytes, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=sdir)
        except FileNotFoundError:
            remove(mdir, name)
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise SourceChanged("no longer a symlink") from exc
            raise
        tmp = tmp_name()
        os.symlink(target, tmp, dir_fd=mdir)
        try:
            if self._as_root:
                os.chown(tmp, st.st_uid, st.st_gid, dir_fd=mdir, follow_symlinks=False)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=mdir, follow_symlinks=False)
            replace(mdir, tmp, name)
        except BaseException:
            remove(mdir, tmp)
            raise

    def _put_dir(self, sdir: int, mdir: int, name: bytes, tree: bytes | None) -> None:
        existing = lstat_at(name, mdir)
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            remove(mdir, name)
            existing = None
        if existing is None:
            os.mkdir(name, 0o700, dir_fd=mdir)
        try:
            sfd = os.open(name, DIR_FLAGS, dir_fd=sdir)
        except OSError as exc:
            if exc.errno not in NOT_A_DIR:
                raise
            raise SourceChanged("directory replaced or removed") from exc
        try:
            mfd = os.open(name, DIR_FLAGS, dir_fd=mdir)
            try:
                if tree is not None:
                    self._sync_children(sfd, mfd, tree)
                st = os.fstat(sfd)
                self._set_owner_mode(mfd, st)
                os.utime(mfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(mfd)
        finally:
            os.close(sfd)

    def _sync_children(self, sfd: int, mfd: int, rel: bytes) -> None:
        """Make the mirror directory's entries those of the source directory
        ``rel``. Excluded names are not replicated: the source's are not sent,
        and what the mirror holds at an excluded path is left alone."""
        listed = {os.fsencode(n) for n in os.listdir(sfd)}
        for extra in {os.fsencode(n) for n in os.listdir(mfd)} - listed:
            if not self._excluded(rel, extra, mfd):
                remove(mfd, extra)
        for child in sorted(listed - mount_points(sfd, listed)):
            if not self._excluded(rel, child, sfd):
                self._put_entry(sfd, mfd, child, rel + b"/" + child)

    def _excluded(self, rel: bytes, name: bytes, dir_fd: int) -> bool:
        if not self._excludes:
            return False
        st = lstat_at(name, dir_fd)
        return self._excludes.match_self(rel + b"/" + name, st is not None and stat.S_ISDIR(st.st_mode))

    def _restamp_dirs(self, sroot: int, mroot: int, touched: set[bytes]) -> None:
        """Give changed mirror directories their source mtime, deepest first
        (their entries become durable with the plan's syncfs)."""
        for path in sorted(touched, key=lambda p: (-p.count(b"/"), p)):
            parts = path.split(b"/") if path else []
            src = open_chain(sroot, parts)
            dst = open_chain(mroot, parts)
            try:
                if src is not None and dst is not None:
                    if path not in self._swept:
                        sweep_temps(src[0], dst[0])
                        self._swept.add(path)
                    st = os.fstat(src[0])
                    os.utime(dst[0], ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                for opened in (src, dst):
                    if opened is not None:
                        os.close(opened[0])
