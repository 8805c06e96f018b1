"""Whole-workflow retries (`max_retries`) and the per-step default (`step_retry`)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ratline import (
    NonRetryableError,
    RetryPolicy,
    WorkflowContext,
    WorkflowDefinition,
    workflow,
)
from ratline.store import EventType, RunStatus
from ratline.testing import RunFailedError, WorkflowTestEnv


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Flaky:
    """Fails the first `failures` calls of the workflow body, counts everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reserved: list[int] = []
        self.released: list[str] = []
        self.attempts: list[int] = []

    def reserve(self) -> str:
        self.reserved.append(1)
        return f"r{len(self.reserved)}"

    def check(self, attempt: int) -> None:
        if attempt <= self.failures:
            raise ConnectionError(f"attempt {attempt} broke")


async def test_a_failed_workflow_compensates_then_runs_again_from_the_start() -> None:
    flaky = Flaky(failures=2)

    @workflow(name=unique("again"), max_retries=2)
    async def again(ctx: WorkflowContext, _: None) -> str:
        flaky.attempts.append(ctx.info.workflow_attempt)
        held = await ctx.run("reserve", flaky.reserve, compensate=flaky.released.append)
        await ctx.run(
            "check", flaky.check, ctx.info.workflow_attempt, retry=RetryPolicy(max_attempts=1)
        )
        return f"{held} on attempt {ctx.info.workflow_attempt}"

    env = WorkflowTestEnv()
    run = await env.start(again, name="order-7")
    assert await run.result() == "r3 on attempt 3"
    assert run.name == "order-7"
    assert flaky.released == ["r1", "r2"]  # each failed attempt undid its own work
    assert len(flaky.reserved) == 3  # a new attempt does not replay the failed one's steps
    history = await run.history()
    failed = [e.payload for e in history if e.type is EventType.ATTEMPT_FAILED]
    assert [p["attempt"] for p in failed] == [1, 2]
    assert failed[0]["error"]["type"] == "ConnectionError"  # earlier attempts stay visible
    completed = [e.name for e in history if e.type is EventType.STEP_COMPLETED]
    assert completed.count("reserve") == 3


async def test_retries_exhausted_fail_the_run_with_the_last_error() -> None:
    flaky = Flaky(failures=10)

    @workflow(name=unique("exhausted"), max_retries=1)
    async def exhausted(ctx: WorkflowContext, _: None) -> None:
        flaky.attempts.append(ctx.info.workflow_attempt)
        await ctx.run(
            "check", flaky.check, ctx.info.workflow_attempt, retry=RetryPolicy(max_attempts=1)
        )

    run = await WorkflowTestEnv().start(exhausted)
    with pytest.raises(RunFailedError) as caught:
        await run.result()
    assert caught.value.status is RunStatus.FAILED
    assert sorted(set(flaky.attempts)) == [1, 2]


async def test_a_non_retryable_failure_is_not_retried() -> None:
    attempts: list[int] = []

    class Declined(WorkflowDefinition[None, None]):
        name = unique("declined")
        max_retries = 3

        async def execute(self, ctx: WorkflowContext, inp: None) -> None:
            attempts.append(ctx.info.workflow_attempt)
            raise NonRetryableError("card declined")

    run = await WorkflowTestEnv().start(Declined)
    assert run.status is RunStatus.FAILED
    assert attempts == [1]


async def test_a_resumed_attempt_replays_only_its_own_steps() -> None:
    flaky = Flaky(failures=1)

    @workflow(name=unique("resumed"), max_retries=1)
    async def resumed(ctx: WorkflowContext, _: None) -> str:
        flaky.attempts.append(ctx.info.workflow_attempt)
        await ctx.run("reserve", flaky.reserve)
        await ctx.run(
            "check", flaky.check, ctx.info.workflow_attempt, retry=RetryPolicy(max_attempts=1)
        )
        await ctx.sleep("1h")
        return f"attempt {ctx.info.workflow_attempt}"

    env = WorkflowTestEnv()
    run = await env.start(resumed)
    assert await run.result() == "attempt 2"
    replayed = [s for s in run.last.steps if s.replayed]
    assert [s.name for s in replayed] == ["reserve", "check"]
    assert [s.command_id for s in replayed] == [3, 4]  # numbered after attempt 1
    assert len(flaky.reserved) == 2


async def test_step_retry_is_the_default_policy_of_steps() -> None:
    calls: list[int] = []

    def wobbly() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("again")
        return "ok"

    @workflow(name=unique("patient"), step_retry=RetryPolicy(max_attempts=4, initial_interval=1))
    async def patient(ctx: WorkflowContext, _: None) -> Any:
        return await ctx.run("wobbly", wobbly)

    assert await (await WorkflowTestEnv().start(patient)).result() == "ok"
    assert len(calls) == 4


def test_max_retries_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        workflow(name=unique("bad"), max_retries=-1)(_noop)


async def _noop(ctx: WorkflowContext, _: None) -> None:
    return None
