"""The worker process and the engine against a real Postgres: crashes, zombies,
races, restarts and bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ratline import WorkflowContext, workflow
from ratline.engine import ExecutionOptions, activate
from ratline.errors import FencedError
from ratline.sdk import spec_of
from ratline.store import DEFAULT_STORE_RETRY_S, EventType, InboxKind, NewRun, RunStatus
from ratline.store.postgres import PostgresStore
from ratline.worker.main import parse_settings
from tests.cluster.pg import PostgresServer
from tests.integration import workflows

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-1", "amount": 10}


@pytest.fixture
def store(pg_store: PostgresStore) -> PostgresStore:
    """The harness's open store on a migrated database, under a shorter name."""
    return pg_store


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "effects.log"
    monkeypatch.setenv("RATLINE_TEST_LOG", str(log))
    return log


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def new_run(store: PostgresStore, workflow: str, inp: object, entrypoint: str) -> str:
    run_id = str(uuid.uuid4())
    await store.create_run(
        NewRun(
            id=run_id, name=f"run-{run_id[:8]}", workflow=workflow, entrypoint=entrypoint, input=inp
        )
    )
    return run_id


def worker_env(dsn: str, run_id: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RATLINE_DSN=dsn,
        RATLINE_RUN_ID=run_id,
        PYTHONPATH=str(REPO),
        RATLINE_IDLE_THRESHOLD="2",
        **extra,
    )
    return env


def run_worker(dsn: str, run_id: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratline.worker"],
        env=worker_env(dsn, run_id, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_worker_process_runs_a_workflow_to_completion(
    store: PostgresStore, migrated_dsn: str, effects: Path
) -> None:
    run_id = await new_run(store, "it-steps", ORDER, "tests.integration.workflows:steps")
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id)
    assert done.returncode == 0, done.stderr
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert run.result == {
        "charge": "charge o-1",
        "reserve": "reserve",
        "ship": "ship",
        "email": "email",
    }
    assert "stopped: succeeded" in done.stderr
    history = await store.load_history(run_id)
    assert [e.type for e in history].count(EventType.STEP_COMPLETED) == 4


@pytest.mark.parametrize("crash_after", ["charge", "reserve", "ship", "email"])
async def test_crash_at_every_step_boundary_never_repeats_a_step(
    store: PostgresStore, effects: Path, crash_after: str
) -> None:
    run_id = await new_run(store, "it-steps", ORDER, "")
    spec = spec_of(workflows.steps)
    crashed = await activate(
        store,
        run_id,
        owner="w1",
        spec=spec,
        options=ExecutionOptions(crash_after_step=crash_after),
    )
    assert crashed.crashed
    await store.revoke_lease(run_id)  # the operator noticed the pod is gone
    finished = await activate(store, run_id, owner="w2", spec=spec)
    assert finished.status is RunStatus.SUCCEEDED
    assert sorted(lines(effects)) == sorted(
        ["charge o-1", "reserve", "ship:started", "ship", "email"]
    )
    replayed = [s.name for s in finished.steps if s.replayed]
    order = ["charge", "reserve", "ship", "email"]
    assert replayed == order[: order.index(crash_after) + 1]


async def test_worker_killed_mid_step_is_replaced_and_only_that_step_reruns(
    store: PostgresStore, migrated_dsn: str, effects: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run_id = await new_run(store, "it-steps", ORDER, "tests.integration.workflows:steps")
    env = worker_env(migrated_dsn, run_id, RATLINE_TEST_GATE=str(gate))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ratline.worker", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(500):
            if "ship:started" in lines(effects):
                break
            await asyncio.sleep(0.02)
        assert "ship:started" in lines(effects)
        proc.send_signal(signal.SIGKILL)
    finally:
        await asyncio.wait_for(proc.wait(), timeout=30)
    await store.revoke_lease(run_id)
    gate.touch()
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id, RATLINE_TEST_GATE=str(gate))
    assert done.returncode == 0, done.stderr
    assert lines(effects).count("charge o-1") == 1
    assert lines(effects).count("reserve") == 1
    assert lines(effects).count("ship:started") == 2  # the step in flight runs again
    assert lines(effects).count("ship") == 1
    assert lines(effects).count("email") == 1


async def test_zombie_worker_is_fenced_off_by_a_newer_lease(
    store: PostgresStore, effects: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("RATLINE_TEST_GATE", str(gate))
    run_id = await new_run(store, "it-steps", ORDER, "")
    spec = spec_of(workflows.steps)
    zombie = asyncio.create_task(activate(store, run_id, owner="zombie", spec=spec))
    for _ in range(500):
        if "ship:started" in lines(effects):
            break
        await asyncio.sleep(0.02)
    await store.revoke_lease(run_id)  # the operator believes the zombie is dead
    gate.touch()
    successor = await activate(store, run_id, owner="successor", spec=spec)
    assert successor.status is RunStatus.SUCCEEDED
    with pytest.raises(FencedError):
        await zombie
    history = await store.load_history(run_id)
    completed = [e.name for e in history if e.type is EventType.STEP_COMPLETED]
    assert completed == ["charge", "reserve", "ship", "email"]  # nothing from the zombie


async def test_two_workers_racing_for_one_run_execute_each_step_once(
    store: PostgresStore, migrated_dsn: str, effects: Path
) -> None:
    run_id = await new_run(store, "it-steps", ORDER, "tests.integration.workflows:steps")
    first, second = await asyncio.gather(
        asyncio.to_thread(run_worker, migrated_dsn, run_id),
        asyncio.to_thread(run_worker, migrated_dsn, run_id),
    )
    codes = sorted([first.returncode, second.returncode])
    assert codes in ([0, 0], [0, 75]), (first.stderr, second.stderr)
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    for name in ("charge o-1", "reserve", "ship", "email"):
        assert lines(effects).count(name) == 1


async def test_bad_input_exits_65_and_names_the_field(
    store: PostgresStore, migrated_dsn: str
) -> None:
    run_id = await new_run(
        store,
        "it-steps",
        {"order_id": "o-2", "amount": "lots"},
        "tests.integration.workflows:steps",
    )
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id)
    assert done.returncode == 65
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error["field"] == "amount"


async def test_unknown_entrypoint_exits_66_and_fails_the_run(
    store: PostgresStore, migrated_dsn: str
) -> None:
    run_id = await new_run(store, "it-steps", ORDER, "tests.integration.nowhere:steps")
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id)
    assert done.returncode == 66
    assert "cannot import 'tests.integration.nowhere'" in done.stderr
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert run.error["type"] == "EntrypointInvalid"


