"""Retention pruning of 100,000 finished runs (a benchmark, not a test).

`python -m bench.retention` starts a throwaway Postgres (durable defaults),
migrates it and seeds `--runs` runs finished 40 days ago (six history events and
one inbox row each), 10,000 finished yesterday and 500 live runs. Then it prunes
everything older than 30 days with `ratline.store.retention.prune_finished`, in
batches of `--batch`, while a second connection keeps updating the live runs'
rows (what a worker's append does to its run) and times each update. Reported:
wall time of the whole prune, per-batch latency, the live updates' latency during
pruning against a quiet baseline, and that exactly the old runs went.

Writes bench/results/retention.md and retention.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.private_pg import private_database, write_results
from bench.report import machine
from ratline.store.postgres import PostgresStore
from ratline.store.retention import prune_finished

RESULTS = Path(__file__).resolve().parent / "results"
LIVE = 500
RECENT = 10_000

_SEED_RUNS = """
INSERT INTO runs (id, namespace, name, workflow, status, history_length, created_at,
                  updated_at, started_at, finished_at)
SELECT $1 || g, 'bench', $1 || '-' || g, 'wf', $2, 6,
       $3::timestamptz - interval '1 minute', $3, $3::timestamptz - interval '1 minute',
       CASE WHEN $2 IN ('running', 'suspended') THEN NULL
            ELSE $3::timestamptz + g * interval '1 ms' END
  FROM generate_series(1, $4::int) AS g
"""
_SEED_EVENTS = """
INSERT INTO events (run_id, seq, type, command_id, name, payload)
SELECT $1 || g, s, CASE WHEN s = 1 THEN 'RunStarted' ELSE 'StepCompleted' END,
       CASE WHEN s = 1 THEN NULL ELSE s END, CASE WHEN s = 1 THEN NULL ELSE 'step-' || s END,
       '{"attempt": 1, "result": "ok"}'::jsonb
  FROM generate_series(1, $2::int) AS g, generate_series(1, 6) AS s
