"""How the journal's costs grow with progress tracks (msync members): an msync
target with 16 members keeps 16 tracks, and every entry is pending, planned
and marked done once per track.

For 1, 4 and 16 tracks, side by side in one run:

- append: durable batch-1 appends (the watcher's common case), per entry;
- plan: reading every track's pending entries in pages, as the replayer does;
- done: marking them done per track, one transaction per page of seqs.

Every width handles the same number of (entry, track) pairs: 16 tracks get a
sixteenth of the 1-track backlog.

Linear means the cost per (entry, track) pair stays flat: the ratio printed
beside each cost is cost(T) / (T x cost(1)), and it must stay <= 1 (give or
take the noise of a shared machine). The verdict reads process CPU, since
the wall time of syncs on a shared disk varies more than anything measured.
An append is cheaper than linear when the per-track part is small next to
the sync.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from journal import Entry, Journal, Op

MEMBERS = (1, 4, 16)
PAGE = 500  # seqs per pending page and per mark_done transaction
# Noise allowed on "no worse than linear": runs on a shared 2-core machine
# vary by a third; a cost worse than linear shows as x of 4 (T log T) or 16
# (T squared) at 16 tracks.
SLACK = 1.5


def _tracks(n: int) -> list[str]:
    return [f"web/member-{i:02d}" for i in range(n)]


def _entries(batch_no: int, size: int) -> list[Entry]:
    now = time.time_ns()
    base = b"www/site/assets/img/%06d/" % batch_no
    return [Entry(Op.CHANGE, base + b"photo-%06d.jpg" % i, time_ns=now) for i in range(size)]


def _clock() -> tuple[float, float]:
    """(wall, CPU of the whole process: the fold thread included)."""
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float], per: int) -> tuple[float, float]:
    t1 = _clock()
    return (t1[0] - t0[0]) / per, (t1[1] - t0[1]) / per


def _append_cost(d: Path, tracks: list[str], appends: int) -> tuple[float, float]:
    """(wall, CPU) seconds per durable batch-1 append, folding included (until close)."""
    batches = [_entries(n, 1) for n in range(appends)]
    j = Journal.open(d / "append", root="/srv/www", tracks=tracks)
    try:
        j.append(_entries(999_999, 1))
        j.last_seq()
        t0 = _clock()
        for batch in batches:
            j.append(batch)
    finally:
        j.close()
    return _since(t0, appends)


def _plan_and_done_cost(
    d: Path, tracks: list[str], backlog: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) seconds per (entry, track) to page through pending, and to mark done."""
    with Journal.open(d / "progress", root="/srv/www", tracks=tracks) as j:
        for n in range(backlog // 100):
            j.append(_entries(n, 100))
        t0 = _clock()
        pages = {}
        for track in tracks:
            after, pages[track] = 0, []
            while page := j.pending(track, limit=PAGE, after=after):
                pages[track].append([r.seq for r in page])
                after = page[-1].seq
        plan = _since(t0, backlog * len(tracks))
        t1 = _clock()
        for track in tracks:
            for seqs in pages[track]:
                j.mark_done(track, seqs)
        done = _since(t1, backlog * len(tracks))
        assert all(sum(map(len, p)) == backlog for p in pages.values()), "pending once per track"
    return plan, done


def measure(work: Path, runs: int, scale: float) -> dict[int, dict[str, float]]:
    """Median costs per width (wall and CPU), and ``x`` ratios: the median
    over runs of each run's cost against the 1-track cost measured right
    before it (disks drift; back-to-back runs drift together)."""
    appends = max(50, int(300 * scale))
    # The same number of (entry, track) pairs at every width: as many
    # commits, over as long a time, so a stall of the shared disk is as
    # likely to hit one width as another.
    pairs = max(PAGE * MEMBERS[-1], int(32_000 * scale))
    kinds = ("append", "plan", "done", "append_cpu", "plan_cpu", "done_cpu")
    costs: dict[int, dict[str, list[float]]] = {m: {k: [] for k in kinds} for m in MEMBERS}
    ratios: dict[int, dict[str, list[float]]] = {m: {k: [] for k in kinds} for m in MEMBERS}
    n = 0
    for _ in range(runs):
        for members in MEMBERS:  # interleaved, so drift hits every width alike
            n += 1
            d = work / f"members{n:04d}"
            d.mkdir()
            tracks = _tracks(members)
            append = _append_cost(d, tracks, appends)
            plan, done = _plan_and_done_cost(d, tracks, pairs // members // 100 * 100)
            got = dict(zip(kinds, (append[0], plan[0], done[0], append[1], plan[1], done[1])))
            for k in kinds:
                costs[members][k].append(got[k])
                one = costs[MEMBERS[0]][k][-1]
                # append is per entry (every track at once); plan and done per (entry, track)
                ratios[members][k].append(got[k] / (one * (members if k.startswith("append") else 1)))
    return {
        m: {
            **{k: statistics.median(costs[m][k]) for k in kinds},
            **{f"x{k}": statistics.median(ratios[m][k]) for k in kinds},
        }
        for m in MEMBERS
    }


def render(table: dict[int, dict[str, float]], runs: int) -> str:
    lines = [
        f"many members (median of {runs} runs): append = us per durable batch-1 append;",
        " plan, done = us per (entry, track); x = cost / (tracks x cost at 1 track), linear <= 1",
        " (x: median over runs of the ratio to the 1-track run made just before; cpu: process CPU)",
        f"{'tracks':>6} {'append':>8} {'x':>5} {'x cpu':>5} {'plan':>7} {'x':>5} {'x cpu':>5}"
        f" {'done':>7} {'x':>5} {'x cpu':>5}",
    ]
    worst = {"wall": 0.0, "cpu": 0.0}
    for members, r in table.items():
        row = f"{members:>6}"
        for k, width in (("append", 8), ("plan", 7), ("done", 7)):
            row += f" {r[k] * 1e6:>{width}.2f} {r['x' + k]:>5.2f} {r['x' + k + '_cpu']:>5.2f}"
            worst["wall"] = max(worst["wall"], r["x" + k])
            worst["cpu"] = max(worst["cpu"], r["x" + k + "_cpu"])
        lines.append(row)
    verdict = "met" if worst["cpu"] <= SLACK else "MISSED"
    lines.append(
        f"goal append, plan, done no worse than linear in tracks (CPU): {verdict} "
        f"(worst x {worst['cpu']:.2f} CPU, {worst['wall']:.2f} wall: syncs of a shared disk vary)"
    )
    return "\n".join(lines)
