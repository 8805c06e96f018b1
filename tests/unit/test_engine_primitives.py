"""Every SDK primitive, driven through the time-skipping testing runner."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import ratline
from ratline import (
    NonRetryableError,
    PromiseRejectedError,
    RetryPolicy,
    StepFailedError,
    WorkflowContext,
    WorkflowDefinition,
    task,
    workflow,
)
from ratline.store import EventType, InboxKind, RunStatus
from ratline.testing import RunFailedError, WorkflowTestEnv


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Point(BaseModel):
    x: int
    y: int


async def test_public_names_are_pinned() -> None:
    assert sorted(ratline.__all__) == sorted(
        [
            "InputValidationError",
            "NonDeterminismError",
            "NonRetryableError",
            "Promise",
            "PromiseRejectedError",
            "RetryPolicy",
            "StepFailedError",
            "StepInfo",
            "TaskHandle",
            "WorkflowCancelled",
            "WorkflowContext",
            "WorkflowDefinition",
            "WorkflowInfo",
            "task",
            "workflow",
        ]
    )


async def test_run_returns_typed_results_from_sync_and_async_steps() -> None:
    def make_point(x: int) -> Point:
        return Point(x=x, y=x + 1)

    async def add(a: int, b: int) -> int:
        return a + b

    @workflow(name=unique("typed"))
    async def typed(ctx: WorkflowContext, n: int) -> dict[str, Any]:
        point = await ctx.run("point", make_point, n)
        total = await ctx.run("add", add, point.x, point.y)
        return {"point": point, "total": total, "is_model": isinstance(point, Point)}

    env = WorkflowTestEnv()
    handle = await env.start(typed, 4)
    assert await handle.result() == {"point": {"x": 4, "y": 5}, "total": 9, "is_model": True}


async def test_retry_policy_backs_off_durably_then_succeeds() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    policy = RetryPolicy(
        max_attempts=5, initial_interval="10m", backoff_coefficient=2, max_interval="1h"
    )

    @workflow(name=unique("retry"))
    async def retrying(ctx: WorkflowContext, _: None) -> str:
        return await ctx.run("flaky", flaky, retry=policy)

    env = WorkflowTestEnv()
    start = env.now()
    handle = await env.start(retrying)
    assert handle.status is RunStatus.SUSPENDED  # 10 minutes is past the idle threshold
    assert await handle.result() == "ok"
    assert len(attempts) == 3
    assert env.now() - start == timedelta(minutes=30)  # 10m + 20m of skipped backoff
    failed = [e for e in await handle.history() if e.type is EventType.STEP_FAILED]
    assert [e.payload["attempt"] for e in failed] == [1, 2]
    assert failed[0].payload["error"] == {
        "type": "ConnectionError",
        "message": "try again",
        "module": "builtins",
        "qualname": "ConnectionError",
        "args": ["try again"],
    }


async def test_non_retryable_error_fails_the_step_at_once() -> None:
    calls: list[int] = []

    def declined() -> None:
        calls.append(1)
        raise NonRetryableError("card declined")

    @workflow(name=unique("nonretry"))
    async def charge(ctx: WorkflowContext, _: None) -> str:
        try:
            await ctx.run("charge", declined, retry=RetryPolicy(max_attempts=5))
        except StepFailedError as exc:
            return f"{exc.error_type}: {exc.message} after {exc.attempts}"
        return "charged"

    handle = await WorkflowTestEnv().start(charge)
    assert await handle.result() == "NonRetryableError: card declined after 1"
    assert calls == [1]


async def test_unhandled_step_failure_fails_the_run_with_the_error() -> None:
    def broken() -> None:
        raise ValueError("boom")

    @workflow(name=unique("fails"))
    async def fails(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("broken", broken, retry=RetryPolicy(max_attempts=1))

    handle = await WorkflowTestEnv().start(fails)
    with pytest.raises(RunFailedError) as caught:
        await handle.result()
    assert caught.value.status is RunStatus.FAILED
    assert "boom" in caught.value.error["message"]


async def test_seven_day_sleep_skips_time() -> None:
    @workflow(name=unique("sleepy"), max_duration=None)
    async def sleepy(ctx: WorkflowContext, _: None) -> str:
        before = ctx.now()
        await ctx.sleep(timedelta(days=7))
        return str(ctx.now() - before)

    env = WorkflowTestEnv()
    start = env.now()
    handle = await env.start(sleepy)
    assert handle.status is RunStatus.SUSPENDED
    assert handle.last.wake_at == start + timedelta(days=7)
    assert await handle.result() == "7 days, 0:00:00"
    assert env.now() == start + timedelta(days=7)


async def test_promise_resolved_rejected_and_timed_out() -> None:
    @workflow(name=unique("approval"))
    async def approval(ctx: WorkflowContext, _: None) -> str:
        try:
            answer = await ctx.promise("decision", timeout="1d").wait()
        except TimeoutError:
            return "timed out"
        except PromiseRejectedError as exc:
            return f"rejected: {exc.error}"
        return f"approved by {answer['by']}"

    env = WorkflowTestEnv()
    approved = await env.start(approval)
    assert approved.last.waiting_for == ["decision"]
    await approved.signal("decision", {"by": "ana"})
    assert await approved.result() == "approved by ana"

    rejected = await env.start(approval)
    await rejected.reject("decision", "budget")
    assert await rejected.result() == "rejected: budget"

    late = await env.start(approval)
    await env.advance("25h")
    assert await late.result() == "timed out"
    types = [e.type for e in await late.history()]
    assert EventType.PROMISE_TIMED_OUT in types


async def test_signal_delivered_before_the_promise_exists_is_kept() -> None:
    @workflow(name=unique("early"))
    async def early(ctx: WorkflowContext, _: None) -> Any:
        await ctx.sleep("1h")
        return await ctx.promise("go")

    env = WorkflowTestEnv()
    handle = await env.start(early)
    assert await env.store.deliver(handle.run_id, "go", InboxKind.SIGNAL, 42)
    assert not await env.store.deliver(handle.run_id, "go", InboxKind.SIGNAL, 43)  # once only
    assert await handle.result() == 42


async def test_state_now_random_uuid_replay_identically_after_a_crash() -> None:
    seen: list[tuple[str, float, str]] = []

    @workflow(name=unique("determinism"))
    async def det(ctx: WorkflowContext, _: None) -> list[Any]:
        stamp = ctx.now().isoformat()
        number = ctx.random().random()
        ident = str(ctx.uuid4())
        await ctx.set("stage", "first")
        await ctx.run("record", lambda: seen.append((stamp, number, ident)))
        await ctx.run("second", lambda: None)
        return [stamp, number, ident, ctx.get("stage")]

    env = WorkflowTestEnv()
    env.simulate_crash_after("record")
    handle = await env.start(det)
    assert handle.last.crashed
    await env.advance("1h")  # a later wall clock must not change recorded values
    result = await handle.result()
    assert len(seen) == 1
    assert result == [*seen[0], "first"]
    assert handle.was_replayed("record")
    assert handle.executions("record") == 1


async def test_patched_keeps_old_histories_on_the_old_path() -> None:
    name = unique("patchy")
    done: list[str] = []

    async def v1(ctx: WorkflowContext, _: None) -> str:
        await ctx.run("a", lambda: done.append("a"))
        await ctx.sleep("1d")
        await ctx.run("b", lambda: done.append("b"))
        return "v1"

    async def v2(ctx: WorkflowContext, _: None) -> str:
        await ctx.run("a", lambda: done.append("a"))
        if ctx.patched("extra-check"):
            await ctx.run("check", lambda: done.append("check"))
        await ctx.sleep("1d")
        await ctx.run("b", lambda: done.append("b"))
        return "v2"

    env = WorkflowTestEnv()
    workflow(name=name)(v1)
    old = await env.start(name)
    workflow(name=name)(v2)  # deploy the new code while `old` sleeps
    old.spec = ratline.sdk.spec_of(name)
    assert await old.result() == "v2"
    assert done == ["a", "b"]  # the old run never ran the new step
    fresh = await env.start(name)
    assert await fresh.result() == "v2"
    assert done == ["a", "b", "a", "check", "b"]


async def test_code_change_without_patch_blocks_the_run_and_keeps_history() -> None:
    name = unique("changed")

    async def v1(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("charge", lambda: 1)
        await ctx.sleep("1d")

    async def v2(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("reserve", lambda: 1)
        await ctx.sleep("1d")

    env = WorkflowTestEnv()
    workflow(name=name)(v1)
    handle = await env.start(name)
    before = await handle.history()
    workflow(name=name)(v2)
    handle.spec = ratline.sdk.spec_of(name)
    await env.advance("1d")
    assert handle.status is RunStatus.BLOCKED
    assert handle.last.error is not None
    assert "'reserve'" in handle.last.error["message"]
    assert "'charge'" in handle.last.error["message"]
    after = await handle.history()
    assert after[: len(before)] == before  # never rewritten
    assert after[-1].type is EventType.RUN_BLOCKED
    assert after[-1].payload == {"expected": "step 'reserve'", "recorded": "step 'charge'"}


async def test_bad_input_fails_with_the_field_named() -> None:
    @workflow(name=unique("typed-input"))
    async def needs_point(ctx: WorkflowContext, p: Point) -> int:
        return p.x

    handle = await WorkflowTestEnv().start(needs_point, {"x": 1, "y": "not a number"})
    assert handle.status is RunStatus.FAILED
    assert handle.last.error is not None
    assert handle.last.error["field"] == "y"
    assert handle.last.error["type"] == "InputValidationError"


async def test_fan_out_with_partial_failures_checkpoints_each_item() -> None:
    name = unique("square")
    calls: list[int] = []

    @task(name=name, retry=RetryPolicy(max_attempts=1))
    def square(n: int) -> int:
        calls.append(n)
        if n == 3:
            raise ValueError("three is bad")
        return n * n

    @workflow(name=unique("fanout"))
    async def fanout(ctx: WorkflowContext, n: int) -> list[Any]:
        handles = [ctx.schedule_async(name, i) for i in range(n)]
        results = await ctx.gather(*handles, return_exceptions=True)
        return [
            r if isinstance(r, int) else f"{type(r).__name__}:{isinstance(r, StepFailedError)}"
            for r in results
        ]

    env = WorkflowTestEnv()
    handle = await env.start(fanout, 5)
    assert await handle.result() == [0, 1, 4, "ValueError:True", 16]
    assert sorted(calls) == [0, 1, 2, 3, 4]


async def test_compensations_run_in_reverse_on_failure() -> None:
    undone: list[str] = []

    def fail() -> None:
        raise NonRetryableError("no trucks")

    @workflow(name=unique("saga"))
    async def saga(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("charge", lambda: "ch_1", compensate=lambda r: undone.append(f"refund {r}"))
        await ctx.run("reserve", lambda: "rs_1", compensate=lambda r: undone.append(f"free {r}"))
        await ctx.run("ship", fail)

    handle = await WorkflowTestEnv().start(saga)
    assert handle.status is RunStatus.FAILED
    assert undone == ["free rs_1", "refund ch_1"]
    types = [e.type for e in await handle.history()]
    assert EventType.COMPENSATION_STARTED in types


async def test_cancel_reaches_the_next_await_and_compensates() -> None:
    undone: list[str] = []

    @workflow(name=unique("cancellable"))
    async def cancellable(ctx: WorkflowContext, _: None) -> str:
        ctx.add_compensation("release", undone.append, "released")
        await ctx.sleep("30d")
        return "never"

    handle = await WorkflowTestEnv().start(cancellable)
    await handle.cancel()
    assert handle.status is RunStatus.CANCELLED
    assert undone == ["released"]


async def test_max_duration_times_out_with_compensation() -> None:
    undone: list[str] = []

    @workflow(name=unique("bounded"), max_duration="7d")
    async def bounded(ctx: WorkflowContext, _: None) -> str:
        ctx.add_compensation("cleanup", undone.append, "cleaned")
        await ctx.sleep("30d")
        return "never"

    env = WorkflowTestEnv()
    start = env.now()
    handle = await env.start(bounded)
    assert handle.last.wake_at == start + timedelta(days=7)
    with pytest.raises(RunFailedError) as caught:
        await handle.result()
    assert caught.value.status is RunStatus.TIMED_OUT
    assert undone == ["cleaned"]


async def test_child_workflow_result_reaches_the_parent() -> None:
    child_name = unique("child")

    @workflow(name=child_name)
    async def child(ctx: WorkflowContext, n: int) -> int:
        await ctx.sleep("1h")
        return await ctx.run("double", lambda: n * 2)

    @workflow(name=unique("parent"))
    async def parent(ctx: WorkflowContext, n: int) -> int:
        return int(await ctx.child(child, n)) + 1

    env = WorkflowTestEnv()
    handle = await env.start(parent, 20)
    assert await handle.result() == 41
    started = [e for e in await handle.history() if e.type is EventType.CHILD_STARTED]
    assert started[0].payload["workflow"] == child_name


async def test_idempotency_key_is_stable_across_retries_and_replays() -> None:
    keys: list[str] = []

    def pay(ctx: WorkflowContext) -> str:
        keys.append(ctx.info.step_key)
        if len(keys) == 1:
            raise ConnectionError("timeout talking to the bank")
        return "paid"

    @workflow(name=unique("keys"))
    async def keyed(ctx: WorkflowContext, _: None) -> str:
        return await ctx.run("pay", pay, ctx, retry=RetryPolicy(initial_interval=0.0))

    handle = await WorkflowTestEnv().start(keyed)
    assert await handle.result() == "paid"
    assert len(keys) == 2
    assert keys[0] == keys[1] == f"{handle.run_id}:1"


async def test_class_style_definition() -> None:
    class Double(WorkflowDefinition[Point, int]):
        name = unique("double")

        async def execute(self, ctx: WorkflowContext, inp: Point) -> int:
            return await ctx.run("sum", lambda: (inp.x + inp.y) * 2)

    handle = await WorkflowTestEnv().start(Double, {"x": 1, "y": 2})
    assert await handle.result() == 6


async def test_cancel_of_a_suspended_run_replays_completed_steps_first() -> None:
    released: list[str] = []

    @workflow(name=unique("reserve-then-wait"))
    async def reserve_then_wait(ctx: WorkflowContext, _: None) -> Any:
        await ctx.run("reserve", lambda: "r1", compensate=released.append)
        return await ctx.promise("go").wait()

    env = WorkflowTestEnv()
    handle = await env.start(reserve_then_wait)
    assert handle.last.waiting_for == ["go"]
    await handle.cancel()
    assert handle.status is RunStatus.CANCELLED
    assert released == ["r1"]
    history = await handle.history()
    assert [e.name for e in history if e.type is EventType.STEP_COMPLETED] == [
        "reserve",
        "compensate:reserve",
    ]
    # the recorded history replays to the same end
    again = await env.store.load_history(handle.run_id)
    assert again == history


async def test_max_duration_after_completed_steps_times_out_cleanly() -> None:
    released: list[str] = []

    @workflow(name=unique("slow-approval"), max_duration="1d")
    async def slow(ctx: WorkflowContext, _: None) -> Any:
        await ctx.run("reserve", lambda: "r2", compensate=released.append)
        return await ctx.promise("approval").wait()

    env = WorkflowTestEnv()
    handle = await env.start(slow)
    with pytest.raises(RunFailedError) as caught:
        await handle.result()
    assert caught.value.status is RunStatus.TIMED_OUT
    assert released == ["r2"]


async def test_undo_steps_that_no_longer_match_history_block_the_run() -> None:
    name = unique("undo-changed")

    def fail() -> None:
        raise NonRetryableError("no")

    async def v1(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("charge", lambda: 1, compensate=lambda r: None)
        await ctx.run("ship", fail)

    env = WorkflowTestEnv()
    workflow(name=name)(v1)
    env.simulate_crash_after("compensate:charge")
    handle = await env.start(name)
    assert handle.last.crashed

    # the new code registers another undo action, which now runs first
    async def v3(ctx: WorkflowContext, _: None) -> None:
        await ctx.run("charge", lambda: 1, compensate=lambda r: None)
        ctx.add_compensation("notify", lambda: None)
        await ctx.run("ship", fail)

    workflow(name=name)(v3)
    handle.spec = ratline.sdk.spec_of(name)
    await handle.resume()
    assert handle.status is RunStatus.BLOCKED


async def test_a_run_retried_from_a_step_draws_the_same_random_numbers() -> None:
    from ratline.engine import activate
    from ratline.store import NewEvent, NewRun
    from ratline.store.memory import MemoryStore

    @workflow(name=unique("dice"))
    async def dice(ctx: WorkflowContext, _: None) -> list[Any]:
        return [ctx.random().random(), str(ctx.uuid4())]

    store = MemoryStore()
    spec = ratline.sdk.spec_of(dice)
    await store.create_run(NewRun(id="original", name="original", workflow=spec.name))
    first = await activate(store, "original", owner="w", spec=spec)
    await store.create_run(NewRun(id="retried", name="retried", workflow=spec.name))
    lease = await store.acquire_lease("retried", "cli")
    started = {"input": None, "workflow": spec.name, "retry_of": "original"}
    await store.append(lease, [NewEvent(type=EventType.RUN_STARTED, payload=started)])
    await store.release_lease(lease)
    second = await activate(store, "retried", owner="w", spec=spec)
    assert first.result == second.result
