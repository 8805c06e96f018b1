"""The LISTEN connection behind `wait_for_change` heals itself (issue 8, item 2): its
backend terminated by an administrator, or Postgres restarted or down for a while,
waits never raise, and notifications arrive again once it has reconnected."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from ratline.store import InboxKind, NewRun
from ratline.store.postgres import PostgresStore
from tests.cluster.pg import PostgresServer

pytestmark = pytest.mark.integration

_LISTENERS = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()
"""


async def _run(store: PostgresStore) -> str:
    run_id = f"run-{uuid.uuid4()}"
    await store.create_run(NewRun(id=run_id, name=run_id[:20], workflow="wf"))
    return run_id


async def _listener_pids(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["pid"] for row in await conn.fetch(_LISTENERS)]
    finally:
        await conn.close()


async def _until_reconnected(store: PostgresStore, reconnects: int) -> None:
    """Wait (not sleep-and-hope) until the listener has LISTENed again `reconnects` times."""
    deadline = time.monotonic() + 60
    while store._listener.reconnects < reconnects:
        assert time.monotonic() < deadline, "the LISTEN connection never came back"
        await store.wait_for_change(None, 0.2)  # never raises, whatever the connection does


async def _notified_after_delivery(store: PostgresStore, run_id: str, name: str) -> bool:
    waiter = asyncio.create_task(store.wait_for_change(run_id, 30))
    await asyncio.sleep(0.05)  # let it register
    assert not waiter.done()
    await store.deliver(run_id, name, InboxKind.SIGNAL, 1)
    return await asyncio.wait_for(waiter, 35)


async def test_a_terminated_listen_backend_is_replaced_and_notifications_arrive(
    pg_store: PostgresStore, migrated_dsn: str
) -> None:
    run_id = await _run(pg_store)
    assert await pg_store.wait_for_change(run_id, 0.01) is False  # opens the listener
    [old_pid] = await _listener_pids(migrated_dsn)
    waiter = asyncio.create_task(pg_store.wait_for_change(run_id, 30))
    await asyncio.sleep(0.05)
    admin = await asyncpg.connect(migrated_dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid) is True
    finally:
        await admin.close()
    assert await asyncio.wait_for(waiter, 35) is True  # woken: something may have been missed
    await _until_reconnected(pg_store, 1)
    [new_pid] = await _listener_pids(migrated_dsn)
    assert new_pid != old_pid
    assert await _notified_after_delivery(pg_store, run_id, "after-terminate") is True


@pytest.mark.timeout(240)
async def test_the_listener_rides_out_a_restart_and_an_outage(
    pg_store: PostgresStore, postgres: PostgresServer, migrated_dsn: str
) -> None:
    run_id = await _run(pg_store)
    assert await pg_store.wait_for_change(run_id, 0.01) is False
    await asyncio.to_thread(postgres.restart)
    await _until_reconnected(pg_store, 1)
    assert await _notified_after_delivery(pg_store, run_id, "after-restart") is True
    try:
        await asyncio.to_thread(postgres.stop)
        for _ in range(3):  # down: waits time out quietly instead of raising
            assert await pg_store.wait_for_change(run_id, 0.5) in (True, False)
    finally:
        await asyncio.to_thread(postgres.resume)
    await _until_reconnected(pg_store, 2)
    assert await _notified_after_delivery(pg_store, run_id, "after-outage") is True
