"""msync command lines (docs/msync.md §4, §6): every call starts with the
daemon options; paths always follow ``--``. Pure."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["daemon_options", "build_argv"]


def daemon_options(console: bytes | None, password_file: bytes | None) -> list[bytes]:
    """The options that reach msync's daemon: its console (``-c``) and
    password file (``-K``); every msync call of the agent starts with them."""
    return [*([b"-c", console] if console else []), *([b"-K", password_file] if password_file else [])]


def build_argv(
    msync: bytes,
    *,
    console: bytes | None = None,
    password_file: bytes | None = None,
    excludes: Sequence[bytes] = (),
    level: int = 2,
    recursive: bool = False,
    delete: bool = False,
    dry: bool = False,
    host: bytes | None = None,
    tokens: Sequence[bytes] = (),
    members: bool = False,
    check: bool = False,
) -> list[bytes]:
    """msync argv; paths always follow ``--``. ``recursive`` with ``delete``
    mirrors whole subtrees (extras on members removed, §4). ``check`` compares
    content at ``-v``, so every member answers ``OK`` or ``NG`` (§6)."""
    argv = [msync, *daemon_options(console, password_file)]
    if members:
        return [*argv, b"--members"]
    if check:
        return [*argv, b"-v", b"--check", *([b"-t", host] if host is not None else []), b"--", *tokens]
    argv += [b"-l", b"%d" % level]
    argv += [b"-r"] if recursive else [b"--sync"]
    argv += [b"--delete"] if delete else []
    argv += [b"-n"] if dry else []
    argv += [b"-t", host] if host is not None else []
    argv += [b"--exclude=" + pat for pat in excludes]
    return [*argv, b"--", *tokens]
