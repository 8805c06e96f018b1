"""The undo actions of a failed or cancelled run, each a durable step of its own."""

from __future__ import annotations

from typing import Any

from ratline.engine.commands import Commands
from ratline.engine.steps import Steps
from ratline.sdk.errors import StepFailedError
from ratline.sdk.retry import RetryPolicy
from ratline.store.base import EventType

COMPENSATION_RETRY = RetryPolicy(max_attempts=5, initial_interval=1.0, max_interval=60.0)


async def compensate(cmd: Commands, steps: Steps, reason: str) -> list[str]:
    """Run registered undo actions in reverse order; the messages of those that failed."""
    if not steps.compensations:
        return []
    cmd.compensating = True
    undo = list(reversed(steps.compensations))
    if not cmd.history.compensation_started:
        payload = {"reason": reason, "steps": [c.name for c in undo]}
        cmd.write(EventType.COMPENSATION_STARTED, None, None, payload)
    errors: list[str] = []
    for comp in undo:
        step_name = f"compensate:{comp.name}"
        command_id = cmd.issue("step", step_name)
        try:
            await steps.step(command_id, step_name, comp.fn, comp.args, COMPENSATION_RETRY, Any)
        except StepFailedError as exc:
            errors.append(str(exc))
    return errors
