"""A reminder sent a week after it was asked for: one durable sleep, then one step.

`ctx.sleep("7d")` records a timer and ends the worker; nothing runs for the
week. The operator starts a new worker when the timer is due, which replays
the history (the sleep is already over) and sends the reminder. In tests the
`WorkflowTestEnv` skips the week on its fake clock.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from examples.fakes import FakeService
from ratline import WorkflowContext, workflow
from ratline.sdk import parse_duration


class ReminderInput(BaseModel):
    user: str = Field(min_length=1)
    message: str = Field(min_length=1, max_length=500)
    delay: str = Field(default="7d", description="how long to wait, e.g. 7d, 36h")

    @field_validator("delay")
    @classmethod
    def _valid_delay(cls, value: str) -> str:
        parse_duration(value)  # raises ValueError with a readable message
        return value


class ReminderResult(BaseModel):
    user: str
    message_id: str
    due: datetime
    sent_at: datetime


class Mailer(FakeService):
    def __init__(self) -> None:
        super().__init__("mailer")

    def send(self, user: str, message: str) -> str:
        call = self.record("send", user, message=message)
        return f"mail-{user}-{len(self.calls_for(call.key))}"


mailer = Mailer()


@workflow(name="long-sleep", max_duration="30d")
async def long_sleep(ctx: WorkflowContext, inp: ReminderInput) -> ReminderResult:
    due = ctx.now() + parse_duration(inp.delay)
    await ctx.set("due", due.isoformat())
    await ctx.sleep(inp.delay)
    message_id = await ctx.run("send-reminder", mailer.send, inp.user, inp.message)
    return ReminderResult(user=inp.user, message_id=message_id, due=due, sent_at=ctx.now())
