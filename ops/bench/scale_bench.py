"""Scale benchmark: what a tree of N files costs the agent, and how each cost
grows from one size to the next (the goal is linear: at most 11x for 10x files).

For each ``--files N`` a tree of N 100-byte files in N/100 leaf directories
(grouped 100 to a top directory) is built once under ``--data`` and reused:
nothing there is deleted between runs (mass deletes leave ext4 slow for
minutes). Per size:

* seed (once per journal): ``agent run`` with an empty journal and an empty
  local mirror; time until ``watch.started``, the full scan, time until the
  mirror holds everything (nothing pending), peak and steady RSS, open file
  descriptors, journal size on disk. Recorded in ``seed.json``; later runs
  reuse it (``--reseed`` seeds again into a new mirror beside the old one);
* restart catch-up (``--runs`` times): the agent stopped, 100 files appended
  to, then ``agent run`` again; time until ``watch.started``, the startup
  scan (exactly the 100 paths must be enqueued), and ``find TREE -newer REF``
  in the same run, before or after the agent by turns;
* ``agent verify`` (tree vs journal vs mirror), beside
  ``rsync -a --dry-run --itemize-changes TREE/ MIRROR/`` (stats both trees)
  and the same with ``--checksum`` (reads every file of both, as verify
  does), with the peak RSS of verify and rsync. Before verify and before
  ``--checksum``, the files' cached contents are dropped (``evict``): both
  read from the disk, as after a restart, whatever ran before them.

Each size's figures go to ``results.json`` in its directory; the growth table
compares every pair of sizes recorded there, so sizes may be run separately.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARK = ".bench-complete"
CHANGES = 100
PER_DIR = 100
SAMPLE_S = 0.25


# ------------------------------------------------------------------ the tree
def leaf_dir(i: int) -> bytes:
    return b"t%03d/d%05d" % (i // PER_DIR, i)


def file_rel(i: int) -> bytes:
    return leaf_dir(i // PER_DIR) + b"/f%07d" % i


def ensure_tree(tree: Path, files: int) -> None:
    """N files of 100 bytes, 100 to a leaf directory, 100 leaves to a top one."""
    shape = f"{files} {PER_DIR}\n"
    mark = tree / MARK
    if mark.exists() and mark.read_text() == shape:
        return
    started = time.monotonic()
    base = os.fsencode(tree)
    body = b"x" * 99 + b"\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for i in range(files):
        if i % PER_DIR == 0:
            os.makedirs(base + b"/" + leaf_dir(i // PER_DIR), exist_ok=True)
        fd = os.open(base + b"/" + file_rel(i), flags, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
    mark.write_text(shape)
    os.sync()
    print(f"built tree: {files} files ({time.monotonic() - started:.1f} s)", flush=True)


def dirs_of(files: int) -> int:
    leaves = (files + PER_DIR - 1) // PER_DIR
    return leaves + (leaves + PER_DIR - 1) // PER_DIR


# ------------------------------------------------------------------ the agent
class Agent:
    """``agent run`` on the tree with one local target, its JSON log in a file,
    its memory sampled while it runs."""

    def __init__(self, tree: Path, mirror: Path, journal: Path, log: Path) -> None:
        self.argv = [
            str(VENV_BIN / "agent"),
            "run",
            "--root",
            str(tree),
            "--journal",
            str(journal),
            "--target",
            f"local:{mirror}",
            "--exclude",
            MARK,
            "--log-level",
            "info",
        ]
        self.journal, self.log = journal, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.rss_peak_kb = 0
        self.anon_peak_kb = 0  # the process's own heap: RSS less the journal's mapped pages

    def start(self) -> None:
        self.log.write_bytes(b"")
        with open(self.log, "ab") as out:
            self.started = time.time()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)

    def events(self) -> dict[str, dict]:
        """The first log line of each event name seen so far."""
        out: dict[str, dict] = {}
        for line in self.log.read_bytes().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            out.setdefault(doc.get("event", ""), doc)
        return out

    def since_start(self, doc: dict) -> float:
        return datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp() - self.started

    def status(self) -> dict[str, int]:
        """From /proc: resident and peak memory (kB) and open descriptors."""
        assert self.proc is not None
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        self.rss_peak_kb = max(self.rss_peak_kb, out["VmHWM"])
        self.anon_peak_kb = max(self.anon_peak_kb, out["RssAnon"])
        return out

    def wait_idle(self, timeout: float) -> float:
        """Seconds from start until the startup scan is done and nothing is
        pending on any track."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last_poll = 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}; see {self.log}")
            self.status()
            if "scan.recovery" in self.events() and time.monotonic() - last_poll > 1.0:
                last_poll = time.monotonic()
                if self._idle():
                    return time.time() - self.started
            time.sleep(SAMPLE_S)
        raise RuntimeError(f"agent not idle after {timeout} s; see {self.log}")

    def _idle(self) -> bool:
        argv = [str(VENV_BIN / "agent"), "status", "--json", "--journal", str(self.journal)]
        out = subprocess.run(argv, capture_output=True)
        if out.returncode != 0:
            return False
        st = json.loads(out.stdout)
        return bool(st.get("agent", {}).get("running")) and all(
            t["pending"] == 0 for t in st["targets"].values()
        )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(300) != 0:
            raise RuntimeError(f"agent stopped with {self.proc.returncode}; see {self.log}")


