"""Web UI page latency with many runs in the store (a benchmark, not a test).

`python -m bench.ui` (or `python -m bench --ui`) starts a throwaway Postgres,
migrates it, seeds `--runs` runs (default 10,000) in one namespace plus 2,000 in
another, six history events each, and measures on this process's clock:

- the runs-list query (`RunQueries.page`): the first page, a page 9,000 rows deep
  by keyset cursor, filtered by phase, by workflow and by search text;
- the same with migration 0004's indexes dropped, and the naive OFFSET page at
  the same depth (the baseline);
- whole HTTP answers of the real aiohttp app (`/ns/<ns>/runs` and a run page with
  1,000 history events), authorization answered by an allow-all fake reviewer so
  only the UI and the store are measured.

Writes bench/results/ui.md and ui.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from bench.private_pg import private_database, write_results
from ratline.store.postgres import PostgresStore
from ratline.store.queries import (
    OFFSET_PAGE,
    PAGE,
    WORKFLOWS,
    Cursor,
    RunFilter,
    RunQueries,
    page_args,
    statuses,
)
from ratline.ui import auth
from ratline.ui.server import Config, build_app

RESULTS = Path(__file__).resolve().parent / "results"
NS, OTHER = "big", "other"
DEPTH = 9000

_SEED_RUNS = """
INSERT INTO runs (id, namespace, name, workflow, status, history_length, created_at,
                  updated_at, started_at)
SELECT $1 || g, $1, $1 || '-run-' || g, (ARRAY['order-saga', 'approval', 'batch'])[1 + g % 3],
       (ARRAY['succeeded', 'failed', 'running', 'suspended'])[1 + g % 4], 6,
       now() - g * interval '1 second', now(), now() - g * interval '1 second'
  FROM generate_series(1, $2::int) AS g
"""
_SEED_EVENTS = """
INSERT INTO events (run_id, seq, type, command_id, name, payload)
SELECT $1 || g, s, CASE WHEN s = 1 THEN 'RunStarted' ELSE 'StepCompleted' END,
       CASE WHEN s = 1 THEN NULL ELSE s END, CASE WHEN s = 1 THEN NULL ELSE 'step-' || s END,
       '{"attempt": 1, "duration_ms": 3}'::jsonb
  FROM generate_series(1, $2::int) AS g, generate_series(1, 6) AS s
"""
_BIG_RUN = """
INSERT INTO events (run_id, seq, type, command_id, name, payload, time)
SELECT $1, s, 'StepCompleted', s, 'step-' || s, '{"attempt": 1, "duration_ms": 3}'::jsonb,
       now() - (1000 - s) * interval '10 milliseconds'
  FROM generate_series(1, 1000) AS s
"""
_DROP = ["runs_ui_ns_idx", "runs_ui_ns_status_idx", "runs_ui_ns_workflow_idx"]


class AllowAll:
    """Every token is one user who may do everything: only the UI and store are timed."""

    async def authenticate(self, token: str) -> auth.User | None:
        return auth.User("bench")

    async def allowed(self, user: auth.User, access: auth.Access) -> bool:
        return True


async def timed(reps: int, op: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await op()  # warm: prepared statements, caches
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 3),
    }


async def cursor_at(queries: RunQueries, depth: int) -> Cursor:
    flt, cursor = RunFilter(namespace=NS, limit=200), None
    for _ in range(depth // 200):
        page = await queries.page(flt.model_copy(update={"after": cursor}))
        cursor = page.next
    assert cursor is not None
    return cursor


async def server_ms(conn: asyncpg.Connection[Any], sql: str, args: Sequence[Any]) -> float:
    """Postgres' own execution time of one run of `sql` (EXPLAIN ANALYZE): free of the
    client's CPU, which a loaded machine makes noisy."""
    plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    data = json.loads(plan) if isinstance(plan, str) else plan
    return round(float(data[0]["Execution Time"]), 3)


async def query_suite(
    queries: RunQueries, reps: int, deep: Cursor, conn: asyncpg.Connection[Any]
) -> dict[str, Any]:
    base = RunFilter(namespace=NS)
    cases: dict[str, RunFilter] = {
        "first page": base,
        f"page {DEPTH} rows deep (keyset)": base.model_copy(update={"after": deep}),
        "phase=Failed": base.model_copy(update={"statuses": statuses(["Failed"])}),
        "workflow=approval": base.model_copy(update={"workflow": "approval"}),
        "search '-run-99'": base.model_copy(update={"text": "-run-99"}),
    }
    out: dict[str, Any] = {}
    for label, flt in cases.items():
        out[label] = await timed(reps, lambda flt=flt: queries.page(flt))  # type: ignore[misc]
        out[label]["server_ms"] = await server_ms(conn, PAGE, page_args(flt))
    out["workflow names (the filter's choices)"] = await timed(reps, lambda: queries.workflows(NS))
    out["workflow names (the filter's choices)"]["server_ms"] = await server_ms(
        conn, WORKFLOWS, (NS,)
    )
    label = f"page {DEPTH} rows deep (OFFSET)"
    out[label] = await timed(reps, lambda: queries.offset_page(NS, 50, DEPTH))
    out[label]["server_ms"] = await server_ms(conn, OFFSET_PAGE, (NS, 50, DEPTH))
    return out


