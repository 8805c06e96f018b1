"""The test runner tells the truth: crashes stop the whole activation, children are
runs of their own, and a run's name is its identity."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ratline import WorkflowContext, workflow
from ratline.store import EventType, RunStatus
from ratline.testing import WorkflowTestEnv


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- 11: crashes


async def test_a_crash_after_a_step_stops_siblings_in_flight() -> None:
    name = unique("fan")
    done: list[str] = []

    async def item(label: str, turns: int) -> str:
        for _ in range(turns):  # still working when the first item finishes
            await asyncio.sleep(0)
        done.append(label)
        return label

    @workflow(name=name)
    async def fan(ctx: WorkflowContext, _: None) -> list[Any]:
        handles = [
            ctx.run_async("first", item, "first", 0),
            ctx.run_async("slow-1", item, "slow-1", 50),
            ctx.run_async("slow-2", item, "slow-2", 50),
        ]
        return await ctx.gather(*handles, return_exceptions=True)  # waits for every item

    env = WorkflowTestEnv()
    env.simulate_crash_after("first")
    run = await env.start(fan)
    assert run.last.crashed
    completed = [e.name for e in await run.history() if e.type is EventType.STEP_COMPLETED]
    assert completed == ["first"]  # the killed pod checkpointed nothing else
    assert done == ["first"]  # and its siblings never got to finish
    assert await run.result() == ["first", "slow-1", "slow-2"]
    assert run.executions("first") == 1
    assert run.was_replayed("first")


async def test_a_crash_during_a_step_runs_it_again_on_resume() -> None:
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "ch_1"

    @workflow(name=unique("during"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        return str(await ctx.run("charge", charge))

    env = WorkflowTestEnv()
    env.simulate_crash_during("charge")
    run = await env.start(wf)
    assert run.last.crashed
    assert [e.type for e in await run.history()] == [EventType.RUN_STARTED]
    assert await run.result() == "ch_1"
    assert len(calls) == 2  # at least once: the side effect ran before the crash too


# ---------------------------------------------------------------- 12: children


async def test_a_child_waiting_for_a_signal_is_found_and_signalled() -> None:
    child_name = unique("child")

    @workflow(name=child_name)
    async def child(ctx: WorkflowContext, n: int) -> int:
        bonus = await ctx.promise("bonus")
        return n + int(bonus)

    @workflow(name=unique("parent"))
    async def parent(ctx: WorkflowContext, n: int) -> int:
        return int(await ctx.child(child, n)) * 10

    env = WorkflowTestEnv()
    run = await env.start(parent, 4)
    assert run.status is RunStatus.SUSPENDED
    [kid] = run.children
    assert kid.status is RunStatus.SUSPENDED
    assert kid.last.waiting_for == ["bonus"]
    assert env.run_named(kid.name) is kid
    ended = await kid.signal("bonus", 1)
    assert ended.status is RunStatus.SUCCEEDED
    assert run.last.status.finished  # the parent resumed when its child ended
    assert await run.result() == 50


async def test_a_sleeping_child_is_woken_by_the_parents_result() -> None:
    @workflow(name=unique("napper"))
    async def napper(ctx: WorkflowContext, _: None) -> str:
        await ctx.sleep("2h")
        return "rested"

    @workflow(name=unique("waiting-parent"))
    async def parent(ctx: WorkflowContext, _: None) -> str:
        return f"child {await ctx.child(napper)}"

    env = WorkflowTestEnv()
    start = env.now()
    run = await env.start(parent)
    assert await run.result() == "child rested"
    assert (env.now() - start).total_seconds() == 7200


# ---------------------------------------------------------------- 13: names


async def test_start_with_the_same_name_is_the_same_run() -> None:
    calls: list[int] = []

    def count(n: int) -> int:
        calls.append(n)
        return n

    @workflow(name=unique("once"))
    async def once(ctx: WorkflowContext, n: int) -> int:
        return await ctx.run("count", count, n)

    env = WorkflowTestEnv()
    first = await env.start(once, 1, name="order-1")
    again = await env.start(once, 1, name="order-1")
    assert again is first
    assert calls == [1]
    other = await env.start(once, 2, name="order-2")
    assert other is not first
    assert calls == [1, 2]
