"""The journal against a plain in-memory model, over random operation sequences."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from journal import Checkpoint, Entry, FileKind, FileState, Journal, Op

TRACKS = ["a", "b", "m/host1"]
PATHS = [b"", b"f", b"d/g", b"\xff\n-x", b"L" * 481, b"L" * 600, b"p/" * 2048]
path_st = st.sampled_from(PATHS)
entry_st = st.builds(
    lambda op, path, dest, flags: Entry(op, path, dest if op == Op.MOVE else b"", 0, flags),
    st.sampled_from(list(Op)),
    path_st,
    path_st,
    st.integers(0, 1),
)
state_st = st.builds(FileState, kind=st.sampled_from(list(FileKind)), size=st.integers(0, 10), link=path_st)


class JournalModel(RuleBasedStateMachine):
    """Model: log (seq -> entry), pending/dead per track, manifest."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="journal-model-")
        self.j = Journal.open(
            self.dir + "/j", root="/srv", tracks=TRACKS, map_size=64 * 1024, fold_delay=3600
        )
        self.clock = 0
        self.last = 0
        self.log: dict[int, Entry] = {}
        self.pend: dict[str, set[int]] = {t: set() for t in TRACKS}
        self.dead: dict[str, dict[int, tuple[Entry, str]]] = {t: {} for t in TRACKS}
        self.manifest: dict[bytes, FileState] = {}
        self.checkpoint: Checkpoint | None = None
        self.compacted: Checkpoint | None = None

    def teardown(self) -> None:
        self.j.close()
        shutil.rmtree(self.dir)

    def _add(self, entry: Entry, tracks: list[str]) -> int:
        self.last += 1
        self.log[self.last] = entry
        for t in tracks:
            self.pend[t].add(self.last)
        return self.last

    @rule(
        batch=st.lists(entry_st, max_size=6),
        tracks=st.none() | st.lists(st.sampled_from(TRACKS)),
        checkpoint=st.booleans(),
    )
    def append(self, batch: list[Entry], tracks: list[str] | None, checkpoint: bool) -> None:
        stamped = []
        for e in batch:
            self.clock += 1
            stamped.append(Entry(e.op, e.path, e.dest, self.clock, e.flags))
        cp_ns = self.clock * 3 if checkpoint else None
        got = self.j.append(stamped, tracks=tracks, checkpoint_ns=cp_ns)
        first = self.last + 1
        for e in stamped:
            self._add(e, TRACKS if tracks is None else list(dict.fromkeys(tracks)))
        assert got == ((first, self.last) if batch else None)
        if checkpoint:
            self.checkpoint = Checkpoint(cp_ns, self.last)

    @rule()
    def set_checkpoint(self) -> None:
        self.clock += 1
        self.checkpoint = Checkpoint(self.clock, self.last)
        assert self.j.set_checkpoint(self.clock) == self.checkpoint

    @rule(
        track=st.sampled_from(TRACKS),
        data=st.data(),
        states=st.dictionaries(path_st, st.none() | state_st),
        cleared=st.lists(st.sampled_from([b"", b"d", b"p", b"f", b"L"]), max_size=2),
    )
    def mark_done(
        self, track: str, data: st.DataObject, states: dict[bytes, FileState | None], cleared: list[bytes]
    ) -> None:
        seqs = data.draw(st.lists(st.sampled_from([*sorted(self.pend[track]), self.last + 5])))
        expected = len(set(seqs) & self.pend[track])
        assert self.j.mark_done(track, seqs, states, cleared) == expected
        self.pend[track] -= set(seqs)
        unders = tuple(t + b"/" for t in cleared if t)
        self.manifest = {p: s for p, s in self.manifest.items() if not p.startswith(unders)}
        self._apply_manifest(states)

    @rule(track=st.sampled_from(TRACKS), data=st.data())
    def mark_dead(self, track: str, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from([*sorted(self.pend[track]), 0]), unique=True))
        reasons = {s: f"failed \u00e9 {s}" for s in seqs}
        moved = [s for s in seqs if s in self.pend[track]]
        assert self.j.mark_dead(track, reasons) == len(moved)
        for s in moved:
            self.pend[track].discard(s)
            self.dead[track][s] = (self.log[s], reasons[s])

    @rule(track=st.none() | st.sampled_from(TRACKS))
    def requeue_dead(self, track: str | None) -> None:
        order = sorted(
            ((t, s) for t in TRACKS if track in (None, t) for s in self.dead[t]),
            key=lambda ts: (ts[0].encode(), ts[1]),
        )
        assert self.j.requeue_dead(track) == len(order)
        for t, s in order:
            entry, _reason = self.dead[t].pop(s)
            for change in _requeued(entry):
                self._add(change, [t])

    @rule(retention=st.integers(0, 20))
    def compact(self, retention: int) -> None:
        horizon = self.clock - retention
        lows = [min(p) for p in self.pend.values() if p]
        floor = min(lows) if lows else None
        removed = 0
        for seq in sorted(self.log):
            if (floor is not None and seq >= floor) or self.log[seq].time_ns >= horizon:
                break
            self.compacted = Checkpoint(self.log.pop(seq).time_ns, seq)
            removed += 1
        assert self.j.compact(retention, now_ns=self.clock) == removed

    @rule(states=st.dictionaries(path_st, st.none() | state_st))
    def manifest_put(self, states: dict[bytes, FileState | None]) -> None:
        self.j.manifest_put(states)
        self._apply_manifest(states)

    def _apply_manifest(self, states: dict[bytes, FileState | None]) -> None:
        for p, s in states.items():
            if s is None:
                self.manifest.pop(p, None)
            else:
                self.manifest[p] = s

    @rule()
    def reopen(self) -> None:
        self.j.close()
        self.j = Journal.open(self.dir + "/j", root="/srv", tracks=TRACKS, fold_delay=3600)
        assert self.j.new_tracks == ()

    @rule(batch=st.lists(entry_st, min_size=1, max_size=6), checkpoint=st.booleans())
    def append_then_crash(self, batch: list[Entry], checkpoint: bool) -> None:
        """Acknowledged, then the process dies before the batch is folded into
        LMDB (as SIGKILL would: files stay as written, nothing more runs)."""
        self.append(batch, None, checkpoint)
        assert self.j.unfolded() == len(batch), "a small batch should wait in the intake"
        self.j._shut(fold=False)
        _release_lock(self.j)
        self.j = Journal.open(self.dir + "/j", root="/srv", tracks=TRACKS, fold_delay=3600)

    @invariant()
    def matches_model(self) -> None:
        j = self.j
        stats = j.stats()
        assert stats.last_seq == j.last_seq() == self.last
        assert stats.entries == len(self.log)
        assert stats.checkpoint == j.checkpoint() == self.checkpoint
        assert j.compacted_through() == self.compacted
        assert [(r.seq, r.entry) for r in j.since(seq=0)] == sorted(self.log.items())
        for t in TRACKS:
            assert [(r.seq, r.entry) for r in j.pending(t)] == [
                (s, self.log[s]) for s in sorted(self.pend[t])
            ]
            assert stats.tracks[t].pending == len(self.pend[t])
            assert stats.tracks[t].dead_letters == len(self.dead[t])
            oldest = min(self.pend[t], default=None)
            assert stats.tracks[t].oldest_pending_ns == (self.log[oldest].time_ns if oldest else None)
            got_dead = {d.record.seq: (d.record.entry, d.reason) for d in j.dead_letters(t)}
            assert got_dead == self.dead[t]
        for p in PATHS:
            assert j.manifest_get(p) == self.manifest.get(p)
        assert dict(j.manifest_items()) == self.manifest
        assert j.manifest_count() == len(self.manifest)


TestJournalModel = JournalModel.TestCase
TestJournalModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def _release_lock(j: Journal) -> None:
    os.close(j._lock_fd)
    j._lock_fd = None


def _requeued(entry: Entry) -> list[Entry]:
    """Model of requeue: a dead entry comes back as CHANGE of each path it named."""
    if entry.op == Op.RESCAN:
        return [entry]
    paths = [entry.path, entry.dest] if entry.op == Op.MOVE else [entry.path]
    return [Entry(Op.CHANGE, p, time_ns=entry.time_ns, flags=entry.flags) for p in paths]