async def http_suite(queries: RunQueries, reps: int, big_run: str) -> dict[str, Any]:
    conf = client.Configuration()
    conf.host = "https://127.0.0.1:1"  # never called: the fake reviewer answers
    app = build_app(Config(kube=conf, namespaces=(NS,)), queries, AllowAll())
    headers = {"Authorization": "Bearer bench"}
    out: dict[str, Any] = {}
    async with TestClient(TestServer(app)) as http:

        async def get(path: str) -> None:
            response = await http.get(path, headers=headers)
            assert response.status == 200, (path, response.status, await response.text())
            await response.read()

        out["GET /ns/big/runs"] = await timed(reps, lambda: get(f"/ns/{NS}/runs"))
        out["GET /ns/big/runs/_rows?phase=Running"] = await timed(
            reps, lambda: get(f"/ns/{NS}/runs/_rows?phase=Running")
        )
        timeline_only = queries.history
        out["history + timeline of a 1,000-event run"] = await timed(
            reps, lambda: _timeline(timeline_only, big_run)
        )
    return out


async def _timeline(history: Callable[[str, str], Awaitable[Any]], run_id: str) -> None:
    """The run page's store and drawing work (its Kubernetes reads are the user's)."""
    from datetime import UTC, datetime

    from ratline.ui import timeline

    events = await history(NS, run_id)
    now = datetime.now(UTC)
    timeline.svg(timeline.build(events, now), now)


async def bench(dsn: str, runs: int, reps: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    store = await PostgresStore.connect(dsn, max_size=4)
    try:
        await store.migrate()
        await conn.execute(_SEED_RUNS, NS, runs)
        await conn.execute(_SEED_EVENTS, NS, runs)
        await conn.execute(_SEED_RUNS, OTHER, 2000)
        await conn.execute(_SEED_EVENTS, OTHER, 2000)
        big_run = f"{NS}1"
        await conn.execute("DELETE FROM events WHERE run_id = $1", big_run)
        await conn.execute(_BIG_RUN, big_run)
        await conn.execute("ANALYZE runs; ANALYZE events")
        queries = RunQueries(store)
        deep = await cursor_at(queries, DEPTH)
        result: dict[str, Any] = {"runs": runs, "reps": reps}
        result["indexed"] = await query_suite(queries, reps, deep, conn)
        result["http"] = await http_suite(queries, reps, big_run)
        for name in _DROP:
            await conn.execute(f'DROP INDEX "{name}"')  # constant names, no user input
        await conn.execute("ANALYZE runs")
        await store.close()  # fresh connections: no plans cached with the old indexes
        store = await PostgresStore.connect(dsn, max_size=4)
        result["unindexed"] = await query_suite(RunQueries(store), reps, deep, conn)
        return result
    finally:
        await store.close()
        await conn.close()


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Web UI page latency",
        "",
        f"{r['runs']:,} runs in the measured namespace (plus 2,000 in another), six events "
        f"each; {r['reps']} timed repetitions after one warm-up; milliseconds on a shared "
        "2-core machine. Produced by `python -m bench.ui`.",
        "",
        "Client time is the `RunQueries` call as the UI makes it (round trip, decoding); "
        "server time is Postgres' own execution time of the same statement (EXPLAIN "
        "ANALYZE), which the machine's load disturbs far less.",
        "",
        "| runs-list query | server, 0004 indexes | without | client p50 / p95, indexes "
        "| without |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, with_ in r["indexed"].items():
        without = r["unindexed"][label]
        lines.append(
            f"| {label} | {with_['server_ms']:.2f} | {without['server_ms']:.2f} | "
            f"{with_['p50_ms']:.2f} / {with_['p95_ms']:.2f} | "
            f"{without['p50_ms']:.2f} / {without['p95_ms']:.2f} |"
        )
    lines += ["", "| whole answer (aiohttp app, real store) | p50 | p95 |", "| --- | --- | --- |"]
    for label, t in r["http"].items():
        lines.append(f"| {label} | {t['p50_ms']:.2f} | {t['p95_ms']:.2f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the big namespace")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per case")
    parser.add_argument("--out", type=Path, default=RESULTS / "ui.md")
    args = parser.parse_args(argv)
    with private_database("ratline-bench-ui-", "bench_ui") as dsn:
        result = asyncio.run(bench(dsn, args.runs, args.reps))
    write_results(args.out, result, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
