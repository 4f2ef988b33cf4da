"""Child processes for journal tests: ``python -m tests.journal._children CMD ARGS``.

LMDB refuses to open one environment twice in a process, and crash tests need
a process to SIGKILL, so every second party in these tests is a real process.
Each command prints one line per fact on stdout, flushed at once.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

from journal import Entry, Journal, JournalError, Op

HOSTILE = [b"", b"\n", b"-rf", b"$(reboot)", b"\xff\xfe", b" sp ace"]


def batch_entries(batch: int, first: int, size: int) -> list[Entry]:
    """Entries derivable from (batch, seq): the path names both, plus the batch size."""
    return [entry_for(batch, seq, size) for seq in range(first, first + size)]


def entry_for(batch: int, seq: int, size: int) -> Entry:
    tail = HOSTILE[seq % len(HOSTILE)]
    path = b"b%d/n%d/s%d/" % (batch, size, seq) + tail + b"x" * (seq % 7 * 90)
    op = Op.MOVE if seq % 5 == 0 else Op.CHANGE
    dest = path + b".moved" if op == Op.MOVE else b""
    return Entry(op, path, dest, time_ns=seq * 1000 + 7, flags=seq % 2)


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def hold_lock(jdir: str) -> None:
    """Hold the writer lock until stdin closes."""
    with Journal.open(jdir, tracks=["t"]):
        say("ready", os.getpid())
        sys.stdin.read()


def try_open(jdir: str) -> None:
    try:
        Journal.open(jdir).close()
        say("opened")
    except JournalError as exc:
        say(type(exc).__name__, getattr(exc, "holder_pid", None))


def append_loop(jdir: str, seed: str, batch0: str) -> None:
    """Append random batches forever, reporting each acknowledged range."""
    rng = random.Random(int(seed))
    batch = int(batch0)
    with Journal.open(jdir, tracks=["t"], map_size=256 * 1024) as j:
        say("ready", j.last_seq())
        while True:
            size = rng.choice([1, 2, 7, 50, 300])
            first = j.last_seq() + 1
            got = j.append(batch_entries(batch, first, size))
            say("acked", got[0], got[1], batch, size)
            batch += 1


def append_many(jdir: str, mode: str, tag: str, batches: str) -> None:
    """Append ``batches`` batches tagged ``tag`` with a tiny map (so it grows)."""
    with Journal.open(jdir, mode=mode, map_size=64 * 1024) as j:
        say("ready")
        for n in range(int(batches)):
            got = j.append([Entry(Op.CHANGE, b"%s/%d/%d" % (tag.encode(), n, i)) for i in range(30)])
            say("acked", got[0], got[1])


def agent_console(jdir: str, fold_delay: str) -> None:
    """An agent-mode journal driven by stdin lines: ``append TAG N [CP]``
    appends N entries named TAG/i (moving the checkpoint to CP) and prints
    ``acked FIRST LAST``; end of input closes the journal."""
    with Journal.open(jdir, tracks=["t", "u"], fold_delay=float(fold_delay)) as j:
        say("ready")
        for line in sys.stdin:
            _cmd, tag, n, *cp = line.split()
            entries = [Entry(Op.CHANGE, b"%s/%d" % (tag.encode(), i), time_ns=7) for i in range(int(n))]
            got = j.append(entries, checkpoint_ns=int(cp[0]) if cp else None)
            say("acked", got[0], got[1])


def read_all(jdir: str) -> None:
    """Read every entry and every manifest state (touching every page in use)."""
    with Journal.open(jdir, mode="read") as j:
        last = 0
        for rec in j.since(seq=0):
            last = rec.seq
        list(j.manifest_items())
        say("read", last)


def read_while_writing(jdir: str, until: str) -> None:
    """Read-only snapshots while another process appends: each must be whole."""
    target = int(until)
    reads = 0
    with Journal.open(jdir, mode="read") as j:
        say("ready")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = list(j.since(seq=0))
            seqs = [r.seq for r in records]
            assert seqs == list(range(1, len(seqs) + 1)), "gap in a read snapshot"
            for r in records:
                batch, size = (int(x[1:]) for x in r.entry.path.split(b"/")[:2])
                assert r.entry == entry_for(batch, r.seq, size), r
            reads += 1
            if seqs and seqs[-1] >= target:
                say("done", reads, seqs[-1])
                return
    say("timeout", reads)


def set_schema(jdir: str, value: str) -> None:
    """Rewrite the schema record with raw LMDB, as a future version would."""
    import lmdb

    env = lmdb.open(jdir, max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"schema", value.encode(), db=env.open_db(b"meta", txn=txn))
    env.close()
    say("ok")


def fill_tmpfs(mnt: str, size: str) -> None:
    """In a private mount namespace: fill a small tmpfs with the journal until
    JournalFull, free space, append again, and report what was acknowledged."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (1024 * 1024))  # room to fold what the intake acknowledged
    jdir = os.path.join(mnt, "j")
    acked = 0
    full = None
    with Journal.open(jdir, tracks=["t"], map_size=64 * 1024) as j:
        for batch in range(100_000):
            try:
                acked = j.append(batch_entries(batch, acked + 1, 40))[1]
            except JournalError as exc:
                full = type(exc).__name__
                break
        refused_when_full = j.space_refused
        done_refused = False
        try:  # a small write may still fit in freed pages: it must not hide the refused append
            j.mark_done("t", [1])
        except JournalError:
            done_refused = True
        refused_when_full = refused_when_full and j.space_refused
        try:
            Journal.open(os.path.join(mnt, "new")).close()
            fresh = "opened"
        except JournalError as exc:
            fresh = type(exc).__name__
        os.unlink(filler)
        Journal.open(os.path.join(mnt, "new")).close()  # a failed creation left nothing behind
        after = j.append(batch_entries(batch, acked + 1, 40))
        refused_after = [j.space_refused == done_refused]  # a refused done mark is not retried yet
        j.mark_done("t", [1])
        refused_after.append(j.space_refused)
    with Journal.open(jdir) as j:
        records = list(j.since(seq=0))
        intact = all(r.entry == entry_for(int(r.entry.path.split(b"/")[0][1:]), r.seq, 40) for r in records)
        say(
            json.dumps(
                {
                    "full": full,
                    "fresh": fresh,
                    "acked": acked,
                    "after": after,
                    "n": len(records),
                    "intact": intact,
                    "space_refused": [refused_when_full, *refused_after],
                }
            )
        )


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
