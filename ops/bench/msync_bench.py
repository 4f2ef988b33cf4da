"""msync shipping benchmark: the agent's msync shipper beside plain ``msync``,
over makuosan's default TCP console and over a unix-socket console, in one run.

Real mode (the default) needs ``makuosan`` and ``msync`` on PATH (or
``MSYNC_REAL_BIN_DIR``) and root for network namespaces; elsewhere it says why
and exits 0. It builds a 3-host cluster (``tests/real_msync/cluster.py``:
sender mk1, receivers mk2 and mk3, each in its own network and UTS
namespace) and removes it at the end. For each console:

* burst: ``--rounds`` times, a fresh ``--files``-file tree (``--per-dir``
  files per directory) shipped by the agent's shipper, beside one plain
  ``msync --sync`` of a same-shaped tree (``--layout spread``: one file
  rewritten in each of ``--files`` directories, which no ``-r`` can carry) (``msync_worker.py``, run inside
  mk1's namespace, as msync would be on the sender host);
* cut: mk3's cable is pulled (its switch port down, the daemon never says
  goodbye) and ``--changes`` files are shipped one by one; printed is the time
  until the live member mk2 holds each;
* overflow (only when named in ``--phases``): a real ``agent run`` recovers
  from an inotify overflow of ``--overflow-files`` files written while it was
  stopped (``msync_overflow.py``); printed is the time until each member holds
  every file and until nothing is pending.

``--phases`` and ``--consoles`` choose what runs on the real cluster.

``--double`` runs the same against the msync test double with its cost model
at real speed (``time_scale = 1``: docs/msync.md §8 figures, 40 ms per TCP
exchange that answers, 60 s for a member that stopped answering), so the
figures can be produced without makuosan. The double is Python: its own CPU
time comes on top of the model on both sides.

Medians per file and the ratio agent/plain are printed. Trees are kept under
``--data`` (new names every run; nothing is deleted between runs), removed
only by ``--cleanup``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from msync_overflow import overflow  # noqa: E402  (ops/bench, this script's directory)

from tests.doubles.fixtures import make_double  # noqa: E402
from tests.doubles.greeter import Greeter  # noqa: E402
from tests.netns.cluster import Cluster, cleanup_stale, netns_unavailable_reason  # noqa: E402
from tests.real_msync.cluster import RealCluster, build_bridge, find_binaries  # noqa: E402

WORKER = Path(__file__).resolve().parent / "msync_worker.py"
MEMBERS = ("mk2", "mk3")


def worker_argv(phase: str, msync: Path, console: str, root: Path, tag: str, args, **extra: str) -> list[str]:
    argv = [sys.executable, str(WORKER), phase, "--msync", str(msync), "--console", console]
    argv += ["--root", str(root), "--members", *MEMBERS, "--tag", tag, "--rounds", str(args.rounds)]
    argv += ["--files", str(args.files), "--per-dir", str(args.per_dir), "--changes", str(args.changes)]
    argv += ["--layout", args.layout, *(["--no-relay"] if args.no_relay else [])]
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", v]
    return argv


def parse(res: subprocess.CompletedProcess) -> dict:
    if res.returncode != 0:
        raise SystemExit(f"worker failed (rc {res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_real(args: argparse.Namespace, tag: str) -> dict[str, dict]:
    found = find_binaries()
    if found is None:
        print("skipped: makuosan and msync are not on PATH (nor in MSYNC_REAL_BIN_DIR); try --double")
        raise SystemExit(0)
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"skipped: a real cluster needs network namespaces: {reason}; try --double")
        raise SystemExit(0)
    cleanup_stale()
    data = Path(args.data)
    work = data / "cluster"
    work.mkdir(parents=True, exist_ok=True)
    c = Cluster(data, n_hosts=3, subnet="10.214.90")
    out: dict[str, dict] = {}
    try:
        c.up()
        build_bridge(c)
        rc = RealCluster(c, found[0], found[1], work)
        for name in MEMBERS:
            rc.start(name)
        for console in args.consoles.split(","):
            rc.sender_console = console
            rc.start("mk1")
            rc.wait_members(list(MEMBERS), timeout=120)
            out[console] = {}
            if "burst" in args.phases:
                print(f"[{console}] burst: {args.rounds} rounds of {args.files} files", flush=True)
                argv = worker_argv("burst", rc.msync, rc.console, rc.root, f"{tag}-{console}", args)
                out[console] |= parse(c.run("h1", argv, timeout=3600))
            if "overflow" in args.phases:
                print(
                    f"[{console}] overflow: {args.overflow_files} files while the agent is stopped",
                    flush=True,
                )
                got = overflow(
                    c, rc, data, f"{tag}-{console}", args.overflow_files, MEMBERS, args.overflow_timeout
                )
                out[console]["overflow"] = got
            if "cut" in args.phases:
                print(f"[{console}] cut: mk3 off, {args.changes} changes", flush=True)
                c.cut("h3")
                try:
                    live = str(rc.member_dir("mk2"))
                    argv = worker_argv(
                        "cut", rc.msync, rc.console, rc.root, f"{tag}-{console}", args, live_dir=live
                    )
                    out[console] |= parse(c.run("h1", argv, timeout=3600))
                finally:
                    c.restore("h3")
            rc.stop("mk1")  # ends its retries of mk3; the next console restarts it
    finally:
        c.down()
    return out


def run_double(args: argparse.Namespace, tag: str) -> dict[str, dict]:
    """The double models a TCP console reached through the shipper's relay
    like a unix one (what the real relay measured); msync itself, plain,
    pays the 40 ms TCP penalty per answering exchange."""
    home = Path(args.data) / "double"
    relay_dir = home / "relay"
    relay_dir.mkdir(parents=True, exist_ok=True)
    greeter = Greeter()
    consoles = {"tcp": greeter.console, "unix": f"unix:{home / 'mk1.sock'}"}
    listening = (*consoles.values(), f"unix:{relay_dir / 'console.sock'}")
    dbl = make_double(home, members=MEMBERS, listening=listening)
    dbl.update(time_scale=1.0)
    env = {"env": json.dumps(dbl.env()), "relay_dir": str(relay_dir)}
    out: dict[str, dict] = {}
    for console, target in consoles.items():
        print(f"[double {console}] burst: {args.rounds} rounds of {args.files} files", flush=True)
        argv = worker_argv("burst", dbl.msync, target, dbl.base, f"{tag}-{console}", args, **env)
        out[console] = parse(subprocess.run(argv, capture_output=True, text=True, check=False))
        print(f"[double {console}] cut: mk3 stops answering, {args.changes} changes", flush=True)
        dbl.set_member("mk3", state="timeout", timeout_after=0)
        try:
            live = str(dbl.member_dir("mk2"))
            tagged = f"{tag}-{console}"
            argv = worker_argv("cut", dbl.msync, target, dbl.base, tagged, args, live_dir=live, **env)
            out[console] |= parse(subprocess.run(argv, capture_output=True, text=True, check=False))
        finally:
            dbl.set_member("mk3", state="up")
            dbl.drops().ping("mk3")
    return out


def report(out: dict[str, dict], args: argparse.Namespace, mode: str) -> None:
    if any("agent" in r for r in out.values()):
        report_burst(out, args, mode)
    if any("overflow" in r for r in out.values()):
        print(f"\noverflow recovery, {mode}: {args.overflow_files} files written while the agent was stopped")
        for console, r in out.items():
            o = r.get("overflow")
            if o is None:
                continue
            held = " ".join(f"{m} {s:.1f} s" for m, s in sorted(o["members_s"].items())) or "none"
            done = o["pending_zero_s"]
            settled = f"not within {o['timeout_s']:.0f} s" if done is None else f"{done:.1f} s"
            print(f"{console:8} overflow logged: {o['overflowed']}; every file held: {held}", end="")
            print(f"; nothing pending: {settled}")
    if any("current" in r for r in out.values()):
        report_cut(out)


def report_burst(out: dict[str, dict], args: argparse.Namespace, mode: str) -> None:
    n = args.files
    shape = f"{args.per_dir} per directory" if args.layout == "tree" else "one per directory (spread)"
    print(f"\nmsync shipping, {mode}: {n}-file burst, {shape}, 2 members,", end=" ")
    print(f"{args.rounds} rounds")
    print(f"{'console':8} {'agent ms/file':>14} {'plain ms/file':>14} {'ratio':>7}   agent s (runs)")
    for console, r in out.items():
        if "agent" not in r:
            continue
        a = statistics.median(r["agent"]) / n * 1000
        p = statistics.median(r["plain"]) / n * 1000
        runs = " ".join(f"{x:.2f}" for x in r["agent"])
        plain = " ".join(f"{x:.2f}" for x in r["plain"])
        print(f"{console:8} {a:14.2f} {p:14.2f} {a / p:7.2f}   {runs}  (plain: {plain})")
    if any(r.get("agent_model") and any(r["agent_model"]) for r in out.values()):
        print("the double's cost model alone (summed over every msync call, concurrent ones too):")
        for console, r in out.items():
            a = statistics.median(r["agent_model"]) / n * 1000
            p = statistics.median(r["plain_model"]) / n * 1000
            print(f"{console:8} {a:14.2f} {p:14.2f} {a / p:7.2f}")


def report_cut(out: dict[str, dict]) -> None:
    print("\nlive member current while the other is cut off (seconds per change, in order):")
    for console, r in out.items():
        if "current" not in r:
            continue
        cur = " ".join(f"{x:.2f}" for x in r["current"])
        calls = " ".join(f"{x:.2f}" for x in r["calls"])
        print(f"{console:8} live member current: {cur}  (max {max(r['current']):.2f})   ship calls: {calls}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--double", action="store_true", help="the msync test double at real speed, no makuosan")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--per-dir", type=int, default=100)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument(
        "--layout",
        choices=("tree", "spread"),
        default="tree",
        help="tree: each burst a new tree (default); spread: one file rewritten in each of --files dirs",
    )
    p.add_argument(
        "--no-relay", action="store_true", help="the agent's msync talks to a TCP console directly"
    )
    p.add_argument(
        "--phases",
        default="burst,cut",
        help="comma-separated: burst, cut, overflow (a real agent run recovering from an inotify overflow)",
    )
    p.add_argument("--consoles", default="tcp,unix", help="comma-separated: tcp, unix")
    p.add_argument("--overflow-files", type=int, default=19384)
    p.add_argument("--overflow-timeout", type=float, default=900.0)
    p.add_argument("--data", default="/tmp/msync-bench")
    p.add_argument("--cleanup", action="store_true", help="remove --data at the end")
    args = p.parse_args()
    tag = time.strftime("r%Y%m%d%H%M%S")
    try:
        out = run_double(args, tag) if args.double else run_real(args, tag)
        report(out, args, "test double (cost model)" if args.double else "real makuosan cluster")
    finally:
        if args.cleanup:
            shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
