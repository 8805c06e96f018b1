"""Schema migrations on a real Postgres: ordering, concurrency, failure, naming.

Operator replicas and workers all call `migrate()` at start, so concurrent
migrators must serialise on the advisory lock, and a broken file must leave
neither half a schema nor a version row behind.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from ratline.errors import StoreError
from ratline.store import EventType, InboxKind, NewEvent, NewRun
from ratline.store.migrate import MIGRATIONS_DIR, load_migrations, migrate
from ratline.store.postgres import PostgresStore

pytestmark = pytest.mark.integration


async def _versions(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM ratline_schema_version ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


async def _table_exists(dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))
    finally:
        await conn.close()


def _migrations_with(tmp_path: Path, name: str, sql: str) -> Path:
    """The shipped migrations plus one extra file, in a directory of their own."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / name).write_text(sql)
    return directory


async def test_migrate_creates_the_schema_once_and_is_idempotent(pg_dsn: str) -> None:
    store = await PostgresStore.connect(pg_dsn)
    try:
        await store.migrate()
        await store.migrate()
    finally:
        await store.close()
    shipped = [m.version for m in load_migrations()]
    assert await _versions(pg_dsn) == shipped
    for table in ("runs", "events", "inbox"):
        assert await _table_exists(pg_dsn, table), table


async def test_concurrent_migrate_from_five_connections_applies_each_file_once(
    pg_dsn: str,
) -> None:
    conns = [await asyncpg.connect(pg_dsn) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))
    shipped = [m.version for m in load_migrations()]
    assert sorted(applied, key=len) == [[], [], [], [], shipped]
    assert await _versions(pg_dsn) == shipped


async def test_failing_migration_rolls_back_and_releases_the_lock(
    pg_dsn: str, tmp_path: Path
) -> None:
    broken = _migrations_with(
        tmp_path,
        "0900_broken.sql",
        "CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n",
    )
    store = await PostgresStore.connect(pg_dsn, migrations_dir=broken)
    try:
        with pytest.raises(StoreError, match=r"0900_broken\.sql failed.*no_such_table"):
            await store.migrate()
    finally:
        await store.close()
    shipped = [m.version for m in load_migrations()]
    assert await _versions(pg_dsn) == shipped  # the good files before it stay applied
    assert not await _table_exists(pg_dsn, "half_done")

    (broken / "0900_broken.sql").write_text("CREATE TABLE half_done (x int);\n")
    conn = await asyncpg.connect(pg_dsn)
    try:  # the advisory lock was released: a later migrate is not blocked
        assert await asyncio.wait_for(migrate(conn, broken), 10) == [900]
    finally:
        await conn.close()
    assert await _table_exists(pg_dsn, "half_done")


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "README.txt").write_text("ignored: not SQL")
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_ok"]
    (tmp_path / "second.sql").write_text("SELECT 2;")
    with pytest.raises(StoreError, match=r"second\.sql"):
        load_migrations(tmp_path)


def test_migration_versions_must_be_unique(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(StoreError, match="duplicate"):
        load_migrations(tmp_path)


async def test_deleting_a_run_deletes_its_events_and_inbox(migrated_dsn: str) -> None:
    store = await PostgresStore.connect(migrated_dsn)
    try:
        await store.create_run(NewRun(id="doomed", name="d", workflow="wf"))
        await store.create_run(NewRun(id="kept", name="k", workflow="wf"))
        for run_id in ("doomed", "kept"):
            lease = await store.acquire_lease(run_id, "w")
            await store.append(lease, [NewEvent(type=EventType.RUN_STARTED)])
            await store.deliver(run_id, "sig", InboxKind.SIGNAL, 1)
    finally:
        await store.close()
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute("DELETE FROM runs WHERE id = 'doomed'")
        events = await conn.fetch("SELECT run_id FROM events")
        inbox = await conn.fetch("SELECT run_id FROM inbox")
    finally:
        await conn.close()
    assert [r["run_id"] for r in events] == ["kept"]
    assert [r["run_id"] for r in inbox] == ["kept"]
