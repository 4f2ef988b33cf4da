"""The measuring side of ``ops/bench/msync``: runs where msync reaches the
sender's console (inside the sender's network namespace for a real cluster),
and prints one JSON object on stdout.

``burst``: per round, two fresh trees of ``--files`` new files
(``--per-dir`` per directory), one shipped by the agent's msync shipper
(``MsyncShipper.ship`` of the plan the planner makes for them: every new
directory and file a PUT), the other by one plain ``msync --sync`` of all
its files (level 0: msync's own cost, no per-member answer); which goes
first alternates. Files get an mtime in the past, so nothing is held back
for the same-second rule.

``--layout spread`` measures the other extreme: a tree of ``--files``
directories holding a few files each is shipped once (unmeasured); each
round then rewrites one file in every directory, so no directory is whole
and every path goes out alone.

``cut``: one member is cut off (the caller cut it); ``--changes`` single
files are shipped one after another by one shipper, and for each the time
from the change until the live member holds it is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from agent.operate.config import MsyncTarget  # noqa: E402
from agent.ship.actions import Action, ActionKind, Plan  # noqa: E402
from agent.ship.base import Outcome  # noqa: E402
from agent.ship.msync.shipper import MsyncShipper  # noqa: E402

OLD = 1_600_000_000


def write_burst(root: Path, name: str, files: int, per_dir: int) -> tuple[list[bytes], list[Action]]:
    """New files ``name/bNNN/nNNNNN``; (file paths, plan actions parents first)."""
    paths: list[bytes] = []
    dirs: list[bytes] = [name.encode()]
    for i in range(files):
        d = f"{name}/b{i // per_dir:03d}"
        if i % per_dir == 0:
            (root / d).mkdir(parents=True, exist_ok=True)
            dirs.append(d.encode())
        p = root / d / f"n{i:05d}"
        p.write_bytes(b"burst %d\n" % i)
        os.utime(p, (OLD, OLD))
        paths.append(os.fsencode(f"{d}/n{i:05d}"))
    for d in reversed(dirs):
        os.utime(root / os.fsdecode(d), (OLD, OLD))
    actions = [Action(ActionKind.PUT, p) for p in [*dirs, *paths]]
    return paths, actions


def shipper(args: argparse.Namespace) -> MsyncShipper:
    target = MsyncTarget(
        name="bench",
        members=tuple(args.members),
        console=args.console,
        msync=args.msync,
        base=Path(args.root),
        console_relay=not args.no_relay,
    )
    relay_dir = Path(args.relay_dir) if args.relay_dir else None
    return MsyncShipper(target, Path(args.root), env=json.loads(args.env), relay_dir=relay_dir)


def plain(args: argparse.Namespace, paths: list[bytes]) -> float:
    argv = [os.fsencode(args.msync), b"-c", os.fsencode(args.console), b"--sync", b"--", *paths]
    env = {**os.environ, **json.loads(args.env)}
    start = time.monotonic()
    res = subprocess.run(argv, capture_output=True, env=env, check=False, timeout=600)
    took = time.monotonic() - start
    if res.returncode != 0 or res.stdout or res.stderr:
        raise SystemExit(f"plain msync failed: rc {res.returncode} {res.stdout[:200]!r} {res.stderr[:200]!r}")
    return took


def agent(args: argparse.Namespace, actions: list[Action]) -> float:
    s = shipper(args)
    start = time.monotonic()
    try:
        results = s.ship(Plan(tuple(actions)))
    finally:
        s.close()
    took = time.monotonic() - start
    bad = [(r.track, r.path, r.reason) for r in results if r.outcome is not Outcome.OK]
    if bad:
        raise SystemExit(f"agent left {len(bad)} not done, first {bad[0]}")
    return took


def model_seconds(args: argparse.Namespace) -> list[float]:
    """The test double's cost model: what each msync call so far would have
    cost on a real cluster (docs/msync.md §8), without the double's own CPU time."""
    state = json.loads(args.env).get("MSYNC_DOUBLE_STATE")
    log = Path(state) / "timing.log" if state else None
    if log is None or not log.exists():
        return []
    return [float(json.loads(line)[0]) for line in log.read_text().splitlines()]


