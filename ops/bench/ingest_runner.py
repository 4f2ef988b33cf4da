"""A watcher-only agent for the ingest benchmark: watch ``--root``, journal into
``--journal``, nothing else. Writes ``--ready`` once the watches are in place,
and ``--stats`` (JSON) every 50 ms and at exit; ``sentinel_ns`` tells when the
sentinel name was first journaled.
Stops on SIGTERM/SIGINT (the handler only sets a flag).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.tree.excludes import Excludes  # noqa: E402
from agent.watch.watcher import Watcher  # noqa: E402
from journal import Entry, Journal  # noqa: E402


class MeteredJournal:
    """Delegates ``append`` and records batch sizes and when ``sentinel`` became durable."""

    def __init__(self, journal: Journal, sentinel: bytes) -> None:
        self.journal = journal
        self.sentinel = sentinel
        self.sizes: list[int] = []
        self.append_s = 0.0
        self.sentinel_ns: int | None = None
        self.first_ns: int | None = None

    def append(self, entries: list[Entry], **kwargs: object) -> object:
        started = time.perf_counter()
        result = self.journal.append(entries, **kwargs)  # type: ignore[arg-type]
        self.append_s += time.perf_counter() - started
        if entries:
            now = time.time_ns()
            self.first_ns = self.first_ns or now
            self.sizes.append(len(entries))
            if self.sentinel_ns is None and any(e.path == self.sentinel for e in entries):
                self.sentinel_ns = now
        return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--journal", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--sentinel", default=".bench-done")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    journal = Journal.open(args.journal, root=args.root)
    metered = MeteredJournal(journal, args.sentinel.encode())
    watcher = Watcher(Path(args.root), metered, Excludes([]))  # type: ignore[arg-type]
    watcher.start()
    Path(args.ready).write_text(str(watcher.watches))
    thread = threading.Thread(target=watcher.run, args=(stop,), name="watcher")
    thread.start()
    while thread.is_alive() and not stop.wait(0.05):
        _write_stats(Path(args.stats), watcher, metered)
    thread.join()
    _write_stats(Path(args.stats), watcher, metered)
    journal.close()
    return 0


def _write_stats(path: Path, watcher: Watcher, metered: MeteredJournal) -> None:
    stats = {
        "events_read": watcher.events_read,
        "entries_journaled": watcher.entries_journaled,
        "batches": watcher.batches,
        "overflows": watcher.overflows,
        "sizes": metered.sizes,
        "append_s": metered.append_s,
        "first_ns": metered.first_ns,
        "sentinel_ns": metered.sentinel_ns,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
