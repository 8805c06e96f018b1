"""Steps that record themselves, a step that blows its memory limit once, and a probe of
the sandbox the worker runs in."""

from __future__ import annotations

import asyncio
import os
import socket

import asyncpg
from pydantic import BaseModel, Field

from ratline import WorkflowContext, workflow

_TABLE = (
    "CREATE TABLE IF NOT EXISTS node_effects ("
    " key text NOT NULL, step int NOT NULL, op text NOT NULL, pod text NOT NULL,"
    " at timestamptz NOT NULL DEFAULT now())"
)


async def record(key: str, step: int, op: str) -> int:
    """Insert one effect row; returns how many rows `key` had with this step and op before."""
    conn = await asyncpg.connect(os.environ["RATLINE_DSN"])
    try:
        await conn.execute(_TABLE)
        before: int = await conn.fetchval(
            "SELECT count(*) FROM node_effects WHERE key = $1 AND step = $2 AND op = $3",
            key,
            step,
            op,
        )
        await conn.execute(
            "INSERT INTO node_effects (key, step, op, pod) VALUES ($1, $2, $3, $4)",
            key,
            step,
            op,
            socket.gethostname(),
        )
        return before
    finally:
        await conn.close()


class StepsInput(BaseModel):
    key: str = Field(min_length=1)
    steps: int = Field(default=3, ge=1, le=20)
    step_seconds: float = Field(default=0.0, ge=0, le=60)


async def slow_step(key: str, number: int, seconds: float) -> int:
    await record(key, number, "start")
    await asyncio.sleep(seconds)
    await record(key, number, "end")
    return number


@workflow(name="node-steps")
async def steps(ctx: WorkflowContext, inp: StepsInput) -> dict[str, int]:
    """`steps` sequential steps of `step_seconds` each: room to kill a container mid-step."""
    total = 0
    for number in range(1, inp.steps + 1):
        total += await ctx.run(f"step-{number}", slow_step, inp.key, number, inp.step_seconds)
    return {"total": total}


class HogInput(BaseModel):
    key: str = Field(min_length=1)
    mebibytes: int = Field(default=512, ge=1, le=4096)


async def hog_once(key: str, mebibytes: int) -> str:
    """The first attempt touches `mebibytes` of memory (over the pod's limit: OOMKilled);
    the attempt after it finds its own row and returns."""
    if await record(key, 1, "hog") == 0:
        chunks = [bytearray(1 << 20) for _ in range(mebibytes)]  # touched: really resident
        return f"survived {len(chunks)} MiB"
    return "recovered"


@workflow(name="node-hog")
async def hog(ctx: WorkflowContext, inp: HogInput) -> str:
    result: str = await ctx.run("hog", hog_once, inp.key, inp.mebibytes)
    return result


def _sandbox() -> dict[str, object]:
    try:
        with open("/probe-write", "w", encoding="utf-8"):
            writable = True
    except OSError:
        writable = False
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "root_writable": writable,
        "token_mounted": os.path.exists(token),
        "hostname": socket.gethostname(),
    }


class Empty(BaseModel):
    pass


@workflow(name="node-whoami")
async def whoami(ctx: WorkflowContext, inp: Empty) -> dict[str, object]:
    """What the worker's container looks like from inside."""
    result: dict[str, object] = await ctx.run("probe", _sandbox)
    return result
