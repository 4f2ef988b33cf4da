"""Ingest benchmark: a burst of N file creates across fresh directories while a
watcher-only agent (ingest_runner.py) and ``inotifywait -m -r`` watch the same
tree. Reports events/s durably journaled, batch sizes, overflows, loss, and CPU
per event of both watchers (from /proc/PID/stat) with their ratio.

Every run uses fresh directories; nothing is deleted until all runs are done.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from journal import Journal, Op  # noqa: E402

HERE = Path(__file__).resolve().parent
SENTINEL = ".bench-done"
TICK = os.sysconf("SC_CLK_TCK")
IW_EVENTS = "create,close_write,modify,attrib,delete,moved_from,moved_to,delete_self,move_self"


def cpu_s(pid: int) -> float:
    """utime + stime of a live process (all threads), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def poll(predicate, timeout: float):  # type: ignore[no-untyped-def]
    """The predicate's first truthy value, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(0.02)


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    value = poll(predicate, timeout)
    if value is None:
        raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


def tail_has(path: Path, needle: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            return needle in fh.read()
    except FileNotFoundError:
        return False


@dataclass
class Procs:
    runner: subprocess.Popen[bytes]
    iw: subprocess.Popen[bytes]


def start(base: Path, tree: Path) -> Procs:
    argv = [sys.executable, str(HERE / "ingest_runner.py"), "--root", str(tree), "--journal", str(base / "j")]
    argv += ["--ready", str(base / "ready"), "--stats", str(base / "stats.json"), "--sentinel", SENTINEL]
    runner = subprocess.Popen(
        argv,
        stdout=open(base / "runner.out", "wb"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: (base / "ready").exists() or runner.poll() is not None, 60, "the watcher runner")
    if runner.poll() is not None:
        raise SystemExit(f"runner failed: {(base / 'runner.out').read_text()}")
    iw = subprocess.Popen(
        ["inotifywait", "-m", "-r", "--format", "%w%f %e", "-e", IW_EVENTS, str(tree)],
        stdout=open(base / "iw.out", "wb"),  # noqa: SIM115
        stderr=open(base / "iw.err", "wb"),  # noqa: SIM115
    )
    wait_for(lambda: tail_has(base / "iw.err", b"Watches established"), 60, "inotifywait")
    return Procs(runner, iw)


def make_dirs(tree: Path, files: int, per_dir: int) -> None:
    for d in range((files + per_dir - 1) // per_dir):
        os.mkdir(os.fsencode(tree) + b"/d%06d" % d)


def burst(tree: Path, files: int, per_dir: int, *, fresh: bool, rate: float = 0.0) -> list[bytes]:
    """Create the files, as fast as possible or at ``rate`` files/s (paced per directory)."""
    created: list[bytes] = []
    data = b"x" * 64
    start = time.monotonic()
    for d in range((files + per_dir - 1) // per_dir):
        if rate and (ahead := start + d * per_dir / rate - time.monotonic()) > 0:
            time.sleep(ahead)
        dname = b"d%06d" % d
        if fresh:
            os.mkdir(os.fsencode(tree) + b"/" + dname)
            created.append(dname)
        for f in range(min(per_dir, files - d * per_dir)):
            rel = dname + b"/f%05d" % f
            fd = os.open(os.fsencode(tree) + b"/" + rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
            created.append(rel)
    return created


def one_run(
    base: Path, tree: Path, files: int, per_dir: int, *, fresh: bool, rate: float = 0.0
) -> dict[str, object]:
    tree.mkdir()
    if not fresh:
        make_dirs(tree, files, per_dir)  # watched before the burst: every file is an event
    procs = start(base, tree)
    try:
        cpu0 = cpu_s(procs.runner.pid), cpu_s(procs.iw.pid)
        t0 = time.time_ns()
        created = burst(tree, files, per_dir, fresh=fresh, rate=rate)
        t_end = time.time_ns()
        stats = _await_sentinel(tree / SENTINEL, base / "stats.json")
        wait_for(lambda: tail_has(base / "iw.out", SENTINEL.encode()), 1800, "inotifywait to drain")
        cpu1 = cpu_s(procs.runner.pid), cpu_s(procs.iw.pid)
    finally:
        for proc in (procs.runner, procs.iw):
            proc.send_signal(signal.SIGTERM)
        for proc in (procs.runner, procs.iw):
            proc.wait(timeout=60)
    iw_lines, iw_paths, iw_overflows = _inotifywait_output(base / "iw.out", os.fsencode(tree) + b"/")
    missing, rescans = _loss(base / "j", created)
    result: dict[str, object] = {
        "files": files,
        "dirs": (files + per_dir - 1) // per_dir,
        "fresh_dirs": fresh,
    }
    result |= {"missing_paths": missing, "rescan_entries": rescans, "inotifywait_events": iw_lines}
    result["inotifywait_missing_paths"] = len(set(created) - iw_paths)
    result["inotifywait_overflows"] = iw_overflows
    return result | _rates(stats, len(created), t0, t_end, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], iw_lines)


def _rates(
    stats: dict, created: int, t0: int, t_end: int, w_cpu: float, iw_cpu: float, iw_lines: int
) -> dict[str, object]:
    elapsed = (stats["sentinel_ns"] - t0) / 1e9
    sizes = stats["sizes"]
    return {
        "burst_s": (t_end - t0) / 1e9,
        "creates_per_s": created / ((t_end - t0) / 1e9),
        "journaled_s": elapsed,
        "lag_after_burst_s": (stats["sentinel_ns"] - t_end) / 1e9,
        "events_read": stats["events_read"],
        "entries_journaled": stats["entries_journaled"],
        "events_per_s_durable": stats["events_read"] / elapsed,
        "entries_per_s_durable": stats["entries_journaled"] / elapsed,
        "batches": len(sizes),
        "batch_median": statistics.median(sizes) if sizes else 0,
        "batch_max": max(sizes, default=0),
        "append_s": stats["append_s"],
        "overflows": stats["overflows"],
        "watcher_cpu_s": w_cpu,
        "inotifywait_cpu_s": iw_cpu,
        "watcher_us_per_event": 1e6 * w_cpu / max(1, stats["events_read"]),
        "inotifywait_us_per_event": 1e6 * iw_cpu / max(1, iw_lines),
        "watcher_us_per_file": 1e6 * w_cpu / created,
        "inotifywait_us_per_file": 1e6 * iw_cpu / created,
    }


def _inotifywait_output(path: Path, prefix: bytes) -> tuple[int, set[bytes], int]:
    """Event lines, the set of paths inotifywait reported (relative to the
    tree), and how many overflows it reported."""
    lines, paths, overflows = 0, set(), 0
    with open(path, "rb") as fh:
        for line in fh:
            lines += 1
            name, _, events = line.rstrip(b"\n").rpartition(b" ")
            overflows += b"Q_OVERFLOW" in events
            paths.add(name[len(prefix) :] if name.startswith(prefix) else name)
    return lines, paths, overflows


def _await_sentinel(sentinel: Path, stats_path: Path) -> dict:  # type: ignore[type-arg]
    """Write the sentinel until the watcher journals it: after an overflow the
    kernel may have dropped its first event (a scanner would find it; the
    benchmark runs none)."""
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        with open(sentinel, "ab") as fh:
            fh.write(b".")
        stats = poll(lambda: _sentinel_stats(stats_path), 2.0)
        if stats is not None:
            return stats
    raise SystemExit("timed out waiting for the journal to hold the burst")


def _sentinel_stats(path: Path) -> dict | None:  # type: ignore[type-arg]
    try:
        stats = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return stats if stats.get("sentinel_ns") else None


def _loss(jdir: Path, created: list[bytes]) -> tuple[int, int]:
    with Journal.open(jdir, mode="read") as journal:
        records = list(journal.since(seq=0))
    paths = {r.entry.path for r in records}
    return len(set(created) - paths), sum(1 for r in records if r.entry.op == Op.RESCAN)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-dir", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--existing-dirs", action="store_true", help="create the directories before watching: pure event path"
    )
    ap.add_argument("--dir", default=None, help="parent directory for journals and trees (default: $TMPDIR)")
    ap.add_argument("--tree-dir", default=None, help="parent for the watched trees (e.g. /dev/shm)")
    ap.add_argument(
        "--rate", type=float, default=0.0, help="files/s of the burst (default: as fast as possible)"
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    args = ap.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=args.dir))
    trees = Path(tempfile.mkdtemp(prefix="ingest-tree-", dir=args.tree_dir)) if args.tree_dir else parent
    try:
        for i in range(args.runs):
            base = parent / f"run{i}"
            base.mkdir()
            result = one_run(
                base,
                trees / f"tree{i}",
                args.files,
                args.per_dir,
                fresh=not args.existing_dirs,
                rate=args.rate,
            )
            result["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(json.dumps(result) if args.json else _render(i, result), flush=True)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
        shutil.rmtree(trees, ignore_errors=True)
    return 0


def _render(i: int, r: dict[str, object]) -> str:
    ratio = r["watcher_us_per_event"] / max(r["inotifywait_us_per_event"], 1e-9)  # type: ignore[operator]
    file_ratio = r["watcher_us_per_file"] / max(r["inotifywait_us_per_file"], 1e-9)  # type: ignore[operator]
    return "\n".join(
        [
            f"run {i}: {r['files']} files in {r['dirs']} {'fresh' if r['fresh_dirs'] else 'existing'} dirs,"
            f" burst {r['burst_s']:.2f}s"
            f" ({r['creates_per_s']:.0f} creates/s)",
            f"  journal: {r['events_read']} events -> {r['entries_journaled']} entries durable after"
            f" {r['journaled_s']:.2f}s (lag after burst {r['lag_after_burst_s']:.2f}s):"
            f" {r['events_per_s_durable']:.0f} events/s, {r['entries_per_s_durable']:.0f} entries/s",
            f"  batches: {r['batches']} (median {r['batch_median']}, max {r['batch_max']}),"
            f" append time {r['append_s']:.2f}s; overflows {r['overflows']},"
            f" rescan entries {r['rescan_entries']}, missing paths {r['missing_paths']}",
            f"  cpu: watcher {r['watcher_cpu_s']:.2f}s = {r['watcher_us_per_event']:.1f} us/event"
            f" ({r['watcher_us_per_file']:.1f} us/file); inotifywait {r['inotifywait_cpu_s']:.2f}s for"
            f" {r['inotifywait_events']} events = {r['inotifywait_us_per_event']:.1f} us/event"
            f" ({r['inotifywait_us_per_file']:.1f} us/file); ratio per event {ratio:.2f},"
            f" per file {file_ratio:.2f}",
            f"  inotifywait never reported {r['inotifywait_missing_paths']} of the created paths"
            f" ({r['inotifywait_overflows']} overflows); the agent overflowed {r['overflows']} times,"
            f" missed {r['missing_paths']} paths; load average {r['load']}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
