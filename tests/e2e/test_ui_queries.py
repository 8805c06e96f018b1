"""The UI's store queries on a real Postgres: keyset pages, filters, namespace fences,
and the 0004 indexes serving the list (the planner's own EXPLAIN says so)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from ratline.store import Lease, NewEvent, NewRun, RunStatus, RunUpdate
from ratline.store.base import EventType
from ratline.store.migrate import load_migrations
from ratline.store.postgres import Conn, PostgresStore
from ratline.store.queries import Cursor, RunFilter, RunQueries, statuses

pytestmark = pytest.mark.integration


async def seed(store: PostgresStore, namespace: str, n: int, workflow: str = "w") -> list[str]:
    ids = []
    for i in range(n):
        run_id = str(uuid.uuid4())
        await store.create_run(
            NewRun(id=run_id, namespace=namespace, name=f"{workflow}-{i:03d}", workflow=workflow)
        )
        ids.append(run_id)
    return ids


async def steps(store: PostgresStore, run_id: str, *events: NewEvent) -> Lease:
    lease = await store.acquire_lease(run_id, "test", 30)
    await store.append(lease, list(events), RunUpdate(status=RunStatus.RUNNING))
    return lease


def test_migration_0004_is_found_and_a_gap_in_numbers_is_allowed() -> None:
    versions = [m.version for m in load_migrations()]
    assert 4 in versions
    assert versions == sorted(versions)


async def test_keyset_pages_cover_every_run_once_newest_first(pg_store: PostgresStore) -> None:
    ids = await seed(pg_store, "a", 23)
    queries = RunQueries(pg_store)
    seen: list[str] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await queries.page(RunFilter(namespace="a", limit=5, after=cursor))
        seen += [row.run.id for row in page.rows]
        pages += 1
        if page.next is None:
            break
        cursor = Cursor.decode(page.next.encode())  # the round trip the browser makes
    assert pages == 5
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    created = [r.run.created_at for r in (await queries.page(RunFilter(namespace="a"))).rows]
    assert created == sorted(created, reverse=True)


async def test_filters_and_progress(pg_store: PostgresStore) -> None:
    ids = await seed(pg_store, "a", 3, workflow="order")
    await seed(pg_store, "a", 2, workflow="approval")
    await steps(
        pg_store,
        ids[0],
        NewEvent(type=EventType.RUN_STARTED, payload={}),
        NewEvent(type=EventType.STEP_COMPLETED, command_id=1, name="charge", payload={}),
        NewEvent(type=EventType.STEP_FAILED, command_id=2, name="ship", payload={}),
    )
    queries = RunQueries(pg_store)

    async def names(**flt: Any) -> list[str]:
        page = await queries.page(RunFilter(namespace="a", **flt))
        return sorted(row.run.name for row in page.rows)

    assert await queries.workflows("a") == ["approval", "order"]
    assert await queries.workflows("b") == []
    assert await names(workflow="approval") == ["approval-000", "approval-001"]
    assert await names(statuses=statuses(["Running"])) == ["order-000"]
    assert await names(text="ORDER-00") == ["order-000", "order-001", "order-002"]
    assert await names(ids=(ids[1],)) == ["order-001"]
    assert await names(ids=()) == []  # a label selector that matched nothing
    (row,) = (await queries.page(RunFilter(namespace="a", ids=(ids[0],)))).rows
    assert (row.steps_done, row.steps_seen, row.current_step) == (1, 2, "ship")


async def test_nothing_crosses_a_namespace(pg_store: PostgresStore) -> None:
    (a_run,) = await seed(pg_store, "a", 1)
    (b_run,) = await seed(pg_store, "b", 1)
    await steps(pg_store, b_run, NewEvent(type=EventType.RUN_STARTED, payload={"secret": 1}))
    queries = RunQueries(pg_store)
    page = await queries.page(RunFilter(namespace="a"))
    assert [r.run.id for r in page.rows] == [a_run]
    assert await queries.run("a", b_run) is None
    assert await queries.history("a", b_run) == []
    assert len(await queries.history("b", b_run)) == 1
    assert await queries.children("a", b_run) == []


async def test_the_list_is_served_by_the_ui_index(pg_store: PostgresStore) -> None:
    await seed(pg_store, "a", 30)

    async def plan(conn: Conn) -> Any:
        await conn.execute("ANALYZE runs")
        await conn.execute("SET enable_seqscan = off")  # a tiny table: force the choice
        try:
            return await conn.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT * FROM runs WHERE namespace = 'a' "
                "ORDER BY created_at DESC, id DESC LIMIT 51"
            )
        finally:
            await conn.execute("RESET enable_seqscan")

    text = await pg_store._call("explain", plan)
    assert "runs_ui_ns_idx" in json.dumps(json.loads(text) if isinstance(text, str) else text)
    assert "Sort" not in json.dumps(json.loads(text) if isinstance(text, str) else text)
