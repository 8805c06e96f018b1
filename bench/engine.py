"""Ratline's side of the benchmark: the engine on a `PostgresStore`, timed in-process.

`python -m bench` runs each scenario here in a process of its own
(`python -m bench.engine SCENARIO --dsn ... --admin-dsn ...`), which prints one
JSON object on its last line. Scenarios:

- `sequential`: one run of N `ctx.run` no-op steps per repetition; per-step time
  of the whole activation, plus commits and WAL bytes per step.
- `memory`: the same on a `MemoryStore`: the engine's own cost, no I/O.
- `fanout`: N three-step runs created and activated at once (`asyncio.gather`).
- `replay`: runs with N recorded steps, replayed by a fresh activation; also
  from a preloaded history, to separate the engine from loading.
- `floor`: the price of one durable commit on this server (no engine).
- `profile`: cProfile of `sequential` and `fanout`, top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.pgstats import (
    commit_floor_ms,
    concurrent_commits_per_s,
    read_counters,
    server_facts,
)
from ratline import WorkflowContext, workflow
from ratline.engine import Execution, activate
from ratline.sdk import spec_of
from ratline.store import EventType, NewEvent, NewRun, RunStatus, RunUpdate, Store
from ratline.store.memory import MemoryStore
from ratline.store.postgres import PostgresStore

OWNER = "bench-worker"


def noop() -> None:
    return None


@workflow(name="bench-sequential")
async def sequential_wf(ctx: WorkflowContext, steps: int) -> int:
    for _ in range(steps):
        await ctx.run("noop", noop)
    return steps


@workflow(name="bench-three-steps")
async def three_steps_wf(ctx: WorkflowContext, n: int) -> int:
    await ctx.run("first", noop)
    await ctx.run("second", noop)
    await ctx.run("third", noop)
    return n


async def new_run(store: Store, workflow: str, inp: Any) -> str:
    run_id = str(uuid.uuid4())
    await store.create_run(NewRun(id=run_id, name=f"b-{run_id[:8]}", workflow=workflow, input=inp))
    return run_id


async def run_sequential(store: Store, steps: int) -> float:
    """Seconds for one activation that runs `steps` steps to completion."""
    run_id = await new_run(store, "bench-sequential", steps)
    started = time.perf_counter()
    outcome = await activate(store, run_id, owner=OWNER, spec=spec_of(sequential_wf))
    elapsed = time.perf_counter() - started
    if outcome.status is not RunStatus.SUCCEEDED:
        raise RuntimeError(f"benchmark run did not succeed: {outcome.describe()}")
    return elapsed


async def sequential(
    dsn: str, admin_dsn: str, database: str, steps: int, reps: int
) -> dict[str, Any]:
    """Counters span the warm-up too, from before the pool opens until after it closes:
    Postgres publishes a backend's last statistics only when it exits."""
    setup = await PostgresStore.connect(dsn, max_size=1)
    await setup.migrate()
    await setup.close()
    warmup = 50
    before = await read_counters(admin_dsn, database)
    store = await PostgresStore.connect(dsn, max_size=4)
    try:
        await run_sequential(store, warmup)  # connections, code paths, caches
        cpu = time.process_time()
        seconds = [await run_sequential(store, steps) for _ in range(reps)]
        cpu = time.process_time() - cpu
    finally:
        await store.close()
    after = await read_counters(admin_dsn, database)
    commits, wal = after.minus(before)
    total_steps = steps * reps + warmup
    per_step = [s * 1000 / steps for s in seconds]
    return {
        "per_step_ms": per_step,
        "median_per_step_ms": statistics.median(per_step),
        "cpu_ms_per_step": cpu * 1000 / (steps * reps),
        "commits_per_step": commits / total_steps,
        "rows_written_per_step": after.rows_since(before) / total_steps,
        "wal_bytes_per_step": wal / total_steps,
    }


async def memory(steps: int, reps: int) -> dict[str, Any]:
    seconds = []
    for _ in range(reps + 1):
        seconds.append(await run_sequential(MemoryStore(), steps))
    per_step = [s * 1000 / steps for s in seconds[1:]]  # the first one warms up
    return {"per_step_ms": per_step, "median_per_step_ms": statistics.median(per_step)}