async def test_missing_settings_exit_2_and_unreachable_store_exits_69() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATLINE_")}
    usage = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ratline.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
    assert "RATLINE_RUN_ID" in usage.stderr
    bad_dsn = "postgresql://nobody@127.0.0.1:1/none"
    down = await asyncio.to_thread(run_worker, bad_dsn, "x")
    assert down.returncode == 69
    assert "127.0.0.1:1" in down.stderr


async def test_postgres_restart_in_the_middle_of_a_run_is_survived(
    postgres: PostgresServer, store: PostgresStore, migrated_dsn: str, effects: Path
) -> None:
    run_id = await new_run(store, "it-napper", 6, "tests.integration.workflows:napper")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ratline.worker",
        env=worker_env(migrated_dsn, run_id),
        stderr=asyncio.subprocess.PIPE,
    )
    for _ in range(500):
        if "before-1" in lines(effects):
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(postgres.restart)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, stderr.decode()
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert lines(effects) == [f"before-{i}" for i in range(6)]


async def test_workflow_default_retry_from_the_operator_sets_the_attempts(
    store: PostgresStore, migrated_dsn: str, effects: Path
) -> None:
    run_id = await new_run(store, "it-flaky", None, "tests.integration.workflows:flaky")
    policy = '{"maxAttempts": 2, "initialInterval": "0s"}'
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id, RATLINE_DEFAULT_RETRY=policy)
    assert done.returncode == 0, done.stderr
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert lines(effects) == ["call", "call"]
    bad = await asyncio.to_thread(run_worker, migrated_dsn, run_id, RATLINE_DEFAULT_RETRY="[1]")
    assert bad.returncode == 2
    assert "RATLINE_DEFAULT_RETRY" in bad.stderr


@workflow(name="it-approval-then-escalation")
async def approval_then_escalation(ctx: WorkflowContext, _: None) -> list[object]:
    approved = await ctx.promise("approval").wait()
    escalated = await ctx.promise("escalation").wait()
    return [approved, escalated]


async def test_an_early_signal_keeps_the_run_asleep_and_resolves_its_promise_later(
    store: PostgresStore,
) -> None:
    run_id = await new_run(store, "it-approval-then-escalation", None, "")
    spec = spec_of(approval_then_escalation)
    options = ExecutionOptions(idle_threshold_s=0)
    first = await activate(store, run_id, owner="w1", spec=spec, options=options)
    assert (first.status, first.waiting_for) == (RunStatus.SUSPENDED, ["approval"])
    assert await store.deliver(run_id, "escalation", InboxKind.SIGNAL, "level-2")
    soon = datetime.now(UTC) + timedelta(seconds=5)
    assert await store.due_runs(soon) == []  # nothing it waits for happened
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.status, run.early_signals) == (RunStatus.SUSPENDED, ["escalation"])
    assert run.wake_at is None or run.wake_at > soon  # not now (at most a maxDuration)
    # Woken anyway (a stray worker): it goes back to sleep and the signal keeps waiting.
    again = await activate(store, run_id, owner="w2", spec=spec, options=options)
    assert (again.status, again.waiting_for) == (RunStatus.SUSPENDED, ["approval"])
    assert await store.due_runs(soon) == []
    assert [i.name for i in await store.pending_inbox(run_id)] == ["escalation"]
    # What it waits for wakes it; the early signal resolves its promise once created.
    assert await store.deliver(run_id, "approval", InboxKind.SIGNAL, "yes")
    assert [r.id for r in await store.due_runs(soon)] == [run_id]
    done = await activate(store, run_id, owner="w3", spec=spec, options=options)
    assert (done.status, done.result) == (RunStatus.SUCCEEDED, ["yes", "level-2"])
    assert await store.pending_inbox(run_id) == []
    history = await store.load_history(run_id)
    resolved = [(e.name, e.payload) for e in history if e.type is EventType.PROMISE_RESOLVED]
    assert resolved == [("approval", {"value": "yes"}), ("escalation", {"value": "level-2"})]


def test_store_retry_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--run-id", "r", "--dsn", "postgresql://x@127.0.0.1/db"]
    monkeypatch.delenv("RATLINE_STORE_RETRY", raising=False)
    assert parse_settings(base).store_retry_s == DEFAULT_STORE_RETRY_S >= 600
    monkeypatch.setenv("RATLINE_STORE_RETRY", "900")
    assert parse_settings(base).store_retry_s == 900
    assert parse_settings([*base, "--store-retry", "30"]).store_retry_s == 30
    with pytest.raises(SystemExit):
        parse_settings([*base, "--store-retry", "-1"])
    assert "--store-retry" in capsys.readouterr().err
    monkeypatch.setenv("RATLINE_STORE_RETRY", "ten minutes")
    with pytest.raises(SystemExit):
        parse_settings(base)
    assert "RATLINE_STORE_RETRY" in capsys.readouterr().err
