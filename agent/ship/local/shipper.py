"""Ship plans to a mirror directory on this machine.

Every mirror operation goes through directory file descriptors opened with
``O_NOFOLLOW``: a symlink inside the mirror is an entry to replace, never a
way out of it. Files are replaced atomically (temp file in the same
directory, then rename); mode, mtime (ns), symlink targets and, as root,
ownership follow the source. Directory mtimes are settled last, after their
children changed, and temp files a killed ship left behind are swept from a
directory the first time this process ships into it. Fifos, sockets and
devices are not replicated: the mirror holds nothing where the source has one.

Durability is group-committed: one ``syncfs`` of the mirror's filesystem
after the whole plan, before any path is reported OK, instead of an fsync
per file (which capped shipping at the disk's sync rate).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import structlog

from agent.ship.base import Outcome, ShipResult
from agent.ship.local.links import LinkedCopies
from agent.ship.plan import Action, ActionKind, Plan
from agent.ship.targets import LocalTarget
from agent.tree.excludes import Excludes

__all__ = ["LocalShipper", "path_problem", "tracks_for", "classify_oserror", "SourceChanged"]

log = structlog.get_logger()

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIR = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_REPLACE_ERRNOS = (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR)
_NAME_ERRNOS = {errno.ENAMETOOLONG: "name too long for the mirror", errno.EILSEQ: "mirror rejects the name"}
_COPY_CHUNK = 1 << 22
_TMP_RE = re.compile(rb"\.msync-agent\.[0-9a-f]{16}\.tmp")


_LIBC = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> None:
    """Flush every dirty page of the filesystem holding ``fd`` (Linux syncfs)."""
    if _LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class SourceChanged(Exception):
    """The source changed while it was being copied: ship it again later."""


def path_problem(path: bytes) -> str | None:
    """Why ``path`` is not a usable root-relative path, or None."""
    if not path:
        return "empty path"
    if path.startswith(b"/") or b"\0" in path:
        return "path is absolute or holds a NUL byte"
    if any(part in (b"", b".", b"..") for part in path.split(b"/")):
        return "path has an empty, '.' or '..' component"
    return None


def tracks_for(action: Action, tracks: Sequence[str]) -> tuple[str, ...]:
    """The shipper's tracks this action asks for (all of them when it names none)."""
    return tuple(t for t in tracks if not action.tracks or t in action.tracks)


