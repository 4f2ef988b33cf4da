"""Changes made to the watched tree, as real file-system operations.

Each function performs its operations and returns how many it made, so a
test can state what the mirrors must have caught up with. Names are bytes;
one hostile name (newline, leading ``-``, ``$(...)``, non-UTF-8) rides along.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOSTILE", "seed", "steady_changes", "churn"]

HOSTILE = b"-rf \n$(touch pwned)\xff.txt"


def _write(path: bytes, data: bytes, mode: int | None = None) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
    if mode is not None:
        os.chmod(path, mode)


def seed(root: Path) -> int:
    """A small tree: nested dirs, files of a few sizes, a symlink, a hostile name."""
    r = os.fsencode(root)
    j = lambda *parts: os.path.join(r, *parts)  # noqa: E731
    for d in (b"docs", b"docs/old", b"app", b"app/static", b"app/static/img"):
        os.mkdir(j(d))
    _write(j(b"index.html"), b"<h1>hello</h1>\n")
    _write(j(b"docs", b"a.txt"), b"alpha\n" * 100)
    _write(j(b"docs", b"old", b"b.txt"), b"beta\n")
    _write(j(b"app", b"run.sh"), b"#!/bin/sh\necho run\n", 0o755)
    _write(j(b"app", b"static", b"img", b"logo.bin"), bytes(range(256)) * 64)
    _write(j(b"app", b"static", b"style.css"), b"body{}\n")
    _write(j(HOSTILE), b"hostile\n")
    os.symlink(b"docs/a.txt", j(b"latest"))
    return 13


def steady_changes(root: Path) -> int:
    """Creates, edits, chmods, renames, deletes and one directory move."""
    r = os.fsencode(root)
    j = lambda *parts: os.path.join(r, *parts)  # noqa: E731
    _write(j(b"new.txt"), b"created\n")  # create
    os.mkdir(j(b"fresh"))
    _write(j(b"fresh", b"inner.txt"), b"inside a new dir\n")
    _write(j(b"index.html"), b"<h1>edited</h1>\n")  # edit (truncate + write)
    with open(j(b"docs", b"a.txt"), "ab") as fh:  # edit (append)
        fh.write(b"appended\n")
    os.chmod(j(b"app", b"static", b"style.css"), 0o600)  # chmod file
    os.chmod(j(b"docs", b"old"), 0o750)  # chmod dir
    os.rename(j(b"docs", b"old", b"b.txt"), j(b"docs", b"b-renamed.txt"))  # rename across dirs
    os.rename(j(HOSTILE), j(HOSTILE + b".moved"))  # rename of a hostile name
    os.unlink(j(b"app", b"run.sh"))  # delete
    os.unlink(j(b"latest"))
    os.symlink(b"index.html", j(b"latest"))  # symlink retarget
    os.rename(j(b"app", b"static"), j(b"static"))  # directory move (with content)
    _write(j(b"static", b"after-move.css"), b"written after the move\n")
    os.rmdir(j(b"docs", b"old"))  # delete an (emptied) directory
    return 15


def churn(root: Path, n: int, tag: str) -> int:
    """Exactly ``n`` changes in ``root/tag``: half creates, then edits, chmods,
    renames and deletes of those files (each a tenth of ``n`` or more)."""
    base = root / tag
    base.mkdir()
    creates = n // 2
    edits, chmods, renames = n // 5, n // 10, n // 10
    deletes = n - creates - edits - chmods - renames - 1  # the mkdir above counts
    files = [base / f"d{i % 10}" / f"f{i:05d}" for i in range(creates)]
    for d in range(min(10, creates)):
        (base / f"d{d}").mkdir()
    deletes -= min(10, creates)
    for i, path in enumerate(files):
        path.write_bytes(f"{tag} {i}\n".encode() * (1 + i % 7))
    for path in files[:edits]:
        with open(path, "ab") as fh:
            fh.write(b"edited\n")
    for path in files[edits : edits + chmods]:
        path.chmod(0o640)
    moved = files[edits + chmods : edits + chmods + renames]
    for path in moved:
        path.rename(path.with_name(path.name + ".r"))
    for path in files[-deletes:]:
        path.unlink()
    return n
