"""Pending seq ranges against a plain set, over random adds and removals."""

from __future__ import annotations

import shutil
import tempfile

import lmdb
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import _pending

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6), st.sampled_from(["a", "b"])),
        st.tuples(st.just("remove"), st.lists(st.integers(0, 60), max_size=12), st.sampled_from(["a", "b"])),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_ranges_match_a_set(script: list[tuple]) -> None:
    """add_range/remove_seqs/ranges_from/first_pending behave like set operations."""
    d = tempfile.mkdtemp(prefix="pending-ranges-")
    env = lmdb.open(d, max_dbs=2, sync=False, map_size=1 << 22)
    try:
        db = env.open_db(b"pend")
        model: dict[str, set[int]] = {"a": set(), "b": set()}
        last = 0
        with env.begin(write=True, db=db) as txn:
            for op, arg, track in script:
                prefix = track.encode() + b"\0"
                if op == "add":
                    _pending.add_range(txn, db, prefix, last + 1, last + arg)
                    model[track].update(range(last + 1, last + arg + 1))
                    last += arg
                else:
                    got = _pending.remove_seqs(txn, db, prefix, arg)
                    assert got == sorted(model[track] & set(arg))
                    model[track] -= set(arg)
                for t, seqs in model.items():
                    p = t.encode() + b"\0"
                    for start in (0, 1, 5, 17):
                        spans = list(_pending.ranges_from(txn, db, p, start))
                        flat = [s for lo, hi in spans for s in range(lo, hi + 1)]
                        assert flat == sorted(s for s in seqs if s >= start)
                    assert _pending.first_pending(txn, db, p) == min(seqs, default=None)
    finally:
        env.close()
        shutil.rmtree(d)


def test_runs() -> None:
    """Seqs group into sorted inclusive runs, duplicates ignored."""
    assert _pending.runs([7, 1, 2, 3, 3, 9, 8]) == [(1, 3), (7, 9)]
    assert _pending.runs([]) == []
