"""The store's one retry layer against a real outage (issue 8, item 1): a call made
while Postgres is down waits for it within `retry_s`, logging each retry, and an
append lands exactly once; past the budget the call fails naming the budget."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from ratline.errors import StoreError
from ratline.store import EventType, NewEvent, NewRun
from ratline.store.postgres import PostgresStore
from tests.cluster.pg import PostgresServer

pytestmark = pytest.mark.integration


async def _run(store: PostgresStore) -> str:
    run_id = f"run-{uuid.uuid4()}"
    await store.create_run(NewRun(id=run_id, name=run_id[:20], workflow="wf"))
    return run_id


def _step(name: str) -> NewEvent:
    return NewEvent(type=EventType.STEP_COMPLETED, command_id=1, name=name, payload={"r": 1})


@pytest.mark.timeout(180)
async def test_an_append_made_during_an_outage_lands_once_when_postgres_is_back(
    postgres: PostgresServer, migrated_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await PostgresStore.connect(migrated_dsn, retry_s=120)
    try:
        run_id = await _run(store)
        lease = await store.acquire_lease(run_id, "w", ttl_s=5)  # expires during the outage
        caplog.set_level(logging.WARNING, logger="ratline.store.pg_connection")
        await asyncio.to_thread(postgres.stop)
        try:
            append = asyncio.create_task(store.append(lease, [_step("during")]))
            while sum("lost the connection" in r.getMessage() for r in caplog.records) < 3:
                assert not append.done(), append  # it must wait, not fail
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(postgres.resume)
        written = await asyncio.wait_for(append, 60)
        assert [(e.seq, e.name) for e in written] == [(1, "during")]
        history = await store.load_history(run_id)
        assert [(e.seq, e.name) for e in history] == [(1, "during")]
        retries = [r for r in caplog.records if "lost the connection" in r.getMessage()]
        assert all(f"append {run_id}" in r.getMessage() for r in retries)
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_a_call_gives_up_after_the_budget_and_says_so(
    postgres: PostgresServer, migrated_dsn: str
) -> None:
    store = await PostgresStore.connect(migrated_dsn, retry_s=1.5)
    try:
        run_id = await _run(store)
        await asyncio.to_thread(postgres.stop)
        try:
            with pytest.raises(
                StoreError, match=r"get_run .*lost the connection.*\(gave up after 1.5 s\)"
            ) as info:
                await store.get_run(run_id)
            assert f"127.0.0.1:{postgres.port}" in str(info.value)
        finally:
            await asyncio.to_thread(postgres.resume)
        record = await store.get_run(run_id)  # and the store works again afterwards
        assert record is not None
    finally:
        await store.close()
