"""Workflows used by the integration tests; side effects are appended to the file
named by $RATLINE_TEST_LOG so tests can count them across worker processes."""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

from ratline import WorkflowContext, workflow


def effect(name: str) -> str:
    """A side effect that leaves a line per execution."""
    log = os.environ.get("RATLINE_TEST_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    return name


async def slow_effect(name: str) -> str:
    """Waits until the file $RATLINE_TEST_GATE exists: a step a test can kill a worker in."""
    effect(f"{name}:started")
    gate = os.environ.get("RATLINE_TEST_GATE")
    while gate and not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240 - polled by design
        await asyncio.sleep(0.02)
    return effect(name)


class Order(BaseModel):
    order_id: str
    amount: int


@workflow(name="it-steps")
async def steps(ctx: WorkflowContext, order: Order) -> dict[str, str]:
    a = await ctx.run("charge", effect, f"charge {order.order_id}")
    b = await ctx.run("reserve", effect, "reserve")
    c = await ctx.run("ship", slow_effect, "ship")
    d = await ctx.run("email", effect, "email")
    return {"charge": a, "reserve": b, "ship": c, "email": d}


@workflow(name="it-napper")
async def napper(ctx: WorkflowContext, naps: int) -> int:
    for i in range(naps):
        await ctx.run(f"before-{i}", effect, f"before-{i}")
        await ctx.sleep(0.5)
    return naps


def always_fails(name: str) -> None:
    effect(name)
    raise ConnectionError("upstream is down")


@workflow(name="it-flaky")
async def flaky(ctx: WorkflowContext, _: None) -> None:
    """No retry policy in code: the Workflow's defaults decide the attempts."""
    await ctx.run("call", always_fails, "call")
