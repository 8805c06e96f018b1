"""The namespaces that have runs in the store (for `ratline list -A`).

A loose index scan over `runs_ui_ns_idx` (migration 0004): one index probe per
namespace instead of reading every row, so it stays cheap with millions of runs.
Callers authorize each namespace before reading any of its runs.
"""

from __future__ import annotations

from ratline.store.postgres import Conn, PostgresStore

_NAMESPACES = """
WITH RECURSIVE ns AS (
    (SELECT namespace FROM runs ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT r.namespace FROM runs r WHERE r.namespace > ns.namespace
             ORDER BY r.namespace LIMIT 1)
      FROM ns WHERE ns.namespace IS NOT NULL
)
SELECT namespace FROM ns WHERE namespace IS NOT NULL LIMIT $1
"""


async def run_namespaces(store: PostgresStore, limit: int = 10_000) -> list[str]:
    """Every namespace with at least one run, sorted (at most `limit`)."""

    async def op(conn: Conn) -> list[str]:
        return [str(row["namespace"]) for row in await conn.fetch(_NAMESPACES, limit)]

    return await store._call("run namespaces", op)
