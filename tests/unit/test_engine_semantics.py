"""Issue 8's engine semantics: non-determinism that cannot be swallowed, validated
output, error types across the step boundary, maxDuration defaults, RetryPolicy
checks. Driven through `ratline.testing`."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import ratline
from ratline import (
    NonDeterminismError,
    NonRetryableError,
    RetryPolicy,
    StepFailedError,
    WorkflowContext,
    WorkflowDefinition,
    workflow,
)
from ratline.store import EventType, RunStatus
from ratline.testing import RunFailedError, WorkflowTestEnv


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class RateLimitError(Exception):
    """A step's own error type, importable from this module."""

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message, retry_after)
        self.retry_after = retry_after


class Receipt(BaseModel):
    order: str
    amount: int


# ---------------------------------------------------------------- 3: non-determinism


async def test_non_determinism_inside_except_exception_stops_at_the_first_mismatch() -> None:
    name = unique("saga")
    effects: list[str] = []

    async def v1(ctx: WorkflowContext, _: None) -> str:
        await ctx.run("charge", lambda: "ch_1")
        return str(await ctx.promise("approval"))

    def reserve() -> str:
        effects.append("reserve")
        return "rs_1"

    async def v2(ctx: WorkflowContext, _: None) -> str:
        try:  # the order saga of the Flovyn write-up: a broad handler around the work
            await ctx.run("reserve", reserve)
            return str(await ctx.promise("approval"))
        except Exception:
            await ctx.run("refund", lambda: effects.append("refund"))
            return "compensated"

    env = WorkflowTestEnv()
    workflow(name=name)(v1)
    run = await env.start(name)
    assert run.status is RunStatus.SUSPENDED
    before = await run.history()

    workflow(name=name)(v2)
    run.spec = ratline.sdk.spec_of(name)
    blocked = await run.signal("approval", "yes")
    assert blocked.status is RunStatus.BLOCKED
    assert effects == []  # neither the mismatched command nor the handler's step ran
    assert run.last.error is not None
    assert run.last.error["command_id"] == 1
    assert "step 'reserve'" in run.last.error["message"]
    assert "step 'charge'" in run.last.error["message"]
    after = await run.history()
    # history keeps what it had; only the RunBlocked marker with the diff is added
    assert [e.type for e in after[: len(before)]] == [e.type for e in before]
    assert [e.type for e in after[len(before) :]] == [EventType.RUN_BLOCKED]
    assert after[-1].payload == {"expected": "step 'reserve'", "recorded": "step 'charge'"}


