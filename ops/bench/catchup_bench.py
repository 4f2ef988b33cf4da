"""Catch-up benchmark: how long the startup scan takes to find 100 changed files
in a mirrored tree of 100,000, side by side with ``find ROOT -newer REF`` and
``rsync -a --dry-run ROOT/ MIRROR/`` in the same run, and with the floor of
any scan written in Python: a bare walk that lists every directory and
lstat()s every entry, and does nothing else (``floor``). The scan runs three
ways: as the daemon runs it (``scan``: helper processes started ahead, see
``agent.scan.team``), with helpers it starts itself (``scan_cold``), and in
one process (``scan_1``). On N CPUs the scan uses them all; ``find`` uses one,
so the CPU columns say what the speed costs.

The tree, its mirror and the journal (with a manifest seeded as if everything
had been shipped) are created once under ``--data`` and reused: the tree is
never deleted between runs (mass deletes leave ext4 slow for minutes), only
with ``--cleanup`` at the very end. Each run changes ``--changes`` files (half
of them same-size rewrites with the old mtime restored, which only ctime
reveals), scans from a checkpoint taken just before, asserts that exactly
those paths were enqueued, then "ships" them (mirror copy + ``mark_done``) so
the next run starts from a consistent mirror.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from agent.scan.scanner import Scanner, ScanReport  # noqa: E402
from agent.tree.excludes import Excludes  # noqa: E402
from agent.tree.fsstate import capture  # noqa: E402
from journal import Journal, Op  # noqa: E402

TRACK = "bench"
SCANS = ("scan", "scan_cold", "scan_1")
TOOLS = [*SCANS, "find", "rsync", "floor"]
HELPER_HEAD_START_S = 0.5  # the daemon starts the scan's helpers before it sets up the watches
DEFAULT_EXCLUDES = ("*.swp", "*~", ".#*")  # the example configuration's patterns
MARK = ".bench-complete"


def file_rel(i: int, dirs: int) -> bytes:
    return b"d%04d/f%06d.dat" % (i % dirs, i)


def ensure_tree(tree: Path, files: int, dirs: int) -> bool:
    """Create the tree unless a complete one of this shape exists; True when created."""
    mark, shape = tree / MARK, f"{files} {dirs}\n"
    if mark.exists() and mark.read_text() == shape:
        return False
    started = time.monotonic()
    rng = random.Random(1)
    base = os.fsencode(tree)
    for d in range(dirs):
        os.makedirs(base + b"/d%04d" % d, exist_ok=True)
    for i in range(files):
        with open(base + b"/" + file_rel(i, dirs), "wb") as f:
            f.write(rng.randbytes(rng.randint(64, 4096)))
    mark.write_text(shape)
    os.sync()
    print(f"created tree: {files} files in {dirs} dirs ({time.monotonic() - started:.1f} s)")
    return True


def ensure_mirror(tree: Path, mirror: Path, rebuilt: bool) -> None:
    if mirror.exists() and not rebuilt and (mirror / MARK).exists():
        return
    mirror.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rsync", "-a", "--delete", "--", f"{tree}/", f"{mirror}/"], check=True)
    os.sync()
    print("created mirror with rsync -a")


def seed_manifest(journal: Journal, tree: Path) -> None:
    """Manifest = every path of the tree, as if shipped (done once)."""
    started = time.monotonic()
    base = os.fsencode(tree)
    states = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            abspath = os.path.join(dirpath, name)
            states[os.path.relpath(abspath, base)] = capture(abspath)
    journal.manifest_put(states)
    print(f"seeded manifest: {len(states)} paths ({time.monotonic() - started:.1f} s)")


def ship(journal: Journal, tree: Path, mirror: Path, first_seq: int) -> int:
    """Play the replayer for entries since ``first_seq``: copy to the mirror,
    record the shipped state, mark done."""
    records = list(journal.since(seq=first_seq))
    states = {}
    for rec in records:
        rel = rec.entry.path
        src, dst = os.path.join(os.fsencode(tree), rel), os.path.join(os.fsencode(mirror), rel)
        state = capture(src)
        if state is None:
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            elif os.path.lexists(dst):
                os.unlink(dst)
        elif os.path.isfile(src) and not os.path.islink(src):
            shutil.copy2(src, dst)
        states[rel] = state
    journal.mark_done(TRACK, [r.seq for r in records], states)
    return len(records)


def tick_past(probe: Path, since_ns: int) -> None:
    """Wait (bounded) until the kernel's coarse clock is past ``since_ns``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        os.utime(probe)
        if os.stat(probe).st_ctime_ns > since_ns:
            return
        time.sleep(0.001)
    raise RuntimeError("file timestamps do not advance")


