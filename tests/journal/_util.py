"""Shared helpers for journal tests: child processes and polling."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import lmdb

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def child_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "tests.journal._children", *args]


def spawn(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, *child_argv(*args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_child(
    *args: str, prefix: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *child_argv(*args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """End a child this test started, by pid, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def live_value(jdir: Path, db: bytes, key: bytes) -> bytes:
    """The value LMDB holds now for ``key`` in database ``db`` (read with LMDB
    itself, no lock taken, so nothing in the directory changes)."""
    env = lmdb.open(str(jdir), max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            raw = txn.get(key, db=env.open_db(db, txn=txn, create=False))
    finally:
        env.close()
    assert raw is not None, (db, key)
    return bytes(raw)


def _flip_byte(path: Path, at: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0x40]), at)
    finally:
        os.close(fd)


def flip_once(path: Path, needle: bytes, offset: int) -> None:
    """Flip one bit ``offset`` bytes into the only occurrence of ``needle``."""
    hits = [m.start() for m in re.finditer(re.escape(needle), path.read_bytes())]
    assert len(hits) == 1, f"{needle!r} occurs at {hits}"
    _flip_byte(path, hits[0] + offset)


def flip_value(jdir: Path, db: bytes, key: bytes, offset: int) -> bytes:
    """Damage the live value of ``key`` in ``db``, ``offset`` bytes into it;
    returns the damaged value as LMDB now reads it.

    The value is found in ``data.mdb`` by content (key and value). LMDB may
    have left identical stale copies on free pages: each copy is flipped in
    turn and kept only if LMDB then reads the damaged value, else flipped back."""
    value = live_value(jdir, db, key)
    data = jdir / "data.mdb"
    for hit in [m.start() for m in re.finditer(re.escape(key + value), data.read_bytes())]:
        _flip_byte(data, hit + len(key) + offset)
        damaged = live_value(jdir, db, key)
        if damaged != value:
            return damaged
        _flip_byte(data, hit + len(key) + offset)  # a stale copy: put it back
    raise AssertionError(f"no live copy of {key!r} found in {data}")


__all__ = [
    "PYTHON",
    "ROOT",
    "child_argv",
    "run_child",
    "spawn",
    "stop",
    "wait_until",
    "live_value",
    "flip_once",
    "flip_value",
]
