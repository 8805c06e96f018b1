"""Schema migrations for the Postgres store (called by `PostgresStore.migrate`).

Migrations are numbered SQL files, `migrations/NNNN_<what>.sql`, applied in
order. Each runs in its own transaction together with its row in
`ratline_schema_version`, so a failing file leaves no trace and is retried next
time. The whole run holds a Postgres advisory lock: concurrent migrators (two
operator replicas, many workers) wait for each other and then find nothing to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import asyncpg

from ratline.errors import StoreError

log = logging.getLogger(__name__)

#: Default location of the numbered SQL files (shipped as package data).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_lock key: "ratline" as a 63-bit integer (any constant works).
ADVISORY_LOCK_KEY = 0x7261746C696E65
#: A plain or a pooled connection: both work for migrating.
Conn: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version number, name and text."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read `NNNN_name.sql` files in version order; other files are an error."""
    migrations: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise StoreError(f"migration file {path.name!r} is not named NNNN_<what>.sql")
        migrations.append(Migration(int(match[1]), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise StoreError(f"duplicate migration versions in {directory}: {versions}")
    return migrations


async def migrate(conn: Conn, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the pending migrations on `conn`; returns the versions applied now."""
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS ratline_schema_version ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version FROM ratline_schema_version")
        done = {row["version"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO ratline_schema_version (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                raise StoreError(
                    f"migration {migration.name}.sql failed and was rolled back: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.version)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now