async def run_fanout(store: Store, workflows: int) -> float:
    """Seconds to create `workflows` runs and drive them all to completion at once."""
    spec = spec_of(three_steps_wf)
    started = time.perf_counter()
    ids = await asyncio.gather(*(new_run(store, spec.name, i) for i in range(workflows)))
    outcomes = await asyncio.gather(*(activate(store, i, owner=OWNER, spec=spec) for i in ids))
    elapsed = time.perf_counter() - started
    bad = [o.describe() for o in outcomes if o.status is not RunStatus.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} benchmark runs did not succeed, e.g. {bad[0]}")
    return elapsed


async def fanout(
    dsn: str, admin_dsn: str, database: str, workflows: int, pool: int, reps: int
) -> dict[str, Any]:
    setup = await PostgresStore.connect(dsn, max_size=1)
    await setup.migrate()
    await setup.close()
    warmup = 20
    before = await read_counters(admin_dsn, database)
    store = await PostgresStore.connect(dsn, min_size=pool, max_size=pool)
    try:
        await run_fanout(store, warmup)
        cpu = time.process_time()
        rates = [workflows / await run_fanout(store, workflows) for _ in range(reps)]
        cpu = time.process_time() - cpu
    finally:
        await store.close()
    after = await read_counters(admin_dsn, database)
    commits, _ = after.minus(before)
    return {
        "workflows_per_s": rates,
        "median_workflows_per_s": statistics.median(rates),
        "cpu_ms_per_workflow": cpu * 1000 / (workflows * reps),
        "commits_per_workflow": commits / (workflows * reps + warmup),
    }


async def build_history(store: Store, steps: int) -> str:
    """A run whose history holds `steps` completed no-op steps, written in big appends."""
    run_id = await new_run(store, "bench-sequential", steps)
    lease = await store.acquire_lease(run_id, "bench-builder")
    events = [NewEvent(type=EventType.RUN_STARTED, payload={"input": steps})]
    events += [
        NewEvent(
            type=EventType.STEP_COMPLETED,
            command_id=i,
            name="noop",
            payload={"result": None, "attempt": 1, "duration_ms": 0.002},
        )
        for i in range(1, steps + 1)
    ]
    update: RunUpdate | None = RunUpdate(status=RunStatus.RUNNING)
    for start in range(0, len(events), 2000):
        await store.append(lease, events[start : start + 2000], update)
        update = None
    await store.release_lease(lease)
    return run_id


async def replay_from_memory(store: Store, run_id: str) -> float:
    """Seconds for the engine alone to replay a preloaded history and finish."""
    history = await store.load_history(run_id)
    record = await store.get_run(run_id)
    assert record is not None
    mem = MemoryStore()
    await mem.create_run(NewRun(id=run_id, name=record.name, workflow=record.workflow))
    lease = await mem.acquire_lease(run_id, OWNER)
    started = time.perf_counter()
    execution = Execution(mem, lease, record, spec_of(sequential_wf), history)
    outcome = await execution.activate()
    elapsed = time.perf_counter() - started
    if outcome.status is not RunStatus.SUCCEEDED or any(not s.replayed for s in outcome.steps):
        raise RuntimeError(f"in-memory replay did not replay everything: {outcome.describe()}")
    return elapsed


