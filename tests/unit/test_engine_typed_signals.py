"""Typed signals: `ctx.promise(name, type=Model)` validates what arrives."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from ratline import WorkflowContext, workflow
from ratline.store import EventType, RunStatus
from ratline.testing import WorkflowTestEnv


class Approval(BaseModel):
    approver: str
    amount: int


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@workflow(name=unique("typed-approval"))
async def typed_approval(ctx: WorkflowContext, _: None) -> str:
    approval = await ctx.promise("approval", timeout="1d", type=Approval).wait()
    assert isinstance(approval, Approval)
    return f"{approval.approver} approved {approval.amount}"


async def test_a_bad_payload_is_refused_and_a_corrected_resend_resolves() -> None:
    env = WorkflowTestEnv()
    run = await env.start(typed_approval)
    refused = await run.signal("approval", {"approver": "ana", "amount": "a lot"})
    assert refused.status is RunStatus.SUSPENDED  # the promise keeps waiting
    assert refused.waiting_for == ["approval"]
    events = await run.history()
    [refusal] = [e for e in events if e.type is EventType.SIGNAL_REFUSED]
    assert refusal.name == "approval"
    assert refusal.payload["field"] == "amount"
    assert "amount" in refusal.payload["message"]
    assert refusal.payload["payload"] == {"approver": "ana", "amount": "a lot"}
    assert not [e for e in events if e.type is EventType.PROMISE_RESOLVED]

    done = await run.signal("approval", {"approver": "ana", "amount": 12})
    assert done.status is RunStatus.SUCCEEDED
    assert await run.result() == "ana approved 12"


async def test_a_typed_value_is_rebuilt_on_replay() -> None:
    @workflow(name=unique("typed-replay"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        approval = await ctx.promise("approval", type=Approval)
        await ctx.sleep("1h")  # the next activation replays the resolution
        return f"{type(approval).__name__}:{approval.amount}"

    env = WorkflowTestEnv()
    run = await env.start(wf)
    await run.signal("approval", {"approver": "bo", "amount": 3})
    assert await run.result() == "Approval:3"


async def test_an_early_bad_signal_is_refused_when_the_promise_is_created() -> None:
    @workflow(name=unique("typed-early"))
    async def wf(ctx: WorkflowContext, _: None) -> str:
        await ctx.sleep("1h")
        approval = await ctx.promise("approval", type=Approval)
        return approval.approver

    env = WorkflowTestEnv()
    run = await env.start(wf)
    await run.signal("approval", {"approver": 5})
    await env.advance("1h")
    assert run.status is RunStatus.SUSPENDED
    refusals = [e for e in await run.history() if e.type is EventType.SIGNAL_REFUSED]
    assert [e.payload["field"] for e in refusals] == ["approver"]
    await run.signal("approval", {"approver": "cy", "amount": 1})
    assert await run.result() == "cy"