def journal_bytes(journal: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in journal.iterdir() if p.is_file())


def timed(argv: list[str]) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds, peak RSS (kB) and output lines of a command."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines = proc.stdout.read().count(b"\n")
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, lines


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------ phases
def seed(work: Path, tree: Path, files: int, reseed: bool) -> tuple[Path, Path, dict]:
    """Seed a fresh journal and an empty mirror once; reuse them afterwards."""
    record = work / "seed.json"
    if record.exists() and not reseed:
        doc = json.loads(record.read_text())
        return Path(doc["mirror"]), Path(doc["journal"]), doc
    k = 0
    while (work / f"mirror-{k}").exists() or (work / f"journal-{k}").exists():
        k += 1
    mirror, journal = work / f"mirror-{k}", work / f"journal-{k}"
    mirror.mkdir()
    print(f"seeding {mirror} (older mirrors stay; remove them with --cleanup)", flush=True)
    agent = Agent(tree, mirror, journal, work / "seed.log")
    agent.start()
    seed_s = agent.wait_idle(3600)
    time.sleep(5)  # steady: the queue is drained
    steady = agent.status()
    ev = agent.events()
    agent.stop()
    doc = {
        "mirror": str(mirror),
        "journal": str(journal),
        "files": files,
        "seed_s": seed_s,
        "seed_watch_s": agent.since_start(ev["watch.started"]),
        "seed_scan_s": ev["scan.recovery"]["seconds"],
        "seed_rss_peak_mb": agent.rss_peak_kb / 1024,
        "seed_anon_peak_mb": agent.anon_peak_kb / 1024,
        "steady_rss_mb": steady["VmRSS"] / 1024,
        "steady_anon_mb": steady["RssAnon"] / 1024,
        "steady_mapped_mb": steady["RssFile"] / 1024,
        "fds": steady["fds"],
        "journal_mb": journal_bytes(journal) / 2**20,
        "seed_load": load(),
    }
    if (mirror_files := count_files(mirror)) != files:
        raise RuntimeError(f"mirror holds {mirror_files} files, the tree {files}")
    record.write_text(json.dumps(doc, indent=1) + "\n")
    return mirror, journal, doc


def count_files(top: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(top))


