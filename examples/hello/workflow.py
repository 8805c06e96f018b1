"""Greets someone in three durable steps; the e2e tests and `make demo` run it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ratline import WorkflowContext, workflow


class HelloInput(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    times: int = Field(default=1, ge=1, le=10)


class HelloResult(BaseModel):
    greeting: str
    letters: int


def shout(name: str) -> str:
    return name.upper()


async def count_letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


@workflow(name="hello", max_duration="1h")
async def hello(ctx: WorkflowContext, inp: HelloInput) -> HelloResult:
    loud = await ctx.run("shout", shout, inp.name)
    greeting = await ctx.run("compose", lambda: " ".join([f"Hello, {loud}!"] * inp.times))
    letters = await ctx.run("count", count_letters, greeting)
    await ctx.set("greeting", greeting)
    return HelloResult(greeting=greeting, letters=letters)
