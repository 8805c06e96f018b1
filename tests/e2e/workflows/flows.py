"""The e2e test workflows: slow steps, a gate with compensation, a parent of a child, a typed
promise."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, Field

from ratline import WorkflowContext, workflow

LOG_ENV = "RATLINE_E2E_LOG"


def effect(key: str, op: str, **data: Any) -> None:
    """Record one side effect (one short append: lines never interleave)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"key": key, "op": op, "pid": os.getpid(), **data})
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def read_all_effects(path: str) -> list[dict[str, Any]]:
    """Everything `effect` recorded, in order."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def read_effects(path: str, key: str) -> list[dict[str, Any]]:
    """What `effect` recorded for `key`, in order."""
    return [r for r in read_all_effects(path) if r.get("key") == key]


class StepsInput(BaseModel):
    key: str = Field(min_length=1)
    steps: int = Field(default=3, ge=1, le=100)
    step_seconds: float = Field(default=0.0, ge=0, le=30)


def work(key: str, number: int, seconds: float) -> int:
    effect(key, "start", step=number)
    time.sleep(seconds)
    effect(key, "end", step=number)
    return number


@workflow(name="e2e-steps")
async def steps(ctx: WorkflowContext, inp: StepsInput) -> dict[str, int]:
    """`steps` sequential steps, each taking `step_seconds`: room to kill a worker mid-step."""
    total = 0
    for number in range(1, inp.steps + 1):
        total += await ctx.run(f"step-{number}", work, inp.key, number, inp.step_seconds)
    return {"total": total}


def die(key: str) -> None:
    effect(key, "die")
    os._exit(3)  # a hard crash mid-step: no checkpoint, no clean exit


@workflow(name="e2e-crash")
async def crash(ctx: WorkflowContext, inp: StepsInput) -> dict[str, int]:
    """Crashes its worker in the first step, every time."""
    await ctx.run("die", die, inp.key)
    return {}


class GateInput(BaseModel):
    key: str = Field(min_length=1)
    timeout: str | None = None


def reserve(key: str) -> str:
    effect(key, "reserve")
    return f"reservation-{key}"


def release(key: str, reservation: str) -> None:
    effect(key, "release", reservation=reservation)


@workflow(name="e2e-gate")
async def gate(ctx: WorkflowContext, inp: GateInput) -> dict[str, Any]:
    """Reserve (undone by compensation), then wait on promise `go` (optionally with a deadline)."""
    await ctx.run("reserve", reserve, inp.key, compensate=lambda r: release(inp.key, r))
    try:
        value = await ctx.promise("go", timeout=inp.timeout).wait()
    except TimeoutError:
        await ctx.run("expired", effect, inp.key, "expired")
        return {"outcome": "expired"}
    await ctx.run("proceed", effect, inp.key, "proceed")
    return {"outcome": "signalled", "value": value}


class ParentInput(BaseModel):
    key: str = Field(min_length=1)


@workflow(name="e2e-parent")
async def parent(ctx: WorkflowContext, inp: ParentInput) -> dict[str, Any]:
    """Runs `e2e-steps` as a child run and returns what it returned."""
    child = await ctx.child("e2e-steps", {"key": f"{inp.key}-child", "steps": 2}, name="kid")
    await ctx.run("after-child", effect, inp.key, "after-child")
    return {"child": child}


class Approval(BaseModel):
    approved: bool
    amount: int = Field(ge=0)


@workflow(name="e2e-typed-approval")
async def typed_approval(ctx: WorkflowContext, inp: ParentInput) -> dict[str, Any]:
    """Waits on a typed promise: a payload that is not an `Approval` is refused."""
    approval = await ctx.promise("approval", type=Approval).wait()
    return {
        "type": type(approval).__name__,
        "approved": approval.approved,
        "amount": approval.amount,
    }


@workflow(name="e2e-retried", max_retries=1)
async def retried(ctx: WorkflowContext, inp: ParentInput) -> dict[str, int]:
    """The first whole-workflow attempt fails after a step; the second succeeds."""
    await ctx.run("work", effect, inp.key, "work")
    if ctx.info.workflow_attempt == 1:
        raise ValueError("the first attempt fails")
    return {"attempt": ctx.info.workflow_attempt}