def spread_tree(root: Path, args: argparse.Namespace) -> tuple[str, int]:
    """The spread layout's base tree, mirrored once with ``msync -r``."""
    top, per = f"{args.tag}-spread", 2 * args.rounds + 2
    for d in range(args.files):
        (root / top / f"d{d:05d}").mkdir(parents=True, exist_ok=True)
        for k in range(per):
            p = root / top / f"d{d:05d}" / f"f{k}"
            p.write_bytes(b"base\n")
            os.utime(p, (OLD, OLD))
    env = {**os.environ, **json.loads(args.env)}
    argv = [args.msync, "-c", args.console, "-r", "--", top]
    subprocess.run(argv, capture_output=True, env=env, check=True, timeout=3600)
    return top, per


def spread_round(root: Path, top: str, k: int, files: int, r: int) -> tuple[list[bytes], list[Action]]:
    """Rewrite file ``fk`` of every directory: a new size, a new mtime."""
    paths = []
    for d in range(files):
        rel = f"{top}/d{d:05d}/f{k}"
        (root / rel).write_bytes(b"round %d rewrites this file\n" % r)
        os.utime(root / rel, (OLD + r + 1, OLD + r + 1))
        paths.append(os.fsencode(rel))
    return paths, [Action(ActionKind.PUT, p) for p in paths]


def burst(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    spread = spread_tree(root, args) if args.layout == "spread" else None
    out: dict[str, list[float]] = {"agent": [], "plain": [], "agent_model": [], "plain_model": []}
    for r in range(args.rounds):
        order = ("agent", "plain") if r % 2 == 0 else ("plain", "agent")
        for who in order:
            if spread is not None:
                k = 2 * r + (who == "plain")
                paths, actions = spread_round(root, spread[0], k, args.files, r)
            else:
                paths, actions = write_burst(root, f"{args.tag}-{who}-{r}", args.files, args.per_dir)
            before = len(model_seconds(args))
            out[who].append(agent(args, actions) if who == "agent" else plain(args, paths))
            out[f"{who}_model"].append(sum(model_seconds(args)[before:]))
    return out


def cut(args: argparse.Namespace) -> dict:
    """Seconds from each change until the live member holds it, and how long
    each ship call took (the cut member's tracks stay pending)."""
    root, live = Path(args.root), Path(args.live_dir)
    s = shipper(args)
    current, calls = [], []
    for i in range(args.changes):
        rel = f"{args.tag}-cut-{i}.txt"
        (root / rel).write_bytes(b"while cut %d\n" % i)
        os.utime(root / rel, (OLD + i, OLD + i))
        arrived: list[float] = []
        start = time.monotonic()

        def watch(path: Path = live / rel, t0: float = start, arrived: list[float] = arrived) -> None:
            while time.monotonic() - t0 < 120:
                if path.exists() and path.stat().st_size > 0:
                    arrived.append(time.monotonic() - t0)
                    return
                time.sleep(0.01)

        w = threading.Thread(target=watch)
        w.start()
        s.ship(Plan((Action(ActionKind.PUT, rel.encode()),)))
        calls.append(time.monotonic() - start)
        w.join()
        current.append(arrived[0] if arrived else float("inf"))
    s.close()
    return {"current": current, "calls": calls}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=("burst", "cut"))
    p.add_argument("--msync", required=True)
    p.add_argument("--console", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--members", nargs="+", required=True)
    p.add_argument("--env", default="{}")
    p.add_argument("--tag", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--per-dir", type=int, default=100)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--live-dir")
    p.add_argument("--relay-dir", help="where the shipper's console relay puts its socket")
    p.add_argument("--no-relay", action="store_true", help="msync talks to a TCP console directly")
    p.add_argument("--layout", choices=("tree", "spread"), default="tree")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    result = burst(args) if args.phase == "burst" else cut(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
