"""Log records (a batch's entries, column by column) and the log built of them:
big batches split into several records, reads from the middle of a record,
and compaction cutting through a record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import CodecError, Entry, Journal, Op
from journal._log import MAX_RECORD_ENTRIES
from journal._records import decode_record, encode_columns, encode_record, record_count, record_entry
from journal.codec import decode_entry, encode_entry

from .test_codec import entries as entry_st


@given(st.lists(entry_st, max_size=20), st.data())
def test_record_round_trip_and_slices(batch: list[Entry], data: st.DataObject) -> None:
    """A record decodes to its entries, any slice of them, and each one on its own."""
    raw = encode_record(batch)
    assert record_count(raw) == len(batch)
    assert decode_record(raw) == batch
    skip = data.draw(st.integers(0, len(batch)))
    limit = data.draw(st.none() | st.integers(0, len(batch)))
    want = batch[skip:] if limit is None else batch[skip : skip + limit]
    assert decode_record(raw, skip, limit) == want
    for i, entry in enumerate(batch):
        assert decode_entry(record_entry(raw, i)) == entry
        assert record_entry(raw, i) == encode_entry(entry)


@given(entry_st)
def test_a_record_of_one_entry_is_the_column_layout(entry: Entry) -> None:
    """The one-entry shortcut writes exactly the bytes of the general layout."""
    assert encode_record([entry]) == encode_columns([entry])


@given(st.lists(entry_st, min_size=1, max_size=5), st.data())
def test_damaged_record_raises(batch: list[Entry], data: st.DataObject) -> None:
    """A record cut short or padded is rejected whole, even when one entry is asked for."""
    raw = encode_record(batch)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CodecError):
        decode_record(raw[:cut], 0, 1)
    with pytest.raises(CodecError):
        decode_record(raw + data.draw(st.binary(min_size=1, max_size=8)), 0, 1)


def test_unknown_op_and_out_of_range_values_raise() -> None:
    """A foreign op byte is refused on read; values the format cannot hold on write."""
    raw = bytearray(encode_record([Entry(Op.CHANGE, b"p")]))
    raw[5] = 0x77  # the op column starts after the 5-byte head
    with pytest.raises(CodecError):
        decode_record(bytes(raw))
    with pytest.raises(CodecError):
        encode_record([Entry(Op.CHANGE, b"p", time_ns=-1)])
    with pytest.raises(CodecError):
        encode_record([Entry(Op.CHANGE, b"p", flags=256)])
    with pytest.raises(CodecError):
        record_entry(encode_record([Entry(Op.CHANGE, b"p")]), 1)


def big_batch(n: int, tag: bytes, t0: int) -> list[Entry]:
    """n entries; every 7th a MOVE (a record's destination column)."""
    out = []
    for i in range(n):
        if i % 7 == 3:
            out.append(Entry(Op.MOVE, b"%s/m%d" % (tag, i), b"%s/f%d" % (tag, i - 1), t0 + i))
        else:
            out.append(Entry(Op.CHANGE, b"%s/f%d" % (tag, i % 5000), time_ns=t0 + i))
    return out


def test_big_batches_span_records(tmp_path) -> None:
    """A batch larger than a record reads back whole, and from any seq."""
    n = 2 * MAX_RECORD_ENTRIES + 5
    first, second = big_batch(n, b"a", 1_000), big_batch(3, b"a", 100_000)
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t", "u"]) as j:
        assert j.append(first) == (1, n)
        assert j.append(second) == (n + 1, n + 3)
        log = first + second
        assert [r.entry for r in j.since(seq=0)] == log
        assert j.stats().entries == len(log)
        for seq in (1, MAX_RECORD_ENTRIES, MAX_RECORD_ENTRIES + 1, n, n + 2):
            assert j.get(seq).entry == log[seq - 1]
            assert [r.seq for r in j.pending("t", limit=3, after=seq - 1)] == list(range(seq, seq + 3))[
                : len(log) - seq + 1
            ]
        assert j.get(len(log) + 1) is None
        assert j.mark_done("t", range(1, MAX_RECORD_ENTRIES + 10)) == MAX_RECORD_ENTRIES + 9
        assert j.pending("t", limit=1)[0].seq == MAX_RECORD_ENTRIES + 10


def test_compaction_cuts_through_a_record(tmp_path) -> None:
    """Compaction may stop inside a record: the rest stays readable, from any seq."""
    n = MAX_RECORD_ENTRIES + 100
    batch = big_batch(n, b"c", 0)
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.append(batch)
        cut = MAX_RECORD_ENTRIES + 40  # inside the second record
        j.mark_done("t", range(1, cut + 1))
        assert j.compact(retention_ns=0, now_ns=10**12) == cut
        assert [r.seq for r in j.since(seq=0)] == list(range(cut + 1, n + 1))
        assert j.stats().entries == n - cut
        assert j.compacted_through().seq == cut
        for seq in (cut + 1, MAX_RECORD_ENTRIES + 41, n):
            assert j.get(seq).entry == batch[seq - 1]
        assert j.get(cut) is None
        j.close()
        j2 = Journal.open(tmp_path / "j", root="/srv", tracks=["t"])
        assert [r.entry for r in j2.pending("t")] == batch[cut:]
        j2.close()