def catchup(work: Path, tree: Path, mirror: Path, journal: Path, files: int, run: int) -> dict:
    """Stopped agent, 100 files appended to, restart; ``find -newer`` beside it."""
    ref = work / "ref"
    ref.write_bytes(b"")
    time.sleep(0.05)
    picked = random.Random(f"{time.time_ns()}").sample(range(files), CHANGES)
    base = os.fsencode(tree)
    for i in picked:
        with open(base + b"/" + file_rel(i), "ab") as f:
            f.write(b"+")
    out: dict = {"load": load()}
    agent = Agent(tree, mirror, journal, work / "catchup.log")
    for step in ("find", "agent") if run % 2 == 0 else ("agent", "find"):
        if step == "find":
            out["find_s"], out["find_cpu_s"], _, out["find_found"] = timed(
                ["find", str(tree), "-newer", str(ref)]
            )
        else:
            agent.start()
            out["idle_s"] = agent.wait_idle(1800)
            ev = agent.events()
            agent.stop()
            rec = ev["scan.recovery"]
            out["watch_s"] = agent.since_start(ev["watch.started"])
            out["scan_s"] = rec["seconds"]
            out["enqueued"] = rec["enqueued_changes"] + rec["enqueued_deletes"]
            out["rss_peak_mb"] = agent.rss_peak_kb / 1024
            out["anon_peak_mb"] = agent.anon_peak_kb / 1024
    if out["enqueued"] != CHANGES:
        raise RuntimeError(f"the startup scan enqueued {out['enqueued']} paths, {CHANGES} changed")
    return out


def evict(*tops: Path) -> None:
    """Drop the cached contents of every regular file below ``tops``
    (``posix_fadvise(DONTNEED)``, per file: no system setting is touched), so
    the commands that read every file all start cold, whatever ran before."""
    for top in tops:
        stack = [os.fsencode(top)]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                        try:
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        finally:
                            os.close(fd)


def verify(tree: Path, mirror: Path, journal: Path) -> dict:
    argv = [str(VENV_BIN / "agent"), "verify", "--root", str(tree), "--journal", str(journal)]
    argv += ["--target", f"local:{mirror}", "--exclude", MARK]
    out: dict = {"load": load()}
    evict(tree, mirror)
    out["verify_s"], out["verify_cpu_s"], rss, _ = timed(argv)
    out["verify_rss_mb"] = rss / 1024
    rsync = ["rsync", "-a", "--dry-run", "--itemize-changes", "--", f"{tree}/", f"{mirror}/"]
    out["rsync_s"], out["rsync_cpu_s"], rss, _ = timed(rsync)
    out["rsync_rss_mb"] = rss / 1024
    checksum = ["rsync", "-a", "--checksum", "--dry-run", "--itemize-changes", "--", f"{tree}/", f"{mirror}/"]
    evict(tree, mirror)
    out["rsync_c_s"], out["rsync_c_cpu_s"], _, _ = timed(
        checksum
    )  # reads every file on both sides, as verify
    return out


# ------------------------------------------------------------------ report
ROWS = [  # (key, label, unit)
    ("seed_s", "initial seed to the mirror", "s"),
    ("seed_watch_s", "seed: start to watch.started", "s"),
    ("seed_scan_s", "seed: full scan", "s"),
    ("seed_rss_peak_mb", "seed: peak RSS", "MB"),
    ("seed_anon_peak_mb", "seed: peak RSS, heap only", "MB"),
    ("steady_rss_mb", "steady RSS after the seed", "MB"),
    ("steady_anon_mb", "  of it heap (RssAnon)", "MB"),
    ("steady_mapped_mb", "  of it journal map (RssFile)", "MB"),
    ("journal_mb", "journal size after the seed", "MB"),
    ("watch_s", "restart: start to watch.started", "s"),
    ("scan_s", "restart: catch-up scan", "s"),
    ("find_s", "find -newer (same run)", "s"),
    ("scan_over_find", "catch-up scan / find", "x"),
    ("idle_s", "restart: start to all shipped", "s"),
    ("rss_peak_mb", "restart: peak RSS", "MB"),
    ("anon_peak_mb", "restart: peak RSS, heap only", "MB"),
    ("verify_s", "agent verify", "s"),
    ("verify_rss_mb", "agent verify: peak RSS", "MB"),
    ("rsync_s", "rsync -an (same run)", "s"),
    ("verify_over_rsync", "verify / rsync -an", "x"),
    ("rsync_c_s", "rsync -an --checksum (same run; reads every file, as verify)", "s"),
    ("verify_over_rsync_c", "verify / rsync -an --checksum", "x"),
]


