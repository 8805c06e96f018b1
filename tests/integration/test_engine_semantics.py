"""Issue 8's engine semantics against a real Postgres: what history holds after a
mismatch, typed errors and signals rebuilt from stored JSON, whole-workflow
attempts across activations (and a worker process), and replaying a stored history."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from ratline import NonDeterminismError, RetryPolicy, WorkflowContext, workflow
from ratline.cli.output import dump, history_data
from ratline.engine import ExecutionOptions, activate
from ratline.sdk import spec_of
from ratline.store import EventType, InboxKind, NewRun, RunStatus
from ratline.store.postgres import PostgresStore
from ratline.testing import replay
from tests.integration.test_worker import lines, run_worker

pytestmark = pytest.mark.integration
EFFECTS: list[str] = []


class RateLimitError(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after)
        self.retry_after = retry_after


class Approval(BaseModel):
    approver: str
    amount: int


class Receipt(BaseModel):
    order: str
    total: int


@pytest.fixture
def store(pg_store: PostgresStore) -> PostgresStore:
    EFFECTS.clear()
    return pg_store


async def new_run(store: PostgresStore, workflow_name: str, entrypoint: str = "") -> str:
    run_id = str(uuid.uuid4())
    await store.create_run(
        NewRun(id=run_id, name=f"run-{run_id[:8]}", workflow=workflow_name, entrypoint=entrypoint)
    )
    return run_id


def effect(label: str) -> str:
    EFFECTS.append(label)
    return label


# ---------------------------------------------------------------- non-determinism


async def saga_v1(ctx: WorkflowContext, _: None) -> str:
    await ctx.run("charge", effect, "charge")
    return str(await ctx.promise("approval"))


async def saga_v2(ctx: WorkflowContext, _: None) -> str:
    try:
        await ctx.run("reserve", effect, "reserve")
        return str(await ctx.promise("approval"))
    except Exception:
        await ctx.run("refund", effect, "refund")
        return "compensated"


async def test_a_mismatch_leaves_the_stored_history_as_it_was(store: PostgresStore) -> None:
    name = f"it-saga-{uuid.uuid4().hex[:8]}"
    v1 = spec_of(workflow(name=name)(saga_v1))
    run_id = await new_run(store, name)
    first = await activate(store, run_id, owner="w1", spec=v1)
    assert first.status is RunStatus.SUSPENDED
    before = await store.load_history(run_id)

    v2 = spec_of(workflow(name=name)(saga_v2))
    await store.deliver(run_id, "approval", InboxKind.SIGNAL, "yes")
    blocked = await activate(store, run_id, owner="w2", spec=v2)
    assert blocked.status is RunStatus.BLOCKED
    assert EFFECTS == ["charge"]  # neither reserve nor the handler's refund ran
    after = await store.load_history(run_id)
    assert [(e.seq, e.type) for e in after[: len(before)]] == [(e.seq, e.type) for e in before]
    assert [e.type for e in after[len(before) :]] == [EventType.RUN_BLOCKED]
    record = await store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.BLOCKED
    assert record.error is not None
    assert record.error["command_id"] == 1
    assert [i.name for i in await store.pending_inbox(run_id)] == ["approval"]  # untouched


# ---------------------------------------------------------------- typed errors


def rate_limited() -> None:
    EFFECTS.append("call")
    raise RateLimitError("slow down", 30)


@workflow(name="it-typed-errors")
async def typed_errors(ctx: WorkflowContext, _: None) -> list[str]:
    seen: list[str] = []
    try:
        await ctx.run("call", rate_limited, retry=RetryPolicy(max_attempts=1))
    except RateLimitError as exc:
        seen.append(f"{type(exc).__name__}:{exc.retry_after}")
    await ctx.promise("go")
    return seen


async def test_a_step_error_is_rebuilt_from_the_stored_json(store: PostgresStore) -> None:
    spec = spec_of(typed_errors)
    run_id = await new_run(store, spec.name)
    assert (await activate(store, run_id, owner="w1", spec=spec)).status is RunStatus.SUSPENDED
    await store.deliver(run_id, "go", InboxKind.SIGNAL, True)
    done = await activate(store, run_id, owner="w2", spec=spec)
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == ["RateLimitError:30"]  # replayed from Postgres, same type
    assert EFFECTS == ["call"]


# ---------------------------------------------------------------- typed signals


@workflow(name="it-typed-signal")
async def typed_signal(ctx: WorkflowContext, _: None) -> str:
    approval = await ctx.promise("approval", type=Approval)
    return f"{approval.approver}:{approval.amount}"


async def test_a_refused_signal_is_stored_and_a_tagged_resend_resolves(
    store: PostgresStore,
) -> None:
    spec = spec_of(typed_signal)
    run_id = await new_run(store, spec.name)
    await activate(store, run_id, owner="w1", spec=spec)
    await store.deliver(run_id, "approval", InboxKind.SIGNAL, {"approver": "ana", "amount": "x"})
    refused = await activate(store, run_id, owner="w2", spec=spec)
    assert refused.status is RunStatus.SUSPENDED
    assert await store.pending_inbox(run_id) == []  # consumed, so it does not keep waking
    [event] = [e for e in await store.load_history(run_id) if e.type is EventType.SIGNAL_REFUSED]
    assert event.payload["field"] == "amount"
    # the inbox keeps one item per name: a corrected signal arrives under a tag
    assert not await store.deliver(run_id, "approval", InboxKind.SIGNAL, {})
    await store.deliver(run_id, "approval#2", InboxKind.SIGNAL, {"approver": "ana", "amount": 3})
    done = await activate(store, run_id, owner="w3", spec=spec)
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == "ana:3"


# ---------------------------------------------------------------- output


@workflow(name="it-bad-output")
async def bad_output(ctx: WorkflowContext, _: None) -> Receipt:
    return {"order": "o-1", "total": "many"}  # type: ignore[return-value]


async def test_invalid_output_fails_the_stored_run_naming_the_field(store: PostgresStore) -> None:
    spec = spec_of(bad_output)
    run_id = await new_run(store, spec.name)
    outcome = await activate(store, run_id, owner="w1", spec=spec)
    assert outcome.status is RunStatus.FAILED
    record = await store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.error is not None
    assert record.error["type"] == "OutputValidationError"
    assert "total" in record.error["message"]
    types = [e.type for e in await store.load_history(run_id)]
    assert EventType.RUN_COMPLETED not in types


# ---------------------------------------------------------------- attempts


def log_effect(label: str) -> str:
    """A side effect visible across processes (the worker test's effects log)."""
    import os

    with Path(os.environ["RATLINE_TEST_LOG"]).open("a") as log:
        log.write(label + "\n")
    return label


def fail_first_attempt(attempt: int) -> None:
    if attempt == 1:
        raise ConnectionError("the warehouse is down")


@workflow(name="it-attempts", max_retries=2)
async def attempts(ctx: WorkflowContext, _: None) -> int:
    attempt = ctx.info.workflow_attempt
    await ctx.run("reserve", log_effect, f"reserve {attempt}", compensate=log_effect)
    await ctx.run("check", fail_first_attempt, attempt, retry=RetryPolicy(max_attempts=1))
    await ctx.run("ship", log_effect, f"ship {attempt}")
    return attempt


async def test_a_crash_in_the_second_attempt_replays_only_that_attempt(
    store: PostgresStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "effects.log"
    monkeypatch.setenv("RATLINE_TEST_LOG", str(log))
    spec = spec_of(attempts)
    run_id = await new_run(store, spec.name)
    waits_in_process = ExecutionOptions(idle_threshold_s=5.0, crash_after_step="ship")
    crashed = await activate(store, run_id, owner="w1", spec=spec, options=waits_in_process)
    assert crashed.crashed  # attempt 1 failed, was undone, attempt 2 shipped, then died
    await store.revoke_lease(run_id)
    done = await activate(store, run_id, owner="w2", spec=spec)
    assert done.status is RunStatus.SUCCEEDED
    assert done.result == 2
    assert [s.name for s in done.steps if s.replayed] == ["reserve", "check", "ship"]
    assert lines(log) == ["reserve 1", "reserve 1", "reserve 2", "ship 2"]  # undo logs its arg
    history = await store.load_history(run_id)
    [failed] = [e for e in history if e.type is EventType.ATTEMPT_FAILED]
    assert failed.payload["attempt"] == 1
    assert failed.payload["error"]["type"] == "ConnectionError"


async def test_a_worker_process_runs_the_next_attempt(
    store: PostgresStore, migrated_dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    run_id = await new_run(store, "it-attempts", f"{__name__}:attempts")
    done = await asyncio.to_thread(run_worker, migrated_dsn, run_id, RATLINE_TEST_LOG=str(log))
    assert done.returncode == 0, done.stderr
    record = await store.get_run(run_id)
    assert record is not None
    assert record.status is RunStatus.SUCCEEDED
    assert record.result == 2
    assert lines(log) == ["reserve 1", "reserve 1", "reserve 2", "ship 2"]


# ---------------------------------------------------------------- the replayer


async def test_a_history_read_from_postgres_replays_and_a_changed_workflow_fails(
    store: PostgresStore,
) -> None:
    name = f"it-replayed-{uuid.uuid4().hex[:8]}"
    v1 = spec_of(workflow(name=name)(saga_v1))
    run_id = await new_run(store, name)
    await activate(store, run_id, owner="w1", spec=v1)
    await store.deliver(run_id, "approval", InboxKind.SIGNAL, "yes")
    assert (await activate(store, run_id, owner="w2", spec=v1)).status is RunStatus.SUCCEEDED
    printed = dump(history_data(await store.load_history(run_id)), "json")  # -o json
    EFFECTS.clear()
    outcome = await replay(name, printed)
    assert outcome.status is RunStatus.SUCCEEDED
    assert EFFECTS == []
    workflow(name=name)(saga_v2)
    with pytest.raises(NonDeterminismError) as caught:
        await replay(name, json.loads(printed))
    assert caught.value.recorded == "step 'charge'"
