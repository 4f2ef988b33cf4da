"""Upgrading a journal of an older schema in place (by the agent only).

Schemas 2 to 4 kept a ``latest`` index (path -> the log record of its newest
entry) that every append wrote and nothing read: it is dropped in the last
transaction, the one that stamps the schema. Its ``longpath`` rows for long
paths of log entries stay: a row names a path by its hash, so a stale one
names the same path a manifest key would.

Schema 3 lacks the ``links`` database and schemas up to 5 the ``recorded``
index: they are created in that last transaction too (an empty ``recorded``
index reads as "recorded from no entry": removals drop such states as
before, and it fills as paths are shipped again). Schema 2 also stored manifest states without a checksum: the
agent re-encodes them with one, a chunk per transaction. The schema is
stamped last: a crash midway leaves the old schema with some of the work
done, and the next open finishes it. Each old state is decoded first, so a
damaged one is reported, not re-sealed. Old log records need nothing: they
are read as they are until compaction drops them.

No state of an older schema records a link count (schema 3 wrote none, and
schema 2's states read as one name), so the new index starts empty: it
fills as multiply-linked files are shipped again, and until then the
replayer finds a file's other names by a pass over the manifest by inode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from ._layout import ADDED_IN, DROPPED_IN, SCHEMA_VERSION, Dbs
from .codec import decode_state, encode_state
from .errors import SchemaMismatch

__all__ = ["refuse_old_schema", "upgrade", "upgrade_chunk"]

_CHUNK = 10_000
_SEALED = 3  # the first schema whose states carry a checksum


def refuse_old_schema(schema: int, mode: str, where: Path) -> None:
    """A client must not write new-format values into an older journal whose
    own agent may not read them; the agent upgrades it first."""
    if schema != SCHEMA_VERSION and mode == "client":
        raise SchemaMismatch(
            f"journal {where} has schema {schema}; the agent upgrades it to {SCHEMA_VERSION}",
            path=str(where),
            hint="run 'agent run' of this version once (it upgrades the journal), then retry",
        )


def upgrade(
    write: Callable[[Callable[[lmdb.Transaction], Any]], Any], env: lmdb.Environment, dbs: Dbs, schema: int
) -> None:
    """Run :func:`upgrade_chunk` in successive write transactions until the
    manifest is done, then create the databases ``schema`` lacks (added to
    ``dbs``), drop the ones it kept and this one does not, and stamp the
    schema, in one last transaction."""
    after: bytes | None = None
    while schema < _SEALED:
        after = write(lambda txn, a=after: upgrade_chunk(txn, dbs, a))
        if after is None:
            break
    added = [n for n, since in ADDED_IN.items() if since > schema and n not in dbs]
    dropped = [n for n, since in DROPPED_IN.items() if since > schema]

    def finish(txn: lmdb.Transaction) -> dict[str, Any]:
        handles = {n: env.open_db(n.encode(), txn=txn, create=True) for n in added}
        for name in dropped:
            if txn.get(name.encode()) is not None:  # a database's record in the main db
                txn.drop(env.open_db(name.encode(), txn=txn, create=False), delete=True)
        txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=dbs["meta"])
        return handles

    dbs.update(write(finish))


def upgrade_chunk(txn: lmdb.Transaction, dbs: Dbs, after: bytes | None, limit: int = _CHUNK) -> bytes | None:
    """Re-encode the unsealed states among ``limit`` manifest keys after
    ``after``; returns the last key looked at, or None when the manifest is
    done."""
    cur = txn.cursor(db=dbs["manifest"])
    found = cur.set_range(after) if after is not None else cur.first()
    todo: list[tuple[bytes, bytes]] = []
    last, seen = after, 0
    while found and seen < limit:
        key, raw = bytes(cur.key()), cur.value()
        if key != after:
            seen += 1
            last = key
            if raw[:1] == b"\x01":
                todo.append((key, encode_state(decode_state(raw))))
        found = cur.next()
    for key, raw in todo:
        txn.put(key, raw, db=dbs["manifest"])
    return last if found else None