async def replay(dsn: str, steps: int, reps: int) -> dict[str, Any]:
    store = await PostgresStore.connect(dsn, max_size=4)
    try:
        await store.migrate()
        runs = [await build_history(store, steps) for _ in range(reps + 1)]
        load_ms, full_ms, memory_ms = [], [], []
        for index, run_id in enumerate(runs):
            started = time.perf_counter()
            await store.load_history(run_id)
            loaded = time.perf_counter() - started
            memory_s = await replay_from_memory(store, run_id)
            started = time.perf_counter()
            outcome = await activate(store, run_id, owner=OWNER, spec=spec_of(sequential_wf))
            full = time.perf_counter() - started
            if outcome.status is not RunStatus.SUCCEEDED or len(outcome.steps) != steps:
                raise RuntimeError(f"replay did not finish the run: {outcome.describe()}")
            if any(not s.replayed for s in outcome.steps):
                raise RuntimeError("a recorded step ran again during replay")
            if index:  # the first run warms up
                load_ms.append(loaded * 1000)
                full_ms.append(full * 1000)
                memory_ms.append(memory_s * 1000)
    finally:
        await store.close()
    return {
        "events": steps + 1,
        "replay_ms": full_ms,
        "median_replay_ms": statistics.median(full_ms),
        "load_history_ms": load_ms,
        "median_load_history_ms": statistics.median(load_ms),
        "memory_replay_ms": memory_ms,
        "median_memory_replay_ms": statistics.median(memory_ms),
    }


async def floor(dsn: str) -> dict[str, Any]:
    plain, notifying = [], []
    for _ in range(3):  # alternate: the disk's speed drifts
        plain.append(await concurrent_commits_per_s(dsn, notify=False))
        notifying.append(await concurrent_commits_per_s(dsn, notify=True))
    return {
        "commit_ms": await commit_floor_ms(dsn),
        "concurrent_commits_per_s": statistics.median(plain),
        "concurrent_notify_commits_per_s": statistics.median(notifying),
        "server": await server_facts(dsn),
    }


def _top(profile: cProfile.Profile, key: str, limit: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = file.split("site-packages/")[-1].split("operator/")[-1].split("python3.11/")[-1]
        rows.append(
            {
                "function": f"{where}:{line}({func})",
                "calls": calls,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
            }
        )
    rows.sort(key=lambda r: r[key], reverse=True)
    return rows[:limit]


async def profile(
    dsn: str, steps: int, workflows: int, pool: int, replay_steps: int
) -> dict[str, Any]:
    """Where the time goes (cProfile slows everything: read shares, not absolute times)."""
    store = await PostgresStore.connect(dsn, min_size=pool, max_size=pool)
    out: dict[str, Any] = {}
    try:
        await store.migrate()
        replays = [await build_history(store, replay_steps) for _ in range(2)]

        async def replay_once() -> float:
            started = time.perf_counter()
            await activate(store, replays.pop(), owner=OWNER, spec=spec_of(sequential_wf))
            return time.perf_counter() - started

        scenarios: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("sequential", lambda: run_sequential(store, steps)),
            ("sequential on the memory store", lambda: run_sequential(MemoryStore(), steps)),
            ("fanout", lambda: run_fanout(store, workflows)),
            ("replay", replay_once),
        ]
        for name, coro_fn in scenarios:
            await coro_fn()  # warm-up
            prof = cProfile.Profile()
            prof.enable()
            seconds = await coro_fn()
            prof.disable()
            out[name] = {
                "seconds_profiled": seconds,
                "by_tottime": _top(prof, "tottime_s", 25),
                "by_cumtime": _top(prof, "cumtime_s", 40),
            }
    finally:
        await store.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    parser.add_argument(
        "scenario", choices=["sequential", "memory", "fanout", "replay", "floor", "profile"]
    )
    parser.add_argument("--dsn", default="")
    parser.add_argument("--admin-dsn", default="")
    parser.add_argument("--database", default="")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--replay-steps", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.scenario == "sequential":
        result = asyncio.run(
            sequential(args.dsn, args.admin_dsn, args.database, args.steps, args.reps)
        )
    elif args.scenario == "memory":
        result = asyncio.run(memory(args.steps, args.reps))
    elif args.scenario == "fanout":
        result = asyncio.run(
            fanout(args.dsn, args.admin_dsn, args.database, args.workflows, args.pool, args.reps)
        )
    elif args.scenario == "replay":
        result = asyncio.run(replay(args.dsn, args.steps, args.reps))
    elif args.scenario == "floor":
        result = asyncio.run(floor(args.dsn))
    else:
        result = asyncio.run(
            profile(args.dsn, args.steps, args.workflows, args.pool, args.replay_steps)
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
