"""The record codec: lossless for any bytes path, loud on damaged records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import CodecError, Entry, FileKind, FileState, Op
from journal.codec import decode_entry, decode_seq, decode_state, encode_entry, encode_seq, encode_state

paths = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=4096, max_size=4096),
    st.sampled_from([b"", b"\n", b"a\nb", b"-rf", b"$(x)", b"\xff\xfe\x80", b"/".join([b"d"] * 2000)]),
)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)

entries = st.builds(
    Entry,
    op=st.sampled_from(list(Op)),
    path=paths,
    dest=paths,
    time_ns=u64,
    flags=st.integers(0, 255),
)
states = st.builds(
    FileState,
    kind=st.sampled_from(list(FileKind)),
    size=u64,
    mode=u32,
    uid=u32,
    gid=u32,
    mtime_ns=i64,
    ctime_ns=i64,
    inode=u64,
    digest=st.binary(max_size=64),
    link=paths,
)


@given(entries)
def test_entry_round_trip(entry: Entry) -> None:
    """Every entry, whatever bytes its paths hold, decodes to itself."""
    assert decode_entry(encode_entry(entry)) == entry


@given(states)
def test_state_round_trip(state: FileState) -> None:
    """Every manifest state decodes to itself."""
    assert decode_state(encode_state(state)) == state


@given(u64)
def test_seq_keys_sort_numerically(seq: int) -> None:
    """Seq keys round-trip and byte order is numeric order."""
    assert decode_seq(encode_seq(seq)) == seq
    if seq:
        assert encode_seq(seq - 1) < encode_seq(seq)


@given(entries, st.data())
def test_truncated_entry_raises(entry: Entry, data: st.DataObject) -> None:
    """Any strict prefix or any padding of an entry is rejected, never misread."""
    raw = encode_entry(entry)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CodecError):
        decode_entry(raw[:cut])
    with pytest.raises(CodecError):
        decode_entry(raw + data.draw(st.binary(min_size=1, max_size=8)))


@given(states, st.data())
def test_truncated_state_raises(state: FileState, data: st.DataObject) -> None:
    """Any strict prefix of a manifest state is rejected."""
    raw = encode_state(state)
    with pytest.raises(CodecError):
        decode_state(raw[: data.draw(st.integers(0, len(raw) - 1))])


@given(st.binary(max_size=64))
def test_garbage_raises_codec_error_only(raw: bytes) -> None:
    """Random bytes either decode or raise CodecError; nothing else escapes."""
    for decode in (decode_entry, decode_state):
        try:
            decode(raw)
        except CodecError:
            pass


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02" + bytes(20),
        b"\x01\x09" + bytes(20),
        b"\x01\x01\x00" + bytes(8) + b"\xff\xff\xff\xff" + bytes(4),
    ],
)
def test_known_garbage_entries(raw: bytes) -> None:
    """Empty, unknown version, unknown op and overlong length are all CodecError."""
    with pytest.raises(CodecError):
        decode_entry(raw)


def test_out_of_range_values_raise_codec_error() -> None:
    """Encoding refuses values the format cannot hold instead of wrapping them."""
    with pytest.raises(CodecError):
        encode_entry(Entry(Op.CHANGE, b"p", time_ns=-1))
    with pytest.raises(CodecError):
        encode_state(FileState(FileKind.FILE, digest=b"x" * 256))
