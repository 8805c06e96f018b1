"""DBOS Transact's side of the benchmark, the same workloads written the DBOS way.

`python -m bench` runs it in a process of its own (DBOS is a process-wide
singleton with its own threads): `python -m bench.dbos_side SCENARIO --dsn ...`,
one JSON object on the last line. DBOS keeps its system tables in the database
named by `--dsn`, a separate database of the same server Ratline uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from dbos import DBOS

from bench.pgstats import read_counters


@DBOS.step()
def noop() -> None:
    return None


@DBOS.workflow()
def sequential_wf(steps: int) -> int:
    for _ in range(steps):
        noop()
    return steps


@DBOS.workflow()
def three_steps_wf(n: int) -> int:
    noop()
    noop()
    noop()
    return n


def run_fanout(workflows: int) -> float:
    started = time.perf_counter()
    handles = [DBOS.start_workflow(three_steps_wf, i) for i in range(workflows)]
    results = [h.get_result() for h in handles]
    elapsed = time.perf_counter() - started
    if results != list(range(workflows)):
        raise RuntimeError("DBOS fan-out returned unexpected results")
    return elapsed


def sequential(steps: int, reps: int) -> dict[str, Any]:
    sequential_wf(50)  # warm-up
    seconds = []
    cpu = time.process_time()
    for _ in range(reps):
        started = time.perf_counter()
        if sequential_wf(steps) != steps:
            raise RuntimeError("DBOS sequential workflow returned a wrong value")
        seconds.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    per_step = [s * 1000 / steps for s in seconds]
    return {
        "per_step_ms": per_step,
        "median_per_step_ms": statistics.median(per_step),
        "cpu_ms_per_step": cpu * 1000 / (steps * reps),
    }


def fanout(workflows: int, reps: int) -> dict[str, Any]:
    run_fanout(20)
    cpu = time.process_time()
    rates = [workflows / run_fanout(workflows) for _ in range(reps)]
    cpu = time.process_time() - cpu
    return {
        "workflows_per_s": rates,
        "median_workflows_per_s": statistics.median(rates),
        "cpu_ms_per_workflow": cpu * 1000 / (workflows * reps),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_side")
    parser.add_argument("scenario", choices=["sequential", "fanout"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--admin-dsn", default="")
    parser.add_argument("--database", default="")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    counting = bool(args.admin_dsn)
    # from before DBOS opens its pool until after it is closed: Postgres publishes a
    # backend's last statistics only when it exits
    before = asyncio.run(read_counters(args.admin_dsn, args.database)) if counting else None
    DBOS(
        config={
            "name": "ratline-bench",
            "system_database_url": args.dsn,
            "sys_db_pool_size": args.pool,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        if args.scenario == "sequential":
            result = sequential(args.steps, args.reps)
        else:
            result = fanout(args.workflows, args.reps)
        result["dbos_version"] = _version()
    finally:
        DBOS.destroy()
    if before is not None:
        after = asyncio.run(read_counters(args.admin_dsn, args.database))
        commits, wal = after.minus(before)
        if args.scenario == "sequential":
            total_steps = args.steps * args.reps + 50  # the warm-up counts too
            result["commits_per_step"] = commits / total_steps
            result["rows_written_per_step"] = after.rows_since(before) / total_steps
            result["wal_bytes_per_step"] = wal / total_steps
        else:
            result["commits_per_workflow"] = commits / (args.workflows * args.reps + 20)
    print(json.dumps(result))
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("dbos")


if __name__ == "__main__":
    sys.exit(main())
