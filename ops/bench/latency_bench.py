"""Latency benchmark: write->mirror latency at a steady change rate, and how a
burst is batched, for two settle settings of msync-agent side by side.

One source tree (``--files`` files in 1,000 directories, created once and
reused) and one local mirror per setting. Each round, for every setting:

* latency: a writer creates ``--rate`` new files per second for
  ``--seconds`` in a fresh directory; inotify on the mirror records when each
  one lands there (the local shipper renames into place: IN_MOVED_TO);
* burst: ``--burst`` new files written as fast as possible, spread over the
  tree's existing directories; the time until the mirror holds all of them,
  and the ship batches the agent logged for it (``ship.ok`` lines: count,
  median and largest size).

Settings: ``fixed`` is a fixed settle of ``--fixed-ms`` (``quiet_ms`` equal to
``settle_ms``: every change waits that long); ``adaptive`` is the shipped
default configuration. Medians over rounds and the adaptive/fixed ratios are
printed; ``uptime``'s load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = "quiet_ms = {}\n"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from converge_bench import ROOT, VENV_BIN, Agent, Burst, build_tree, latency_run, pct, sync_mirror  # noqa: E402


class LoggingAgent(Agent):
    """The agent at log level info (``ship.ok`` lines), with a config file."""

    def __init__(self, src: Path, mirror: Path, journal: Path, log: Path, config: Path, extra: str) -> None:
        super().__init__(src, mirror, journal, log)
        config.write_text(
            f"root = {json.dumps(str(src))}\njournal = {json.dumps(str(journal))}\n{extra}"
            f'[[target]]\nname = "local"\nkind = "local"\npath = {json.dumps(str(mirror))}\n'
        )
        self.argv = [str(VENV_BIN / "agent"), "run", "--config", str(config), "--log-level", "info"]

    def __enter__(self) -> LoggingAgent:
        """Running, with its replayer started (after the startup scan: until
        then ``status`` shows nothing pending though nothing ships) and idle."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while b'"replay.start"' not in self.log.read_bytes()[offset:]:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the agent's replayer did not start; see {self.log}")
            time.sleep(0.1)
        self.wait_idle(600)
        return self


def ship_batches(log: Path, offset: int) -> list[int]:
    """Sizes (paths) of the ship.ok lines logged after ``offset``."""
    sizes = []
    with open(log, "rb") as fh:
        fh.seek(offset)
        for line in fh:
            if b'"ship.ok"' not in line:
                continue
            try:
                sizes.append(int(json.loads(line)["paths"]))
            except (ValueError, KeyError):
                continue
    return sizes


def one_setting(
    src: Path, data: Path, name: str, extra: str, tag: str, args: argparse.Namespace
) -> tuple[list[float], dict[str, float]]:
    """One round of one setting; mirror and journal live under ``data``."""
    mirror = data / f"mirror-{name}"
    sync_mirror(src, mirror)
    log = data / f"agent-{name}.log"
    agent = LoggingAgent(src, mirror, data / f"journal-{name}", log, data / f"agent-{name}.toml", extra)
    with agent:
        lat = latency_run(src, mirror, f"lat-{tag}-{name}", args.rate, args.seconds)
        agent.wait_idle(120)
        offset = log.stat().st_size
        b = Burst(src, f"burst-{tag}-{name}", args.burst, "existing")
        start, end = b.write()
        done = b.wait_mirrored(mirror, 600)
        agent.wait_idle(120)
        sizes = ship_batches(log, offset)
    burst = {
        "total": done - start,
        "after": done - end,
        "batches": float(len(sizes)),
        "median": float(statistics.median(sizes)) if sizes else 0.0,
        "largest": float(max(sizes, default=0)),
    }
    return lat, burst


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fixed-ms", type=int, default=200)
    ap.add_argument("--only", choices=("fixed", "adaptive"), default=None)
    ap.add_argument("--data", type=Path, default=ROOT / "ops" / "bench" / "results" / "latency-data")
    ap.add_argument(
        "--mirror-dir",
        type=Path,
        default=None,
        help="parent for mirrors and journals (e.g. /dev/shm: takes other processes' disk flushes"
        " out of syncfs and fsync; removed at the end); default: under --data",
    )
    args = ap.parse_args()
    args.data = args.data.resolve()  # the config file names absolute paths
    work = (
        Path(tempfile.mkdtemp(prefix="latency-bench-", dir=args.mirror_dir)) if args.mirror_dir else args.data
    )
    try:
        run(args, work)
    finally:
        if args.mirror_dir:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    src = args.data / "src"
    build_tree(src, args.files)
    settings = {"fixed": f"settle_ms = {args.fixed_ms}\n" + QUIET.format(args.fixed_ms), "adaptive": ""}
    if args.only:
        settings = {args.only: settings[args.only]}
    print(f"load average before: {load()}", flush=True)
    stamp = str(time.time_ns())
    lat: dict[str, list[list[float]]] = {k: [] for k in settings}
    burst: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for name, extra in settings.items():
            values, b = one_setting(src, work, name, extra, f"{stamp}-{r}", args)
            lat[name].append(values)
            burst[name].append(b)
            print(
                f"  {name:8s} p50 {pct(values, 0.5) * 1000:6.1f} ms  p99 {pct(values, 0.99) * 1000:6.1f} ms"
                f"  burst {b['total']:.2f}s in {b['batches']:.0f} batches (median {b['median']:.0f},"
                f" largest {b['largest']:.0f})",
                flush=True,
            )
    _summary(args, lat, burst)


def _summary(args: argparse.Namespace, lat: dict, burst: dict) -> None:  # type: ignore[type-arg]
    print(
        f"\nlatency benchmark: {args.rate} changes/s for {args.seconds:.0f}s, burst {args.burst} files"
        f" into a {args.files}-file tree, {args.rounds} rounds, mirrors and journals under"
        f" {args.mirror_dir or args.data}; medians of the rounds"
    )
    med: dict[str, dict[str, float]] = {}
    for name in lat:
        p50 = statistics.median(pct(v, 0.5) for v in lat[name]) * 1000
        p99 = statistics.median(pct(v, 0.99) for v in lat[name]) * 1000
        med[name] = {"p50": p50, "p99": p99}
        med[name] |= {k: statistics.median(b[k] for b in burst[name]) for k in burst[name][0]}
        m = med[name]
        print(
            f"  {name:8s} latency p50 {p50:6.1f} ms  p99 {p99:6.1f} ms | burst {m['total']:.2f}s"
            f" ({m['after']:.2f}s after the last write), {m['batches']:.0f} batches,"
            f" median {m['median']:.0f} paths, largest {m['largest']:.0f}"
        )
    if len(med) == 2:
        a, f = med["adaptive"], med["fixed"]
        print(
            f"  ratio adaptive/fixed: p50 {a['p50'] / f['p50']:.2f}  p99 {a['p99'] / f['p99']:.2f}"
            f"  burst time {a['total'] / f['total']:.2f}  batches {a['batches'] / max(f['batches'], 1):.2f}"
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
