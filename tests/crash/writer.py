"""Random tree mutator for the crash loop: runs until its stop file appears.

Every operation the agent must mirror: create, append, overwrite in place,
truncate, chmod, rename files and directories, delete files and trees,
symlinks created and retargeted, and same-size rewrites with the old mtime
restored (what ``touch -d`` / ``cp -p`` do). Seeded, so a failure replays.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time


def _files(root: str) -> tuple[list[str], list[str], list[str]]:
    files, dirs, links = [], [], []
    for base, dnames, fnames in os.walk(root):
        for d in dnames:
            p = os.path.join(base, d)
            (links if os.path.islink(p) else dirs).append(p)
        for f in fnames:
            p = os.path.join(base, f)
            (links if os.path.islink(p) else files).append(p)
    return files, dirs, links


def _name(rng: random.Random) -> str:
    return rng.choice(["f", "g", "data", "x y", "-dash", "ü"]) + str(rng.randrange(60))


def step(root: str, rng: random.Random) -> None:
    files, dirs, _links = _files(root)
    where = rng.choice([root, *dirs]) if dirs else root
    op = rng.randrange(12)
    try:
        if op <= 2 or not files:
            with open(os.path.join(where, _name(rng)), "wb") as fh:
                fh.write(os.urandom(rng.randrange(1, 3000)))
        elif op == 3:
            with open(rng.choice(files), "ab") as fh:
                fh.write(b"more\n")
        elif op == 4:  # same-size rewrite, old mtime restored
            path = rng.choice(files)
            st = os.stat(path)
            with open(path, "r+b") as fh:
                fh.write(os.urandom(min(st.st_size, 16)))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 86_400 * 10**9))
        elif op == 5:
            os.truncate(rng.choice(files), rng.randrange(0, 10))
        elif op == 6:
            os.chmod(rng.choice(files), rng.choice([0o600, 0o644, 0o640, 0o755]))
        elif op == 7:
            src = rng.choice(files)
            os.rename(src, os.path.join(rng.choice([root, *dirs]), _name(rng)))
        elif op == 8:
            os.unlink(rng.choice(files))
        elif op == 9:
            if dirs and rng.random() < 0.4:
                victim = rng.choice(dirs)
                if rng.random() < 0.5:
                    shutil.rmtree(victim)
                else:
                    os.rename(victim, os.path.join(root, "d" + str(rng.randrange(20))))
            else:
                os.makedirs(os.path.join(where, "d" + str(rng.randrange(20)), "sub"), exist_ok=True)
        elif op == 10:
            link = os.path.join(where, "l" + str(rng.randrange(10)))
            if os.path.lexists(link) and not os.path.islink(link):
                return
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(rng.choice(["../f1", "/etc/hostname", "missing", "data3"]), link)
        else:
            path = os.path.join(where, _name(rng))
            with open(path, "wb") as fh:
                fh.write(b"x" * rng.randrange(100))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, OSError):
        pass  # racing our own renames/deletes is expected


def main() -> None:
    root, seed, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    while not os.path.exists(stop_file):
        for _ in range(20):
            step(root, rng)
        time.sleep(0.01)


if __name__ == "__main__":
    main()
