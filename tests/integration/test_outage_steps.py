"""A store outage in the middle of a step: the finished step is checkpointed once
Postgres is back, and no step runs twice (issue 8, item 1).

Postgres is stopped while step `ship` runs (it waits for a gate file), the step then
finishes during the outage, and Postgres comes back 20 or 60 seconds later. Both ways
a run is driven are covered: `ratline run --dsn ... --name N` and a worker process
(`python -m ratline.worker`). Side effects are counted in a file outside the store.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from ratline.cli.run_local import run_id_for
from ratline.store import NewRun, RunStatus
from ratline.store.postgres import PostgresStore
from tests.cluster.pg import PostgresServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ORDER = '{"order_id": "o-1", "amount": 10}'
EFFECTS = ["charge o-1", "reserve", "ship:started", "ship", "email"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_for_line(path: Path, line: str, proc: asyncio.subprocess.Process) -> None:
    """Until `line` is in the effects file (fails fast if the process died)."""
    deadline = time.monotonic() + 90
    while line not in lines(path):
        assert proc.returncode is None, f"the process exited {proc.returncode} early"
        assert time.monotonic() < deadline, f"{line!r} never appeared in {lines(path)}"
        await asyncio.sleep(0.05)


async def start(runner: str, dsn: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    if runner == "local":
        argv = ["-m", "ratline.cli.main", "run", "tests.integration.workflows:steps"]
        argv += ["--input", ORDER, "--dsn", dsn, "--name", env["RUN_NAME"]]
    else:
        argv = ["-m", "ratline.worker"]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.timeout(400)
@pytest.mark.parametrize("outage_s", [20, 60])
@pytest.mark.parametrize("runner", ["local", "worker"])
async def test_an_outage_mid_step_neither_loses_nor_repeats_a_step(
    postgres: PostgresServer,
    pg_store: PostgresStore,
    migrated_dsn: str,
    tmp_path: Path,
    runner: str,
    outage_s: int,
) -> None:
    effects, gate = tmp_path / "effects.log", tmp_path / "gate"
    name = f"outage-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RATLINE_TEST_LOG": str(effects),
        "RATLINE_TEST_GATE": str(gate),
        "RATLINE_DSN": migrated_dsn,
        "RATLINE_IDLE_THRESHOLD": "2",
        "RATLINE_STORE_RETRY": "600",
        "RUN_NAME": name,
    }
    if runner == "local":
        run_id = run_id_for(name)
    else:
        run_id = str(uuid.uuid4())
        env["RATLINE_RUN_ID"] = run_id
        await pg_store.create_run(
            NewRun(
                id=run_id,
                name=name,
                workflow="it-steps",
                entrypoint="tests.integration.workflows:steps",
                input={"order_id": "o-1", "amount": 10},
            )
        )
    proc = await start(runner, migrated_dsn, env)
    try:
        await wait_for_line(effects, "ship:started", proc)
        stopped = time.monotonic()
        await asyncio.to_thread(postgres.stop)
        gate.touch()  # the step finishes while Postgres is down
        await wait_for_line(effects, "ship", proc)
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))  # the outage
        assert proc.returncode is None, "the process gave up during the outage"
        await asyncio.to_thread(postgres.resume)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(postgres.start)  # whatever happened, leave it running
    log = stderr.decode()
    assert proc.returncode == 0, f"{stdout.decode()}\n{log}"
    assert "lost the connection to Postgres" in log  # a log line per retry
    assert "gave up" not in log
    assert sorted(lines(effects)) == sorted(EFFECTS)  # every side effect exactly once
    run = await pg_store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    history = await pg_store.load_history(run_id)
    completed = [e.name for e in history if e.type == "StepCompleted"]
    assert completed == ["charge", "reserve", "ship", "email"]


@pytest.mark.timeout(200)
async def test_an_outage_longer_than_the_budget_exits_69_naming_it(
    postgres: PostgresServer, pg_store: PostgresStore, migrated_dsn: str, tmp_path: Path
) -> None:
    effects, gate = tmp_path / "effects.log", tmp_path / "gate"
    run_id = str(uuid.uuid4())
    await pg_store.create_run(
        NewRun(
            id=run_id,
            name=f"budget-{run_id[:8]}",
            workflow="it-steps",
            entrypoint="tests.integration.workflows:steps",
            input={"order_id": "o-1", "amount": 10},
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RATLINE_TEST_LOG": str(effects),
        "RATLINE_TEST_GATE": str(gate),
        "RATLINE_DSN": migrated_dsn,
        "RATLINE_RUN_ID": run_id,
    }
    proc = await start("worker", migrated_dsn, {**env, "RATLINE_STORE_RETRY": "3"})
    try:
        await wait_for_line(effects, "ship:started", proc)
        await asyncio.to_thread(postgres.stop)
        gate.touch()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.to_thread(postgres.start)
    assert proc.returncode == 69, stderr.decode()
    assert "gave up after 3 s" in stderr.decode()