"""
_SEED_INBOX = """
INSERT INTO inbox (run_id, name, kind, payload, consumed)
SELECT $1 || g, 'go', 'signal', 'true'::jsonb, true FROM generate_series(1, $2::int) AS g
"""
_TOUCH_LIVE = "UPDATE runs SET updated_at = now() WHERE id = $1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(dsn: str, runs: int) -> None:
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        groups = [
            ("old", "succeeded", now - timedelta(days=40), runs),
            ("recent", "failed", now - timedelta(days=1), RECENT),
            ("live", "suspended", now, LIVE),
        ]
        for prefix, status, at, n in groups:
            await conn.execute(_SEED_RUNS, prefix, status, at, n)
            await conn.execute(_SEED_EVENTS, prefix, n)
            await conn.execute(_SEED_INBOX, prefix, n)
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")  # the seed's dirty pages are not the baseline's cost
    finally:
        await conn.close()


async def touch_live(dsn: str, stop: asyncio.Event) -> list[float]:
    """Update live runs' rows one after another until `stop`; each update's ms."""
    conn = await asyncpg.connect(dsn)
    times: list[float] = []
    try:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            await conn.execute(_TOUCH_LIVE, f"live{1 + n % LIVE}")
            times.append((time.perf_counter() - started) * 1000)
            n += 1
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    return times


async def bench(dsn: str, runs: int, batch: int) -> dict[str, Any]:
    await seed(dsn, runs)
    store = await PostgresStore.connect(dsn, max_size=2)
    try:
        await store.migrate()  # a no-op: the harness migrated; proves versions match
        quiet_stop = asyncio.Event()
        quiet = asyncio.create_task(touch_live(dsn, quiet_stop))
        await asyncio.sleep(10.0)
        quiet_stop.set()
        baseline = await quiet
        stop = asyncio.Event()
        toucher = asyncio.create_task(touch_live(dsn, stop))
        cutoff = datetime.now(UTC) - timedelta(days=30)
        batches: list[float] = []
        pruned = 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            count = await prune_finished(store, cutoff, batch)
            batches.append((time.perf_counter() - t0) * 1000)
            pruned += count
            if count < batch:
                break
        wall = time.perf_counter() - started
        stop.set()
        during = await toucher
    finally:
        await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        left = {
            row["p"]: row["n"]
            for row in await conn.fetch(
                "SELECT regexp_replace(id, '[0-9]+$', '') AS p, count(*) AS n FROM runs GROUP BY 1"
            )
        }
        events_left = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    return {
        "runs": runs,
        "batch": batch,
        "pruned": pruned,
        "left": left,
        "events_left": events_left,
        "wall_s": wall,
        "runs_per_s": pruned / wall if wall else 0.0,
        "batches": len(batches),
        "batch_p50_ms": statistics.median(batches),
        "batch_p99_ms": pct(batches, 0.99),
        "batch_max_ms": max(batches),
        "live_update_baseline_p50_ms": statistics.median(baseline),
        "live_update_baseline_p99_ms": pct(baseline, 0.99),
        "live_update_during_p50_ms": statistics.median(during),
        "live_update_during_p99_ms": pct(during, 0.99),
        "live_update_during_max_ms": max(during),
        "live_updates_during": len(during),
        "machine": machine(),
    }


def render(r: dict[str, Any]) -> str:
    ok = r["pruned"] == r["runs"] and r["left"].get("old", 0) == 0
    lines = [
        "# Retention: pruning finished histories",
        "",
        f"`python -m bench.retention --runs {r['runs']} --batch {r['batch']}`; "
        f"{r['machine']['date']}, {r['machine']['cpu']}, load at start "
        f"{r['machine']['load average at start (1/5/15 min)']}; Postgres with durable defaults.",
        "",
        f"Seeded {r['runs']:,} runs finished 40 days ago (6 events + 1 inbox row each), "
        f"{RECENT:,} finished yesterday and {LIVE} live runs; pruned everything finished "
        "more than 30 days ago while another connection kept updating live runs' rows.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| runs pruned | {r['pruned']:,} ({'exactly the old ones' if ok else 'MISMATCH'}) |",
        f"| left | {', '.join(f'{k}: {v:,}' for k, v in sorted(r['left'].items()))} |",
        f"| events left | {r['events_left']:,} |",
        f"| wall time | {r['wall_s']:.1f} s ({r['runs_per_s']:,.0f} runs/s) |",
        f"| batches | {r['batches']} of {r['batch']} |",
        f"| batch latency p50 / p99 / max | {r['batch_p50_ms']:.0f} / "
        f"{r['batch_p99_ms']:.0f} / {r['batch_max_ms']:.0f} ms |",
        f"| live-run update, quiet: p50 / p99 | {r['live_update_baseline_p50_ms']:.2f} / "
        f"{r['live_update_baseline_p99_ms']:.2f} ms |",
        f"| live-run update, while pruning: p50 / p99 / max | "
        f"{r['live_update_during_p50_ms']:.2f} / {r['live_update_during_p99_ms']:.2f} / "
        f"{r['live_update_during_max_ms']:.2f} ms ({r['live_updates_during']:,} updates) |",
        "",
        "Live runs are never selected (status filter) and rows locked by anyone are",
        "skipped (SKIP LOCKED), so a live run's update never waits on a prune batch; what",
        "it does feel is the shared disk and CPU of the batches' commits.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000, help="old finished runs to prune")
    parser.add_argument("--batch", type=int, default=500, help="runs per prune transaction")
    parser.add_argument("--out", type=Path, default=RESULTS / "retention.md")
    args = parser.parse_args(argv)
    with private_database("ratline-bench-retention-", "bench_retention") as dsn:
        result = asyncio.run(_migrated_bench(dsn, args.runs, args.batch))
    write_results(args.out, result, render)
    return 0


async def _migrated_bench(dsn: str, runs: int, batch: int) -> dict[str, Any]:
    store = await PostgresStore.connect(dsn, max_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()
    return await bench(dsn, runs, batch)


if __name__ == "__main__":
    sys.exit(main())
