"""How much of LMDB's data file must exist: the truncation check's arithmetic.

LMDB maps ``data.mdb``; reading a page past the end of the file kills the
process with SIGBUS, so the journal checks the file's length before reading.
The bound is not ``last_pgno``: a page allocated and freed in the same
transaction is never written, so the file may end before ``last_pgno`` while
every page past its end is free. The highest page that may be read is the
highest one that is not on the freelist, found here by reading the meta pages
and the freelist with plain ``pread`` (no mapping, so no SIGBUS).

Layout facts (LMDB 0.9, 64-bit, little-endian host): a page starts with a
16-byte header (pgno u64, pad u16, flags u16, lower u16, upper u16 or, for
overflow pages, a u32 page count); a meta page holds, after that header, magic
u32, version u32, address u64, mapsize u64, two 48-byte database records
(FREE then MAIN: pad u32 [the page size, for FREE], flags u16, depth u16,
branch/leaf/overflow pages, entries, root: u64 each), last_pgno u64, txnid
u64. Nodes are lo u16, hi u16, flags u16, ksize u16, key, data. Freelist
values are page-number lists: a u64 count, then that many u64 page numbers.
"""

from __future__ import annotations

import os
import struct

__all__ = ["FileLayoutError", "required_size"]

_HEADER = struct.Struct("<QHHHH")
_META = struct.Struct("<II8x8x" + "IHHQQQQQ" + "48x" + "QQ")
_NODE = struct.Struct("<HHHH")
_U64 = struct.Struct("<Q")
_MAGIC = 0xBEEFC0DE
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA = 0x01
_NO_PAGE = 2**64 - 1
_MAX_FREE_PAGES = 1 << 16  # freelist pages read at most: a bound, not an expectation


class FileLayoutError(Exception):
    """The file does not look like what LMDB wrote (or changed while read)."""


def required_size(fd: int, txnid: int) -> int:
    """Bytes the file needs for the snapshot of transaction ``txnid``: up to and
    including the highest page not on that snapshot's freelist."""
    psize, last_pgno, free_root = _meta(fd, txnid)
    free = _free_pages(fd, psize, free_root) if free_root != _NO_PAGE else set()
    top = last_pgno
    while top in free:
        top -= 1
    return (top + 1) * psize


def _meta(fd: int, txnid: int) -> tuple[int, int, int]:
    """(page size, last_pgno, freelist root) from the meta page of ``txnid``."""
    first = os.pread(fd, _META.size + _HEADER.size, 0)
    if len(first) < _META.size + _HEADER.size:
        raise FileLayoutError("no meta page")
    psize = _META.unpack_from(first, _HEADER.size)[2]
    if psize < 512 or psize & (psize - 1):
        raise FileLayoutError(f"implausible page size {psize}")
    for pgno in (0, 1):
        raw = first if pgno == 0 else os.pread(fd, _META.size + _HEADER.size, psize)
        if len(raw) < _META.size + _HEADER.size:
            raise FileLayoutError("meta page cut short")
        magic, _ver, _psize, _fl, _depth, _br, _lf, _ov, _ent, root, last, tid = _META.unpack_from(
            raw, _HEADER.size
        )
        if magic == _MAGIC and tid == txnid:
            return psize, last, root
    raise FileLayoutError(f"no meta page for transaction {txnid}")


def _page(fd: int, psize: int, pgno: int) -> bytes:
    raw = os.pread(fd, psize, pgno * psize)
    if len(raw) < psize:
        raise FileLayoutError(f"freelist page {pgno} lies past the end of the file")
    if _HEADER.unpack_from(raw)[0] != pgno:
        raise FileLayoutError(f"page {pgno} does not carry its own number")
    return raw


def _free_pages(fd: int, psize: int, root: int) -> set[int]:
    """Every page number on the freelist B-tree rooted at ``root``."""
    free: set[int] = set()
    stack, seen = [root], 0
    while stack:
        seen += 1
        if seen > _MAX_FREE_PAGES:
            raise FileLayoutError("freelist larger than any journal writes")
        page = _page(fd, psize, stack.pop())
        _pgno, _pad, flags, lower, _upper = _HEADER.unpack_from(page)
        if not flags & (_P_BRANCH | _P_LEAF) or not _HEADER.size <= lower <= psize:
            raise FileLayoutError(f"freelist page has flags {flags:#x}")
        for i in range((lower - _HEADER.size) // 2):
            (at,) = struct.unpack_from("<H", page, _HEADER.size + 2 * i)
            if at + _NODE.size > psize:
                raise FileLayoutError("freelist node out of its page")
            lo, hi, nflags, ksize = _NODE.unpack_from(page, at)
            if flags & _P_BRANCH:
                stack.append(lo | hi << 16 | nflags << 32)
            else:
                free.update(_id_list(fd, psize, page, at + _NODE.size + ksize, lo | hi << 16, nflags))
    return free


def _id_list(fd: int, psize: int, page: bytes, at: int, size: int, flags: int) -> tuple[int, ...]:
    """The page numbers of one freelist value (stored in the leaf, or on overflow pages)."""
    if flags & _F_BIGDATA:
        (first,) = _U64.unpack_from(page, at)
        data = os.pread(fd, size, first * psize + _HEADER.size)
    else:
        data = page[at : at + size]
    if len(data) < size or size < 8:
        raise FileLayoutError("freelist value cut short")
    (count,) = _U64.unpack_from(data)
    if 8 + 8 * count > size:
        raise FileLayoutError("freelist value longer than its node")
    return struct.unpack_from(f"<{count}Q", data, 8)