def change_files(tree: Path, rng: random.Random, count: int, files: int, dirs: int) -> set[bytes]:
    """Really change ``count`` random files: every other one keeps its size and
    gets its old mtime back (only ctime shows it), the rest grow by a byte."""
    picked = rng.sample(range(files), count)
    base = os.fsencode(tree)
    for n, i in enumerate(picked):
        path = base + b"/" + file_rel(i, dirs)
        old = os.stat(path)
        with open(path, "rb") as f:
            content = bytearray(f.read())
        if n % 2 == 0:
            content[rng.randrange(len(content))] ^= 0xFF
        else:
            content.append(rng.randrange(256))
        with open(path, "wb") as f:
            f.write(content)
        if n % 2 == 0:
            os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    return {file_rel(i, dirs) for i in picked}


def bare_walk(tree: bytes) -> int:
    """List every directory and lstat every entry, nothing else: what any
    scan in Python pays before it compares anything."""
    stack, seen = [tree], 0
    while stack:
        path = stack.pop()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            names = os.listdir(path)
            names.sort()
            stats = [os.stat(name, dir_fd=fd, follow_symlinks=False) for name in names]
        finally:
            os.close(fd)
        seen += len(stats)
        stack.extend(path + b"/" + n for n, st in zip(names, stats) if stat.S_ISDIR(st.st_mode))
    return seen


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (all processes of the command) and output lines."""
    started, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, check=True)
    return time.perf_counter() - started, children_cpu() - cpu, proc.stdout.count(b"\n")


def one_run(args: argparse.Namespace, journal: Journal, run: int) -> dict[str, float]:
    data = Path(args.data)
    tree, mirror, ref = data / "tree", data / "mirror", data / "ref"
    ref.write_bytes(b"")
    since = journal.set_checkpoint(time.time_ns()).time_ns
    tick_past(ref, since)
    changed = change_files(
        tree, random.Random(f"{time.time_ns()} {run}"), args.changes, args.files, args.dirs
    )
    first = journal.last_seq() + 1
    results: dict[str, float] = {}
    report: ScanReport | None = None
    for tool in TOOLS[run % len(TOOLS) :] + TOOLS[: run % len(TOOLS)]:  # rotate the order between runs
        if tool == "floor":
            started, cpu = time.perf_counter(), time.process_time()
            bare_walk(os.fsencode(tree))
            results["floor"], results["floor_cpu"] = time.perf_counter() - started, time.process_time() - cpu
        elif tool in SCANS:
            report = timed_scan(args, journal, tool, changed, results)
        elif tool == "find":
            argv = ["find", str(tree), "-newer", str(ref)]
            results["find"], results["find_cpu"], results["find_found"] = timed(argv)
        else:
            argv = ["rsync", "-a", "--dry-run", "--itemize-changes", "--", f"{tree}/", f"{mirror}/"]
            results["rsync"], results["rsync_cpu"], results["rsync_found"] = timed(argv)
    assert report is not None
    results.update(hashed=report.hashed, suspects=report.suspects)
    ship(journal, tree, mirror, first)
    return results


def timed_scan(
    args: argparse.Namespace, journal: Journal, tool: str, changed: set[bytes], results: dict[str, float]
) -> ScanReport:
    """One scan from the checkpoint: ``scan`` as the daemon runs it (its
    helpers started ahead, while the watches are set up: the sleep stands for
    that), ``scan_cold`` starting them itself, ``scan_1`` without helpers.
    CPU includes the helpers' (their start-up too). Checks that exactly the
    changed paths were enqueued."""
    tree = Path(args.data) / "tree"
    first = journal.last_seq() + 1
    cpu = time.process_time() + children_cpu()
    scanner = Scanner(tree, journal, Excludes(args.exclude), helpers=0 if tool == "scan_1" else None)
    if tool == "scan":
        scanner.prepare()
        time.sleep(HELPER_HEAD_START_S)
    started = time.perf_counter()
    report = scanner.scan(since_ns=journal.checkpoint().time_ns)  # type: ignore[union-attr]
    results[tool] = time.perf_counter() - started
    results[tool + "_cpu"] = time.process_time() + children_cpu() - cpu
    enqueued = [r.entry for r in journal.since(seq=first)]
    got = {e.path for e in enqueued}
    assert got == changed and all(e.op == Op.CHANGE for e in enqueued), (
        f"{tool}: enqueued {len(got)} paths, {len(got - changed)} unexpected, {len(changed - got)} missed"
    )
    results["enqueued"] = len(enqueued)
    return report


def converge(journal: Journal, tree: Path, mirror: Path) -> None:
    """A full scan ships whatever an interrupted earlier run left behind (and warms caches)."""
    first = journal.last_seq() + 1
    report = Scanner(tree, journal, Excludes(())).scan(since_ns=None)
    shipped = ship(journal, tree, mirror, first)
    print(f"warm-up full scan: {report.seconds:.3f} s, {report.hashed} hashed, {shipped} re-shipped")


def summarize(rows: list[dict[str, float]], excludes: list[str]) -> None:
    keys = (*SCANS, "find", "rsync", "floor")
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    cpu = {k: statistics.median(r[k + "_cpu"] for r in rows) for k in keys}
    print(f"\nmedians over {len(rows)} runs (warm cache; CPU = user+sys of all its processes):")
    print(f"  scanner excludes: {excludes or 'none'}")
    for k in keys:
        print(
            f"  {k:9s} wall {med[k]:7.3f} s  x{med[k] / med['find']:.2f} of find | "
            f"cpu {cpu[k]:7.3f} s  x{cpu[k] / cpu['find']:.2f} of find"
        )
    print(f"  scan / rsync -n: wall x{med['scan'] / med['rsync']:.2f}, cpu x{cpu['scan'] / cpu['rsync']:.2f}")
    print(f"  scan / floor:    wall x{med['scan'] / med['floor']:.2f}, cpu x{cpu['scan'] / cpu['floor']:.2f}")
    goal_find, goal_rsync = med["scan"] <= 1.5 * med["find"], med["scan"] < med["rsync"]
    print(
        f"  goal <= 1.5x find (wall): {'met' if goal_find else 'NOT met'}; faster than rsync -n: {goal_rsync}"
    )
    print(f"  load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/bench-data/catchup", help="bench directory (reused)")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dirs", type=int, default=1_000)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--exclude",
        action="append",
        default=None,
        help=f"exclude pattern for the scanner, repeatable (default: {' '.join(DEFAULT_EXCLUDES)}; "
        "--exclude '' for none)",
    )
    ap.add_argument("--cleanup", action="store_true", help="delete the bench directory and exit")
    args = ap.parse_args()
    args.exclude = [p for p in (DEFAULT_EXCLUDES if args.exclude is None else args.exclude) if p]
    data = Path(args.data)
    if args.cleanup:
        shutil.rmtree(data, ignore_errors=True)
        print(f"removed {data}")
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tree, mirror = data / "tree", data / "mirror"
    rebuilt = ensure_tree(tree, args.files, args.dirs)
    ensure_mirror(tree, mirror, rebuilt)
    if rebuilt and (data / "journal").exists():
        shutil.rmtree(data / "journal")
    with Journal.open(data / "journal", root=tree, tracks=[TRACK]) as journal:
        if journal.manifest_count() == 0:
            seed_manifest(journal, tree)
        converge(journal, tree, mirror)
        rows = []
        for run in range(args.runs):
            r = one_run(args, journal, run)
            rows.append(r)
            print(
                f"run {run}: scan {r['scan']:.3f} s, cold {r['scan_cold']:.3f} s, "
                f"1 process {r['scan_1']:.3f} s "
                f"(enqueued {r['enqueued']:.0f}, hashed {r['hashed']:.0f}, "
                f"suspects {r['suspects']:.0f}) | find {r['find']:.3f} s ({r['find_found']:.0f} listed) | "
                f"rsync -n {r['rsync']:.3f} s ({r['rsync_found']:.0f} itemized) | floor {r['floor']:.3f} s"
            )
        summarize(rows, args.exclude)


if __name__ == "__main__":
    main()
