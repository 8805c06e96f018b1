"""Idleness is known, not guessed: a run suspends only when every branch waits durably."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ratline import WorkflowContext, workflow
from ratline.store import RunStatus
from ratline.store.memory import MemoryStore
from ratline.testing import WorkflowTestEnv


class SlowAppendStore(MemoryStore):
    """Commits take several loop turns, as a real database's round trips do."""

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        for _ in range(5):
            await asyncio.sleep(0)
        return await super().append(*args, **kwargs)


def noop() -> str:
    return "ok"


async def test_a_branch_between_steps_keeps_the_run_awake_while_a_sibling_sleeps() -> None:
    name = f"idle-{uuid.uuid4().hex[:8]}"

    @workflow(name=name)
    async def wf(ctx: WorkflowContext, _: Any) -> list[Any]:
        async def work() -> list[str]:
            return [await ctx.run(f"work-{i}", noop) for i in range(3)]

        return await ctx.gather(ctx.sleep("1h"), work())

    env = WorkflowTestEnv()
    env.store = SlowAppendStore(clock=env.now)
    run = await env.start(wf)
    # The timer branch waits an hour; the other branch was only committing before
    # its step, which no counting of quiet loop turns may mistake for waiting.
    assert run.status is RunStatus.SUSPENDED
    assert [run.executions(f"work-{i}") for i in range(3)] == [1, 1, 1]
    assert await run.result() == [None, ["ok", "ok", "ok"]]
    assert [run.executions(f"work-{i}") for i in range(3)] == [1, 1, 1]


async def test_a_join_on_a_waiting_branch_is_idle_and_suspends() -> None:
    name = f"idle-join-{uuid.uuid4().hex[:8]}"

    @workflow(name=name)
    async def wf(ctx: WorkflowContext, _: Any) -> str:
        approval = ctx.promise("approval")
        handle = ctx.run_async("prepare", noop)
        prepared = await handle
        return f"{prepared}:{await approval}"

    env = WorkflowTestEnv()
    run = await env.start(wf)
    assert run.status is RunStatus.SUSPENDED
    assert run.last.waiting_for == ["approval"]
    await run.signal("approval", "yes")
    assert await run.result() == "ok:yes"
