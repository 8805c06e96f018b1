"""Human approval with a deadline and one escalation, without holding a worker.

The run notifies an approver and waits on the promise `approval` for two days;
a signal resolves it (`kubectl patch workflowrun ... spec.signals.approval`).
If nobody answers in time it escalates and waits on `escalation` for three more
days; if that also passes, the request expires. While it waits the run is
suspended: no pod runs, the operator wakes it on a signal or at the deadline.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from examples.fakes import FakeService
from ratline import Promise, PromiseRejectedError, WorkflowContext, workflow

APPROVAL_TIMEOUT = "2d"
ESCALATION_TIMEOUT = "3d"


class ApprovalRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)
    requester: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    amount_cents: int = Field(ge=0)
    approver: str = Field(min_length=1)
    escalate_to: str = Field(min_length=1)


class Decision(BaseModel):
    """The payload a signal carries: `{"approved": true, "by": "dana"}`."""

    approved: bool
    by: str = Field(min_length=1)
    comment: str = ""


class ApprovalResult(BaseModel):
    request_id: str
    outcome: Literal["approved", "rejected", "expired"]
    decided_by: str | None
    escalated: bool
    comment: str = ""


class Notifier(FakeService):
    """Stands in for mail or chat: each message is one recorded call."""

    def __init__(self) -> None:
        super().__init__("notifications")

    def send(self, request_id: str, to: str, template: str) -> str:
        self.record("send", request_id, to=to, template=template)
        return f"msg-{request_id}-{template}"


notifier = Notifier()


async def _decision(promise: Promise[Any]) -> Decision:
    """The answer behind a promise; a rejected promise counts as a rejection."""
    try:
        payload = await promise.wait()
    except PromiseRejectedError as exc:
        error = exc.error if isinstance(exc.error, dict) else {"comment": str(exc.error)}
        return Decision(
            approved=False,
            by=str(error.get("by") or "unknown"),
            comment=str(error.get("comment") or error.get("message") or ""),
        )
    return Decision.model_validate(payload)


@workflow(name="approval", max_duration="7d")
async def approval(ctx: WorkflowContext, req: ApprovalRequest) -> ApprovalResult:
    await ctx.run("notify-approver", notifier.send, req.request_id, req.approver, "please-approve")
    await ctx.set("waiting_on", req.approver)
    escalated = False
    decision: Decision | None
    try:
        decision = await _decision(ctx.promise("approval", timeout=APPROVAL_TIMEOUT))
    except TimeoutError:
        escalated = True
        ctx.logger.info("no answer from %s; escalating to %s", req.approver, req.escalate_to)
        await ctx.run("escalate", notifier.send, req.request_id, req.escalate_to, "escalated")
        await ctx.set("waiting_on", req.escalate_to)
        try:
            decision = await _decision(ctx.promise("escalation", timeout=ESCALATION_TIMEOUT))
        except TimeoutError:
            decision = None
    if decision is None:
        outcome: Literal["approved", "rejected", "expired"] = "expired"
    else:
        outcome = "approved" if decision.approved else "rejected"
    await ctx.set("waiting_on", None)
    await ctx.run("notify-requester", notifier.send, req.request_id, req.requester, outcome)
    return ApprovalResult(
        request_id=req.request_id,
        outcome=outcome,
        decided_by=decision.by if decision else None,
        escalated=escalated,
        comment=decision.comment if decision else "",
    )