def summarize(runs: list[dict], seed_doc: dict, ver: dict) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("watch_s", "scan_s", "find_s", "idle_s")}
    med["rss_peak_mb"] = max(r["rss_peak_mb"] for r in runs)
    med["anon_peak_mb"] = max(r["anon_peak_mb"] for r in runs)
    med["scan_over_find"] = statistics.median(r["scan_s"] / r["find_s"] for r in runs)
    out = {k: v for k, v in seed_doc.items() if k not in ("mirror", "journal")}
    out.update(med)
    out.update(ver)
    out["verify_over_rsync"] = ver["verify_s"] / ver["rsync_s"]
    out["verify_over_rsync_c"] = ver["verify_s"] / ver["rsync_c_s"]
    out["catchup_loads"] = [r["load"] for r in runs]
    return out


def print_size(files: int, doc: dict) -> None:
    print(f"\n{files} files ({dirs_of(files)} dirs); load during catch-up runs: {doc['catchup_loads']}")
    for key, label, unit in ROWS:
        if key in doc:
            print(f"  {label:36s} {doc[key]:10.3f} {unit}")


def print_growth(results: dict[int, dict]) -> None:
    sizes = sorted(results)
    for small, big in itertools.pairwise(sizes):
        factor = big / small
        limit = factor * 1.1
        print(f"\ngrowth {small} -> {big} files (x{factor:g}; linear means <= x{limit:g}):")
        for key, label, _ in ROWS:
            a, b = results[small].get(key), results[big].get(key)
            if a is None or b is None or key.endswith("_over_find") or key.endswith("_over_rsync"):
                continue
            ratio = b / a if a else float("inf")
            verdict = "ok" if ratio <= limit else "WORSE THAN LINEAR"
            print(f"  {label:36s} x{ratio:7.2f}  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/bench-data/scale", help="bench directory (reused)")
    ap.add_argument("--files", type=int, action="append", help="tree size, repeatable (default 100000)")
    ap.add_argument("--runs", type=int, default=3, help="restart catch-ups per size")
    ap.add_argument("--reseed", action="store_true", help="seed again into a new mirror and journal")
    ap.add_argument("--report", action="store_true", help="only print the recorded figures")
    ap.add_argument("--cleanup", action="store_true", help="delete the bench directory and exit")
    args = ap.parse_args()
    data = Path(args.data)
    if args.cleanup:
        subprocess.run(["rm", "-rf", "--", str(data)], check=True)
        print(f"removed {data}")
        return
    sizes = args.files or [100_000]
    if not args.report:
        for files in sizes:
            work = data / str(files)
            tree = work / "tree"
            tree.mkdir(parents=True, exist_ok=True)
            ensure_tree(tree, files)
            mirror, journal, seed_doc = seed(work, tree, files, args.reseed)
            runs = []
            for run in range(args.runs):
                r = catchup(work, tree, mirror, journal, files, run)
                print(
                    f"{files}: catch-up run {run}: watch {r['watch_s']:.2f} s, scan {r['scan_s']:.3f} s, "
                    f"find {r['find_s']:.3f} s (x{r['scan_s'] / r['find_s']:.2f}), "
                    f"all shipped {r['idle_s']:.2f} s, load {r['load']}",
                    flush=True,
                )
                runs.append(r)
            doc = summarize(runs, seed_doc, verify(tree, mirror, journal))
            (work / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    results = {}
    for path in sorted(data.glob("*/results.json")):
        results[int(path.parent.name)] = json.loads(path.read_text())
    for files in sorted(results):
        print_size(files, results[files])
    print_growth(results)


if __name__ == "__main__":
    main()