async def test_a_swallowed_mismatch_still_stops_every_later_command() -> None:
    name = unique("greedy")
    effects: list[str] = []

    async def v1(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("a", lambda: 1)
        await ctx.sleep("1h")

    async def v2(ctx: WorkflowContext, _: None) -> str:
        with contextlib.suppress(BaseException):  # the point of the test
            await ctx.run("b", lambda: effects.append("b"))
        await ctx.sleep("1h")  # command 2 matches history: it must not go on regardless
        await ctx.run("after", lambda: effects.append("after"))
        return "swallowed"

    env = WorkflowTestEnv()
    workflow(name=name)(v1)
    run = await env.start(name)
    workflow(name=name)(v2)
    run.spec = ratline.sdk.spec_of(name)
    ended = await run.resume()
    assert ended.status is RunStatus.BLOCKED
    await env.advance("2h")
    assert effects == []
    assert [e.type for e in await run.history()][-1] is EventType.RUN_BLOCKED


def test_non_determinism_error_is_not_an_exception() -> None:
    assert not issubclass(NonDeterminismError, Exception)
    assert issubclass(NonDeterminismError, BaseException)


# ---------------------------------------------------------------- 5: output validation


async def test_a_decorated_workflow_returning_the_wrong_shape_fails_naming_the_field() -> None:
    @workflow(name=unique("receipt"))
    async def receipt(ctx: WorkflowContext, _: None) -> Receipt:
        return {"order": "o-1", "amount": "lots"}  # type: ignore[return-value]

    run = await WorkflowTestEnv().start(receipt)
    assert run.status is RunStatus.FAILED
    assert run.last.error is not None
    assert run.last.error["type"] == "OutputValidationError"
    assert "amount" in run.last.error["message"]


async def test_a_class_workflow_output_is_validated_and_valid_output_still_succeeds() -> None:
    bad_name, good_name = unique("bad-out"), unique("good-out")

    class Bad(WorkflowDefinition[None, Receipt]):
        name = bad_name

        async def execute(self, ctx: WorkflowContext, inp: None) -> Receipt:
            return {"order": "o-1"}  # type: ignore[return-value]

    class Good(WorkflowDefinition[None, Receipt]):
        name = good_name

        async def execute(self, ctx: WorkflowContext, inp: None) -> Receipt:
            return Receipt(order="o-2", amount=3)

    env = WorkflowTestEnv()
    bad = await env.start(Bad)
    assert bad.status is RunStatus.FAILED
    assert bad.last.error is not None
    assert "amount" in bad.last.error["message"]
    good = await env.start(Good)
    assert await good.result() == Receipt(order="o-2", amount=3)


# ---------------------------------------------------------------- 6: error types


def rate_limited() -> None:
    raise RateLimitError("slow down", 30)


async def test_a_step_error_keeps_its_type_live_and_on_replay() -> None:
    seen: list[str] = []

    @workflow(name=unique("typed-errors"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        try:
            await ctx.run("call", rate_limited, retry=RetryPolicy(max_attempts=1))
        except RateLimitError as exc:
            seen.append(
                f"{type(exc).__name__}:{exc.retry_after}:{isinstance(exc, StepFailedError)}"
            )
        await ctx.sleep("1h")  # suspend, so the next activation replays the failure
        return ",".join(seen)

    env = WorkflowTestEnv()
    run = await env.start(wf)
    assert run.status is RunStatus.SUSPENDED, run.last
    assert seen == ["RateLimitError:30:True"]
    assert await run.result() == "RateLimitError:30:True,RateLimitError:30:True"
    failed = [e for e in await run.history() if e.type is EventType.STEP_FAILED]
    assert failed[0].payload["error"]["module"] == __name__
    assert failed[0].payload["error"]["qualname"] == "RateLimitError"


async def test_step_failed_error_still_catches_any_step_failure() -> None:
    @workflow(name=unique("catch-all"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        try:
            await ctx.run("call", rate_limited, retry=RetryPolicy(max_attempts=1))
        except StepFailedError as exc:
            return f"{exc.step}:{exc.error_type}:{exc.attempts}"
        return "no"

    assert await (await WorkflowTestEnv().start(wf)).result() == "call:RateLimitError:1"


async def test_a_type_that_cannot_be_imported_becomes_a_step_failed_error_naming_it() -> None:
    class Local(Exception):
        pass

    def fail() -> None:
        raise Local("gone")

    @workflow(name=unique("local-error"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        try:
            await ctx.run("call", fail, retry=RetryPolicy(max_attempts=1))
        except Local:
            return "caught as Local"
        except StepFailedError as exc:
            return f"{type(exc).__name__}:{exc.error_type}"
        return "no"

    result = await (await WorkflowTestEnv().start(wf)).result()
    assert result.startswith("StepFailedError:")
    assert "Local" in result
    assert __name__ in result


async def test_non_retryable_errors_still_stop_retries_and_keep_their_type() -> None:
    calls: list[int] = []

    def refuse() -> None:
        calls.append(1)
        raise NonRetryableError("card declined")

    @workflow(name=unique("nonretry"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        try:
            await ctx.run("charge", refuse, retry=RetryPolicy(max_attempts=5))
        except NonRetryableError as exc:
            return f"{exc.message}"  # type: ignore[attr-defined]
        return "no"

    assert await (await WorkflowTestEnv().start(wf)).result() == "card declined"
    assert calls == [1]


# ---------------------------------------------------------------- 9: maxDuration default


async def test_max_duration_defaults_to_seven_days() -> None:
    @workflow(name=unique("forever"))
    async def forever(ctx: WorkflowContext, _: None) -> str:
        await ctx.sleep("30d")
        return "done"

    env = WorkflowTestEnv()
    start = env.now()
    run = await env.start(forever)
    assert run.last.wake_at == start + timedelta(days=7)
    with pytest.raises(RunFailedError) as caught:
        await run.result()
    assert caught.value.status is RunStatus.TIMED_OUT
    assert ratline.sdk.spec_of(forever).max_duration == timedelta(days=7)


async def test_max_duration_none_means_no_limit_and_a_run_override_wins() -> None:
    @workflow(name=unique("unbounded"), max_duration=None)
    async def unbounded(ctx: WorkflowContext, _: None) -> str:
        await ctx.sleep("30d")
        return "done"

    class Cls(WorkflowDefinition[None, str]):
        name = unique("cls-unbounded")
        max_duration = None

        async def execute(self, ctx: WorkflowContext, inp: None) -> str:
            await ctx.sleep("30d")
            return "done"

    env = WorkflowTestEnv()
    assert await (await env.start(unbounded)).result() == "done"
    assert await (await env.start(Cls)).result() == "done"
    overridden = await env.start(unbounded, max_duration="1d")
    with pytest.raises(RunFailedError) as caught:
        await overridden.result()
    assert caught.value.status is RunStatus.TIMED_OUT


# ---------------------------------------------------------------- 10: RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"initial_interval": "1h", "max_interval": "5m"}, "initial_interval"),
        ({"initial_interval": -1.0}, "negative"),
        ({"max_interval": timedelta(seconds=-5)}, "negative"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"initial_interval": "soon"}, "initial_interval"),
        ({"non_retryable": ("ValueError",)}, "non_retryable"),
    ],
)
def test_retry_policy_refuses_contradictions_when_defined(
    kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**kwargs)


def test_a_long_first_interval_alone_is_not_capped_at_five_minutes() -> None:
    policy = RetryPolicy(initial_interval="1h")
    assert policy.delay(1) == timedelta(hours=1)
    assert policy.delay(3) == timedelta(hours=1)  # its own cap: the first interval
    assert RetryPolicy().delay(20) == timedelta(minutes=5)
