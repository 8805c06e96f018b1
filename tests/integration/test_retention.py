"""Retention on a real Postgres: old finished runs go with their history, nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ratline.store import EventType, InboxKind, NewEvent, NewRun, RunStatus, RunUpdate
from ratline.store.postgres import PostgresStore
from ratline.store.retention import prune_all, prune_finished

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


async def seed(store: PostgresStore, run_id: str, status: RunStatus | None) -> None:
    await store.create_run(NewRun(id=run_id, name=run_id, workflow="wf"))
    lease = await store.acquire_lease(run_id, "w")
    await store.append(lease, [NewEvent(type=EventType.RUN_STARTED)])
    await store.deliver(run_id, "sig", InboxKind.SIGNAL, 1)
    await store.release_lease(lease)
    if status is not None:
        await store.set_status(run_id, RunUpdate(status=status))


async def backdate(dsn: str, **finished_days_ago: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for run_id, days in finished_days_ago.items():
            at = NOW - timedelta(days=days)
            await conn.execute("UPDATE runs SET finished_at = $2 WHERE id = $1", run_id, at)
    finally:
        await conn.close()


async def count(dsn: str, table: str, run_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        query = {
            "runs": "SELECT count(*) FROM runs WHERE id = $1",
            "events": "SELECT count(*) FROM events WHERE run_id = $1",
            "inbox": "SELECT count(*) FROM inbox WHERE run_id = $1",
        }[table]
        value: int = await conn.fetchval(query, run_id)
        return value
    finally:
        await conn.close()


async def test_prunes_only_old_finished_runs_oldest_first(
    pg_store: PostgresStore, migrated_dsn: str
) -> None:
    finals = {
        "old-ok": RunStatus.SUCCEEDED,
        "old-failed": RunStatus.FAILED,
        "old-cancelled": RunStatus.CANCELLED,
        "recent-ok": RunStatus.SUCCEEDED,
    }
    for run_id, status in finals.items():
        await seed(pg_store, run_id, status)
    await seed(pg_store, "live", RunStatus.SUSPENDED)
    await seed(pg_store, "pending", None)
    await backdate(
        migrated_dsn, **{"old-ok": 40, "old-failed": 35, "old-cancelled": 31, "recent-ok": 2}
    )
    await backdate(migrated_dsn, live=90, pending=90)  # finished_at on a live row: still kept
    cutoff = NOW - timedelta(days=30)
    assert await prune_finished(pg_store, cutoff, batch=1) == 1
    assert await count(migrated_dsn, "runs", "old-ok") == 0  # the oldest went first
    assert await count(migrated_dsn, "runs", "old-failed") == 1
    assert await prune_all(pg_store, cutoff, batch=1) == 2
    for gone in ("old-ok", "old-failed", "old-cancelled"):
        for table in ("runs", "events", "inbox"):
            assert await count(migrated_dsn, table, gone) == 0, (gone, table)
    for kept in ("recent-ok", "live", "pending"):
        assert await count(migrated_dsn, "runs", kept) == 1, kept
        assert await count(migrated_dsn, "events", kept) == 1, kept
    assert await prune_all(pg_store, cutoff) == 0


async def test_a_row_locked_elsewhere_is_skipped_not_waited_for(
    pg_store: PostgresStore, migrated_dsn: str
) -> None:
    for run_id in ("locked", "free"):
        await seed(pg_store, run_id, RunStatus.SUCCEEDED)
    await backdate(migrated_dsn, locked=60, free=50)
    holder = await asyncpg.connect(migrated_dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM runs WHERE id = 'locked' FOR UPDATE")
            pruned = await asyncio.wait_for(
                prune_finished(pg_store, NOW - timedelta(days=30), batch=10), timeout=30
            )
            assert pruned == 1
        assert await count(migrated_dsn, "runs", "free") == 0
        assert await count(migrated_dsn, "runs", "locked") == 1
    finally:
        await holder.close()
    assert await prune_finished(pg_store, NOW - timedelta(days=30), batch=10) == 1


async def test_batch_must_be_positive(pg_store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="batch"):
        await prune_finished(pg_store, NOW, batch=0)
