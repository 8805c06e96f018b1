"""Retention: delete the histories of runs that finished long ago, a batch at a time.

The operator calls `prune_finished` periodically when `--retention` is set. Each
call is one short transaction over at most `batch` runs, chosen oldest first
through the partial index of migration 0005 (finished runs only) and locked with
SKIP LOCKED, so a run some other session holds is skipped, not waited for, and a
live run is never touched (the status filter excludes it). Deleting a run row
deletes its events (trigger of migration 0001) and inbox (foreign key).
"""

from __future__ import annotations

from datetime import datetime

from ratline.store.base import Store
from ratline.store.postgres import Conn, PostgresStore

FINISHED = ("succeeded", "failed", "cancelled", "timed_out")
_PRUNE = """
WITH doomed AS (
    SELECT id FROM runs
     WHERE status = ANY ($1::text[]) AND finished_at < $2
     ORDER BY finished_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
DELETE FROM runs r USING doomed d WHERE r.id = d.id
"""


async def prune_finished(store: Store, finished_before: datetime, batch: int = 500) -> int:
    """Delete up to `batch` runs (and their history) finished before `finished_before`."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if not isinstance(store, PostgresStore):
        raise TypeError(f"retention needs the Postgres store, not {type(store).__name__}")

    async def op(conn: Conn) -> str:
        return await conn.execute(_PRUNE, list(FINISHED), finished_before, batch)

    tag = await store._call("prune finished runs", op)
    return int(tag.rsplit(" ", 1)[-1])


async def prune_all(store: Store, finished_before: datetime, batch: int = 500) -> int:
    """Batches until nothing older is left; returns how many runs went."""
    total = 0
    while True:
        count = await prune_finished(store, finished_before, batch)
        total += count
        if count < batch:
            return total
