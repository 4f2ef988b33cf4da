"""Convergence benchmark for the local shipper, side by side with lsyncd and rsync.

One source tree (``--files`` files in 1,000 directories, created once and
reused: nothing is deleted between runs, since mass deletes leave ext4
without a journal slow for minutes) and one mirror per contender. Each round:

* latency: msync-agent runs; a writer creates files at 100 and 1,000
  changes/s; inotify on the mirror records when each one lands there;
* burst: ``--burst`` new files are written as fast as possible, spread over
  the tree's existing directories (``--layout existing``, the default) or in
  fresh directories (``--layout fresh``), then the time until the mirror
  holds all of them is taken, for
  msync-agent, for lsyncd (``default.rsync``, ``delay = 1``), and for one
  plain ``rsync -a SRC/ MIRROR/`` started right after the burst.

Burst times are printed from the start of the burst and from its last write
to the mirror being complete. Medians over ``--rounds`` and ratios are printed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from inotify_simple import INotify, flags

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARK = ".bench-complete"


def build_tree(src: Path, files: int) -> None:
    shape = f"{files}\n"
    if (src / MARK).exists() and (src / MARK).read_text() == shape:
        return
    print(f"creating source tree: {files} files in {src}", flush=True)
    for i in range(files):
        d = src / f"d{i % 1000:04d}"
        if i < 1000:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}").write_bytes(b"base %d\n" % i)
    (src / MARK).write_text(shape)


def sync_mirror(src: Path, mirror: Path) -> None:
    mirror.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rsync", "-a", f"{src}/", f"{mirror}/"], check=True)


class Burst:
    """A burst of ``count`` new files, either in fresh directories under
    ``src/NAME`` (100 per directory) or spread over the tree's existing
    1,000 directories (``existing``: what edits to a live web root look like)."""

    def __init__(self, src: Path, name: str, count: int, layout: str) -> None:
        self.src, self.name, self.count, self.layout = src, name, count, layout

    def files(self) -> list[Path]:
        if self.layout == "fresh":
            return [Path(self.name) / f"b{i // 100:03d}" / f"n{i:05d}" for i in range(self.count)]
        return [Path(f"d{i % 1000:04d}") / f"{self.name}-n{i:05d}" for i in range(self.count)]

    def write(self) -> tuple[float, float]:
        """Create the files as fast as possible; (start, end) monotonic times."""
        start = time.monotonic()
        for rel in self.files():
            path = self.src / rel
            if self.layout == "fresh" and rel.name.endswith("00"):
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"burst %s\n" % rel.name.encode())
        return start, time.monotonic()

    def wait_mirrored(self, mirror: Path, timeout: float) -> float:
        """Poll until every burst file exists in ``mirror``; returns that time."""
        pending = [mirror / rel for rel in self.files()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [p for p in pending if not p.exists()]
            if not pending:
                return time.monotonic()
            time.sleep(0.02)
        raise RuntimeError(f"{len(pending)} of {self.count} burst files never reached {mirror}")


class Agent:
    def __init__(self, src: Path, mirror: Path, journal: Path, log: Path) -> None:
        self.argv = [
            str(VENV_BIN / "agent"),
            "run",
            "--root",
            str(src),
            "--journal",
            str(journal),
            "--target",
            f"local:{mirror}",
            "--log-level",
            "warning",
        ]
        self.log, self.journal = log, journal
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Agent:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self.wait_idle(600)
        return self

    def wait_idle(self, timeout: float) -> None:
        """Until the agent runs and nothing is pending (startup scan shipped)."""
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [str(VENV_BIN / "agent"), "status", "--json", "--journal", str(self.journal)],
                capture_output=True,
            )
            if out.returncode == 0:
                st = json.loads(out.stdout)
                running = st.get("agent", {}).get("running")
                if running and all(t["pending"] == 0 for t in st["targets"].values()):
                    return
            time.sleep(0.3)
        raise RuntimeError("agent did not become idle")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)


class Lsyncd:
    def __init__(self, src: Path, mirror: Path, work: Path) -> None:
        self.conf, self.log = work / "lsyncd.conf", work / "lsyncd.log"
        self.conf.write_text(
            f"settings {{ nodaemon = true, logfile = '{self.log}', insist = true }}\n"
            f"sync {{ default.rsync, source = '{src}', target = '{mirror}', delay = 1 }}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Lsyncd:
        start = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            ["lsyncd", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.log.exists() and b"finished" in self.log.read_bytes()[start:]:
                return self
            time.sleep(0.2)
        raise RuntimeError("lsyncd startup did not finish")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def latency_run(src: Path, mirror: Path, name: str, rate: int, seconds: float) -> list[float]:
    """Write ``rate`` files/s for ``seconds``; latency of each to the mirror."""
    sdir, mdir = src / name, mirror / name
    sdir.mkdir()
    wait_complete_dir(mdir, 30)
    arrived: dict[str, float] = {}
    ino = INotify()
    ino.add_watch(mdir, flags.MOVED_TO | flags.CLOSE_WRITE)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for ev in ino.read(timeout=100):
                arrived.setdefault(ev.name, time.monotonic())

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    written: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fname = f"w{i:06d}"
        (sdir / fname).write_bytes(b"latency %d\n" % i)
        written[fname] = time.monotonic()
    deadline = time.monotonic() + 60
    while len([n for n in written if n in arrived]) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    t.join()
    ino.close()
    missing = [n for n in written if n not in arrived]
    if missing:
        raise RuntimeError(f"{len(missing)} files never reached the mirror")
    return [arrived[n] - written[n] for n in written]


def wait_complete_dir(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.02)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def record(burst: dict, who: str, start: float, end: float, done: float) -> None:
    burst[who]["total"].append(done - start)
    burst[who]["after"].append(done - end)
    burst[who]["write"].append(end - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--layout", choices=("existing", "fresh"), default="existing")
    ap.add_argument("--data", type=Path, default=ROOT / "ops" / "bench" / "results" / "converge-data")
    ap.add_argument("--cleanup", action="store_true", help="delete the data directory at the end")
    args = ap.parse_args()
    for tool in ("rsync", "lsyncd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (ops/test installs it)")
    data = args.data
    src = data / "src"
    mirrors = {k: data / f"mirror-{k}" for k in ("agent", "lsyncd", "rsync")}
    build_tree(src, args.files)
    stamp = str(time.time_ns())
    lat: dict[int, list[float]] = {100: [], 1000: []}
    burst: dict[str, dict[str, list[float]]] = {k: {"total": [], "after": [], "write": []} for k in mirrors}
    for r in range(args.rounds):
        tag = f"{stamp}-{r}"
        for m in mirrors.values():
            sync_mirror(src, m)  # every contender starts from an identical mirror
        print(f"round {r + 1}/{args.rounds}", flush=True)
        with Agent(src, mirrors["agent"], data / "journal", data / "agent.log") as agent:
            for rate in lat:
                lat[rate] += latency_run(
                    src, mirrors["agent"], f"lat-{tag}-{rate}", rate, args.latency_seconds
                )
            agent.wait_idle(120)
            b = Burst(src, f"burst-{tag}-agent", args.burst, args.layout)
            start, end = b.write()
            done = b.wait_mirrored(mirrors["agent"], 600)
            record(burst, "agent", start, end, done)
        with Lsyncd(src, mirrors["lsyncd"], data):
            b = Burst(src, f"burst-{tag}-lsyncd", args.burst, args.layout)
            start, end = b.write()
            record(burst, "lsyncd", start, end, b.wait_mirrored(mirrors["lsyncd"], 600))
        b = Burst(src, f"burst-{tag}-rsync", args.burst, args.layout)
        start, end = b.write()
        subprocess.run(["rsync", "-a", f"{src}/", f"{mirrors['rsync']}/"], check=True)
        record(burst, "rsync", start, end, time.monotonic())
    print(f"\nconverge benchmark: tree {args.files} files, burst {args.burst} files, {args.rounds} rounds")
    print("write->mirror latency, msync-agent local shipper:")
    for rate, values in lat.items():
        print(
            f"  {rate:5d} changes/s: p50 {pct(values, 0.5) * 1000:7.1f} ms   "
            f"p99 {pct(values, 0.99) * 1000:7.1f} ms   (n={len(values)})"
        )
    print(f"burst convergence ({args.layout} layout), median of rounds, seconds:")
    print(f"  {'':8s} {'from burst start':>17s} {'after last write':>17s} {'burst writing':>14s}")
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in burst.items()}
    for k in burst:
        runs = ", ".join(f"{x:.2f}" for x in burst[k]["total"])
        print(
            f"  {k:8s} {med[k]['total']:17.2f} {med[k]['after']:17.2f} {med[k]['write']:14.2f}   runs: {runs}"
        )
    for m in ("total", "after"):
        print(
            f"  ratio ({m}): agent/lsyncd {med['agent'][m] / med['lsyncd'][m]:.3f}   "
            f"agent/rsync {med['agent'][m] / med['rsync'][m]:.3f}"
        )
    if args.cleanup:
        shutil.rmtree(data)


if __name__ == "__main__":
    main()