def classify_oserror(exc: OSError) -> tuple[Outcome, str]:
    """A name the mirror filesystem cannot hold is permanent; everything else
    (read-only, full, permission, I/O) is the target being down: retry."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if code in _NAME_ERRNOS:
        return Outcome.FAILED, f"{_NAME_ERRNOS[code]} ({name})"
    return Outcome.RETRY, f"target down: {exc.strerror or exc} ({name})"


def _split(path: bytes) -> tuple[list[bytes], bytes]:
    *parents, name = path.split(b"/")
    return parents, name


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _mount_points(dir_fd: int, names: set[bytes]) -> set[bytes]:
    """Entries of a source directory on another filesystem: the tree stops
    there, so they are neither copied nor removed from the mirror."""
    dev = os.fstat(dir_fd).st_dev
    return {n for n in names if (st := _lstat(n, dir_fd)) is not None and st.st_dev != dev}


def _open_chain(root_fd: int, parts: Sequence[bytes]) -> tuple[int, list[os.stat_result]] | None:
    """Open ``parts`` below ``root_fd`` as real directories only; None when one
    is missing or is not a directory (a symlink counts as not a directory)."""
    fd, stats = os.dup(root_fd), []
    for part in parts:
        try:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NOT_A_DIR:
                return None
            raise
        os.close(fd)
        fd = nfd
        stats.append(os.fstat(fd))
    return fd, stats


def _remove(dir_fd: int, name: bytes) -> bool:
    """Remove ``name`` (a whole tree for a directory) without following links."""
    st = _lstat(name, dir_fd)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                _remove(fd, os.fsencode(child))
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    return True


def _replace(dir_fd: int, tmp: bytes, name: bytes) -> None:
    """Rename ``tmp`` over ``name``; a directory in the way is removed first."""
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in _REPLACE_ERRNOS:
            raise
        _remove(dir_fd, name)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _copy_bytes(src: int, dst: int) -> int:
    copied = 0
    try:
        while n := os.copy_file_range(src, dst, _COPY_CHUNK):
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or copied:
            raise
    while chunk := os.read(src, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:  # a short write (a filling disk) must not pass for a full one
            view = view[os.write(dst, view) :]
        copied += len(chunk)
    return copied


def _tmp_name() -> bytes:
    return b".msync-agent." + secrets.token_hex(8).encode() + b".tmp"


def _sweep_temps(sdir: int, mdir: int) -> None:
    """Remove temp files a killed ship left in a mirror directory (ours are
    all renamed or removed by now); a source entry of the same name stays."""
    for name in map(os.fsencode, os.listdir(mdir)):
        if _TMP_RE.fullmatch(name) and _lstat(name, sdir) is None:
            _remove(mdir, name)


class LocalShipper:
    """A mirror directory (``target.path``) of the tree at ``root``."""

    settles_parents = frozenset({ActionKind.PUT, ActionKind.DELETE})  # _settle_dirs

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
                self._settle_dirs(sroot, mroot, touched)
                _syncfs(mroot)  # nothing is reported OK before it is on disk
                return verdicts
            finally:
                os.close(sroot)
        finally:
            os.close(mroot)

    def _ship_one(self, sroot: int, mroot: int, action: Action, touched: set[bytes]) -> tuple[Outcome, str]:
        problem = path_problem(action.path)
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
        parents, name = _split(path)
        opened = _open_chain(mroot, parents)
        if opened is None:
            return  # a parent is missing or not a real directory: nothing there
        mdir, _ = opened
        try:
            _remove(mdir, name)
            touched.add(b"/".join(parents))  # also sweeps a temp file of a killed copy
        finally:
            os.close(mdir)

    def _put(self, sroot: int, mroot: int, path: bytes, recursive: bool, touched: set[bytes]) -> None:
        parents, name = _split(path)
        opened = _open_chain(sroot, parents)
        if opened is None or _lstat(name, opened[0]) is None:
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
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in _NOT_A_DIR:
                        raise
                    _remove(fd, part)  # a file or symlink where a directory belongs
                    os.mkdir(part, 0o700, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
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
        st = _lstat(name, sdir)
        if st is None:
            _remove(mdir, name)
        elif stat.S_ISREG(st.st_mode):
            self._put_file(sdir, mdir, name)
        elif stat.S_ISDIR(st.st_mode):
            self._put_dir(sdir, mdir, name, tree)
        elif stat.S_ISLNK(st.st_mode):
            self._put_symlink(sdir, mdir, name, st)
        else:  # fifo, socket, device: not replicated, so absent on the mirror
            _remove(mdir, name)
            self._log.debug("ship.skip_special", name=name)

    def _put_file(self, sdir: int, mdir: int, name: bytes) -> None:
        try:
            sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sdir)
        except FileNotFoundError:
            _remove(mdir, name)
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
            tmp = _tmp_name()
            tfd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=mdir
            )
            try:
                try:
                    self._fill(sfd, tfd, st)
                finally:
                    os.close(tfd)
                _replace(mdir, tmp, name)
                self._linked.remember(st, mdir, name)
            except BaseException:
                _remove(mdir, tmp)
                raise
        finally:
            os.close(sfd)

    def _fill(self, sfd: int, tfd: int, st: os.stat_result) -> None:
        """Copy content and metadata into the temp file; make it durable."""
        copied = _copy_bytes(sfd, tfd)
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
            _remove(mdir, name)
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise SourceChanged("no longer a symlink") from exc
            raise
        tmp = _tmp_name()
        os.symlink(target, tmp, dir_fd=mdir)
        try:
            if self._as_root:
                os.chown(tmp, st.st_uid, st.st_gid, dir_fd=mdir, follow_symlinks=False)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=mdir, follow_symlinks=False)
            _replace(mdir, tmp, name)
        except BaseException:
            _remove(mdir, tmp)
            raise

    def _put_dir(self, sdir: int, mdir: int, name: bytes, tree: bytes | None) -> None:
        existing = _lstat(name, mdir)
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            _remove(mdir, name)
            existing = None
        if existing is None:
            os.mkdir(name, 0o700, dir_fd=mdir)
        try:
            sfd = os.open(name, _DIR_FLAGS, dir_fd=sdir)
        except OSError as exc:
            if exc.errno not in _NOT_A_DIR:
                raise
            raise SourceChanged("directory replaced or removed") from exc
        try:
            mfd = os.open(name, _DIR_FLAGS, dir_fd=mdir)
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
                _remove(mfd, extra)
        for child in sorted(listed - _mount_points(sfd, listed)):
            if not self._excluded(rel, child, sfd):
                self._put_entry(sfd, mfd, child, rel + b"/" + child)

    def _excluded(self, rel: bytes, name: bytes, dir_fd: int) -> bool:
        if not self._excludes:
            return False
        st = _lstat(name, dir_fd)
        return self._excludes.match_self(rel + b"/" + name, st is not None and stat.S_ISDIR(st.st_mode))

    def _settle_dirs(self, sroot: int, mroot: int, touched: set[bytes]) -> None:
        """Give changed mirror directories their source mtime, deepest first
        (their entries become durable with the plan's syncfs)."""
        for path in sorted(touched, key=lambda p: (-p.count(b"/"), p)):
            parts = path.split(b"/") if path else []
            src = _open_chain(sroot, parts)
            dst = _open_chain(mroot, parts)
            try:
                if src is not None and dst is not None:
                    if path not in self._swept:
                        _sweep_temps(src[0], dst[0])
                        self._swept.add(path)
                    st = os.fstat(src[0])
                    os.utime(dst[0], ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                for opened in (src, dst):
                    if opened is not None:
                        os.close(opened[0])
