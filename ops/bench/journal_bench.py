"""Durable append throughput of the journal against two ceilings on the same
filesystem: a raw write+fdatasync loop (same bytes per sync) and a bare LMDB
loop (same number of equally sized records per synced transaction); and how
appending, planning and marking done grow with progress tracks
(``journal_members``).

Every run uses a fresh directory and nothing is deleted until the end: mass
deletes slow some filesystems down for minutes and would skew later runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import journal_members  # noqa: E402

from journal import Entry, Journal, Op  # noqa: E402
from journal.codec import encode_entry  # noqa: E402

BATCHES = (1, 10, 100, 1000, 10000)
Runner = Callable[[Path, int, int], float]
JOURNAL_CPU: list[float] = []  # process CPU per entry of each journal run, the fold thread's included


def make_batch(batch_no: int, size: int) -> list[Entry]:
    base = b"www/site/assets/img/%06d/" % batch_no
    now = time.time_ns()
    return [Entry(Op.CHANGE, base + b"photo-%06d.jpg" % i, time_ns=now) for i in range(size)]


def record_size() -> int:
    return len(encode_entry(make_batch(0, 1)[0]))


def run_journal(d: Path, size: int, commits: int) -> float:
    """Timed until close() returns: small batches are acknowledged from the
    intake, and the time to fold them into LMDB counts too."""
    batches = [make_batch(n, size) for n in range(commits)]
    j = Journal.open(d / "j", root="/srv/www", tracks=["mirror"])
    try:
        j.append(make_batch(999_999, 1))  # warm the files and the map
        j.last_seq()  # a read folds the warm-up batch
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            j.append(batch)
    finally:
        j.close()
    JOURNAL_CPU.append((time.process_time() - c0) / (size * commits))
    return time.perf_counter() - t0


def run_fdatasync(d: Path, size: int, commits: int) -> float:
    chunk = os.urandom(record_size() * size)
    fd = os.open(d / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, chunk)
        os.fdatasync(fd)
        t0 = time.perf_counter()
        for _ in range(commits):
            os.write(fd, chunk)
            os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def run_bare_lmdb(d: Path, size: int, commits: int) -> float:
    value = os.urandom(record_size())
    env = lmdb.open(str(d / "lmdb"), map_size=1 << 30, sync=True, metasync=True, readahead=False)
    try:
        seq = 0
        with env.begin(write=True) as txn:
            txn.put(seq.to_bytes(8, "big"), value)
        t0 = time.perf_counter()
        for _ in range(commits):
            with env.begin(write=True) as txn:
                for _ in range(size):
                    seq += 1
                    txn.put(seq.to_bytes(8, "big"), value, append=True)
        return time.perf_counter() - t0
    finally:
        env.close()


def commits_for(size: int, scale: float) -> int:
    """Enough commits for a stable rate without making big batches take minutes."""
    return max(3, int({1: 300, 10: 200, 100: 100, 1000: 30, 10000: 6}[size] * scale))


def runs_for(size: int, runs: int) -> int:
    """Batch 1 gets three times the runs: its rate is one sync per entry,
    which bursts of other writers to a shared disk upset the most, and the
    median of many back-to-back pairs is what such bursts move least."""
    return runs * 3 if size == 1 else runs


def measure(work: Path, runs: int, scale: float, sizes: tuple[int, ...]) -> dict[int, dict[str, float]]:
    runners: dict[str, Runner] = {"journal": run_journal, "fdatasync": run_fdatasync, "lmdb": run_bare_lmdb}
    table: dict[int, dict[str, float]] = {}
    n = 0
    for size in sizes:
        commits = commits_for(size, scale)
        rates: dict[str, list[float]] = {k: [] for k in runners}
        JOURNAL_CPU.clear()
        for run in range(runs_for(size, runs)):
            order = list(runners.items())
            for name, runner in order if run % 2 == 0 else order[::-1]:  # interleaved, both ways
                n += 1
                d = work / f"run{n:04d}"
                d.mkdir()
                rates[name].append(size * commits / runner(d, size, commits))
        table[size] = {k: statistics.median(v) for k, v in rates.items()}
        table[size]["cpu"] = statistics.median(JOURNAL_CPU)
        # Ratios of runs made back to back: shared disks drift, pairs drift together.
        for base in ("fdatasync", "lmdb"):
            pairs = [j / b for j, b in zip(rates["journal"], rates[base])]
            table[size][f"j/{base}"] = statistics.median(pairs)
            if base == "fdatasync" and len(pairs) >= 4:
                q1, _, q3 = statistics.quantiles(pairs, n=4)
                table[size]["q1"], table[size]["q3"] = q1, q3
    return table


def render(table: dict[int, dict[str, float]], runs: int) -> str:
    lines = [
        f"durable appends, entries/s (median of {runs} runs, {runs_for(1, runs)} at batch 1;"
        f" {record_size()}-byte records;",
        " ratios: median over back-to-back run pairs, j/fsync with its quartiles;",
        " j-cpu: the journal's process CPU per entry, us, user and system: on a disk the kernel's",
        " side of each sync counts too; with --dir /dev/shm it is the journal's own work)",
        f"{'batch':>6} {'journal':>11} {'fdatasync':>11} {'bare-lmdb':>11} {'j/fsync':>8} {'q1-q3':>10}"
        f" {'j/lmdb':>7} {'j-cpu':>6}",
    ]
    for size, r in table.items():
        lines.append(
            f"{size:>6} {r['journal']:>11,.0f} {r['fdatasync']:>11,.0f} {r['lmdb']:>11,.0f} "
            f"{r['j/fdatasync']:>8.2f} {_spread(r):>10} {r['j/lmdb']:>7.2f} {r['cpu'] * 1e6:>6.1f}"
        )
    one, big = table.get(1), [table[s] for s in table if s >= 1000]
    if one:
        ok = one["j/fdatasync"] >= 0.8
        lines.append(f"goal batch 1 >= 0.8x fdatasync: {'met' if ok else 'MISSED'}")
    if big:
        ok = all(r["j/lmdb"] >= 0.6 for r in big)
        lines.append(f"goal batch >= 1000 >= 0.6x bare LMDB: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)


def _spread(r: dict[str, float]) -> str:
    return f"{r['q1']:.2f}-{r['q3']:.2f}" if "q1" in r else "-"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per cell; the median is shown")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of commits per run")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1 10 100 1000 10000)")
    ap.add_argument("--dir", default=str(ROOT.parent), help="parent of the scratch directory")
    ap.add_argument(
        "--part", choices=("appends", "members"), action="append", help="what to measure (default: both)"
    )
    args = ap.parse_args(argv)
    parts = args.part or ["appends", "members"]
    work = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    try:
        print(f"scratch: {work} ({os.statvfs(work).f_bsize}-byte blocks); {_load()}", flush=True)
        if "appends" in parts:
            table = measure(work, args.runs, args.scale, tuple(args.batch or BATCHES))
            print(render(table, args.runs), flush=True)
        if "members" in parts:
            members = journal_members.measure(work, args.runs, args.scale)
            print(journal_members.render(members, args.runs))
        print(_load())
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
