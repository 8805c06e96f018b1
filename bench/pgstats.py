"""What a benchmark costs Postgres: commits, WAL bytes, and the price of one durable commit.

Both sides of the benchmark (Ratline and DBOS, each in its own process) read
these counters around their timed work from an admin connection on another
database, so the reads themselves are not counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import asyncpg

#: Postgres 15 backends publish their statistics at most once a second, and
#: within about a second of going idle: wait this long before reading them.
STATS_SETTLE_S = 2.0


@dataclass(frozen=True)
class Counters:
    commits: int  # pg_stat_database.xact_commit of the benchmark's database
    rows_written: int  # tup_inserted + tup_updated + tup_deleted of that database
    wal_lsn: int  # pg_current_wal_lsn() as a byte position

    def minus(self, before: Counters) -> tuple[int, int]:
        """Commits and WAL bytes since `before`."""
        return self.commits - before.commits, self.wal_lsn - before.wal_lsn

    def rows_since(self, before: Counters) -> int:
        return self.rows_written - before.rows_written


def lsn_bytes(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


async def read_counters(admin_dsn: str, database: str) -> Counters:
    """Settle, then read the counters (the admin connection's own work is elsewhere)."""
    await asyncio.sleep(STATS_SETTLE_S)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS written,"
            " pg_current_wal_lsn()::text AS lsn FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError(f"database {database!r} has no statistics row")
    return Counters(
        commits=int(row["xact_commit"]),
        rows_written=int(row["written"]),
        wal_lsn=lsn_bytes(str(row["lsn"])),
    )


async def commit_floor_ms(dsn: str, commits: int = 500, reps: int = 5) -> float:
    """Median time of one durable single-row INSERT commit: no engine beats this per commit."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY)")
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            for _ in range(commits):
                await conn.execute("INSERT INTO bench_floor DEFAULT VALUES")
            samples.append((time.perf_counter() - started) * 1000 / commits)
        await conn.execute("DROP TABLE bench_floor")
    finally:
        await conn.close()
    return statistics.median(samples)


async def concurrent_commits_per_s(
    dsn: str, *, notify: bool, connections: int = 16, each: int = 100
) -> float:
    """Single-row commits per second from `connections` clients at once, with or without
    a `pg_notify` in each transaction (Postgres serialises the commits of notifying
    transactions, so they cannot share a disk flush)."""
    statement = (
        "WITH i AS (INSERT INTO bench_concurrent DEFAULT VALUES RETURNING id)"
        " SELECT pg_notify('ratline_bench', id::text) FROM i"
        if notify
        else "INSERT INTO bench_concurrent DEFAULT VALUES"
    )
    pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections)
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS bench_concurrent (id bigserial PRIMARY KEY)")

        async def client() -> None:
            async with pool.acquire() as conn:
                for _ in range(each):
                    await conn.execute(statement)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - started
        await pool.execute("DROP TABLE bench_concurrent")
    finally:
        await pool.close()
    return connections * each / elapsed


async def server_facts(dsn: str) -> dict[str, str]:
    """The settings that decide commit cost, recorded next to the numbers."""
    conn = await asyncpg.connect(dsn)
    try:
        facts = {}
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
        ):
            facts[name] = str(await conn.fetchval("SELECT current_setting($1)", name))
    finally:
        await conn.close()
    return facts
