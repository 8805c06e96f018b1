"""Pytest plugin: a real, private Postgres for integration tests.

Fixtures, named by the state they leave:
- `postgres` (session): a started `PostgresServer` in a temporary dir, started
  only when a test asks for it, stopped and deleted at the end.
- `pg_dsn`: a fresh empty database per test (uuid name), dropped after.
- `migrated_dsn`: the same, with the Ratline schema applied.
- `pg_store`: an open `PostgresStore` on a migrated database, closed after.

The server trades durability for speed (`FAST_UNSAFE_SETTINGS`): test data is
thrown away anyway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ratline.store.postgres import PostgresStore
from tests.cluster.pg import FAST_UNSAFE_SETTINGS, PostgresServer, private_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One private server for the whole session (under /tmp: the postgres OS user
    cannot reach pytest's 0700 tmp dirs when we run as root)."""
    with private_server("ratline-pg-", settings=FAST_UNSAFE_SETTINGS) as server:
        yield server


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex}"
    dsn = postgres.create_database(name)
    try:
        yield dsn
    finally:
        postgres.drop_database(name)


async def _migrate(dsn: str) -> None:
    store = await PostgresStore.connect(dsn, max_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture
def migrated_dsn(pg_dsn: str) -> str:
    """A fresh database with the Ratline schema applied (on a thread of its own, so
    this also works when requested from inside a running event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _migrate(pg_dsn)).result()
    return pg_dsn


@pytest.fixture
async def pg_store(migrated_dsn: str) -> AsyncIterator[PostgresStore]:
    """An open store on a fresh migrated database."""
    store = await PostgresStore.connect(migrated_dsn)
    try:
        yield store
    finally:
        await store.close()
