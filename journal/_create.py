"""Creating a new data file so that a kill never leaves half of one.

LMDB creates ``data.mdb`` first and writes its two meta pages after: a
process killed in between leaves an empty file, which every later open must
refuse (it cannot be told from a journal cut to nothing). The agent therefore
builds the file in a side directory and renames it into the journal once its
meta pages are on disk, so a ``data.mdb`` in a journal always starts with
them. What a killed creation leaves in the side directory is removed by the
next agent, which holds the writer lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import lmdb

__all__ = ["SIDE_NAME", "prepare", "abandon", "clear_side", "create_data_file"]

SIDE_NAME = "creating"  # the side directory, inside the journal directory


def prepare(jdir: Path, writer: bool, new: bool, map_size: int) -> None:
    """Before the writer (the agent, holding the lock) opens LMDB: clear what a
    killed creation left, and build a ``new`` data file aside."""
    if writer:
        clear_side(jdir)
        if new:
            create_data_file(jdir, map_size)


def abandon(jdir: Path, writer: bool) -> None:
    """After a refused or failed open of a new journal: best effort."""
    if writer:
        with contextlib.suppress(OSError):
            clear_side(jdir)


def clear_side(jdir: Path) -> None:
    """Remove the side directory a killed creation left (only plain entries
    are ever made there; nothing below it is followed)."""
    side = jdir / SIDE_NAME
    try:
        names = os.listdir(side)
    except (FileNotFoundError, NotADirectoryError):
        if side.is_symlink() or side.is_file():
            side.unlink()
        return
    for name in names:
        os.unlink(side / name)
    os.rmdir(side)


def create_data_file(jdir: Path, map_size: int) -> None:
    """Make ``jdir/data.mdb`` a valid empty LMDB file, atomically."""
    clear_side(jdir)
    side = jdir / SIDE_NAME
    os.mkdir(side, 0o700)
    env = lmdb.open(str(side), map_size=map_size, max_dbs=16, lock=False, mode=0o600, sync=True)
    try:
        env.sync(True)
    finally:
        env.close()
    _fsync_path(side)
    os.rename(side / "data.mdb", jdir / "data.mdb")
    _fsync_path(jdir)
    clear_side(jdir)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
