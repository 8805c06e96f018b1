"""The activation driver: run the workflow body, fire deadlines, read the inbox,
and end the activation (finished, failed, blocked or suspended)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from ratline.engine.codec import error_info, to_json, validate_input, validate_output
from ratline.engine.commands import Commands
from ratline.engine.compensation import compensate
from ratline.engine.outcome import Activation, SimulatedCrash
from ratline.engine.parts import Abort, iso, parse_time
from ratline.engine.steps import Steps
from ratline.engine.waits import Waits
from ratline.sdk.context import WorkflowContext
from ratline.sdk.errors import (
    InputValidationError,
    NonRetryableError,
    OutputValidationError,
    WorkflowCancelled,
)
from ratline.sdk.retry import RetryPolicy
from ratline.store.base import EventType, InboxItem, RunStatus, RunUpdate

# Backoff between whole-workflow attempts (max_retries): 1 s, 2 s, 4 s ... up to 5 min.
_ATTEMPT_BACKOFF = RetryPolicy(max_attempts=1_000_000, initial_interval=1.0)


class Driver:
    """Advances one activation until the run finishes or waits past the idle threshold."""

    def __init__(self, cmd: Commands, waits: Waits, steps: Steps) -> None:
        self.cmd = cmd
        self.waits = waits
        self.steps = steps

    async def activate(self, ctx: WorkflowContext, inbox: list[InboxItem] | None) -> Activation:
        cmd, waits = self.cmd, self.waits
        try:
            inp = validate_input(cmd.spec.name, cmd.spec.input_type, cmd.run.input)
        except InputValidationError as exc:
            error = {**error_info(exc), "field": exc.field}
            cmd.write(EventType.RUN_FAILED, None, None, {"error": error})
            await cmd.flusher.flush(
                RunUpdate(status=RunStatus.FAILED, error=error, release_lease=True)
            )
            return Activation(RunStatus.FAILED, error=error, steps=cmd.steps)
        if not cmd.history.run_started:
            payload = {"input": to_json(cmd.run.input), "workflow": cmd.spec.name}
            cmd.write(EventType.RUN_STARTED, None, None, payload)
        cmd.flusher.set_status(RunStatus.RUNNING)
        if inbox is None:
            await waits.poll_inbox()
        else:
            waits.last_inbox_poll = time.monotonic()
            waits.apply_inbox(inbox)
        waits.fire_due()
        body = cmd.spawn(self._body(ctx, inp))
        suspended: Activation | None = None
        options = cmd.options
        changed = cmd.changed
        loop = asyncio.get_running_loop()
        while True:
            changed.clear()  # state is re-read below, so an earlier wake-up is not lost
            if body.done() or (cmd.stopped and cmd.abort is None):
                break
            if waits.fire_due():
                pass  # the branches it woke run before the next look
            elif waits.idle():
                suspended = await self._when_idle()
                if suspended is not None:
                    break
                continue
            elif (
                time.monotonic() - waits.last_inbox_poll > options.busy_inbox_poll_s
                and await waits.poll_inbox()
            ):
                continue
            deadline = waits.earliest_deadline()
            timeout = options.busy_inbox_poll_s
            if deadline is not None:
                timeout = min(timeout, max(0.0, (deadline - options.clock()).total_seconds()))
            # a timer that only sets the change event: cheaper than wait_for's task
            timer = loop.call_later(max(timeout, 0.001), changed.set)
            try:
                await changed.wait()
            finally:
                timer.cancel()
        await self._stop_tasks()
        if suspended is not None:
            return suspended
        if cmd.crashed:
            return Activation(RunStatus.RUNNING, crashed=True, steps=cmd.steps)
        if cmd.replay_end is not None:
            return Activation(RunStatus.RUNNING, steps=cmd.steps)
        if cmd.blocked is not None:  # whichever branch met the mismatch, the run stops here
            return await self._end_blocked()
        return body.result()  # type: ignore[no-any-return]

    async def _when_idle(self) -> Activation | None:
        """Every branch waits: take what the inbox holds, wait a little, or suspend."""
        cmd, waits = self.cmd, self.waits
        if await waits.poll_inbox() or waits.fire_due():
            return None
        deadline = waits.earliest_deadline()
        now = cmd.options.clock()
        threshold = timedelta(seconds=cmd.options.idle_threshold_s)
        if deadline is not None and deadline - now <= threshold:
            remaining = max(0.0, (deadline - now).total_seconds())
            await cmd.flush()
            await cmd.store.wait_for_change(cmd.run.id, remaining)
            return None
        waiting = waits.waiting_for()
        update = RunUpdate(
            status=RunStatus.SUSPENDED,
            wake_at=deadline,
            clear_wake_at=deadline is None,
            waiting_for=waiting,
        )
        await cmd.flush(update)
        # a signal delivered between our inbox read and this commit must not be lost
        if await waits.poll_inbox():
            cmd.flusher.set_status(RunStatus.RUNNING)
            return None
        return Activation(
            RunStatus.SUSPENDED, wake_at=deadline, waiting_for=waiting, steps=cmd.steps
        )

    async def _stop_tasks(self) -> None:
        pending = [t for t in self.cmd.tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _body(self, ctx: WorkflowContext, inp: Any) -> Activation:
        """The workflow to its end; a crash or a lost lease may also hit compensation."""
        try:
            return await self._run_to_end(ctx, inp)
        except Abort as exc:
            raise exc.cause from None
        except SimulatedCrash:
            return Activation(RunStatus.RUNNING, crashed=True, steps=self.cmd.steps)

    async def _run_to_end(self, ctx: WorkflowContext, inp: Any) -> Activation:
        cmd = self.cmd
        while True:
            try:
                await self._attempt_start()
                value = await cmd.spec.fn(ctx, inp)
                if cmd.blocked is not None:
                    raise cmd.blocked
                if cmd.history.max_command > cmd.next_command:
                    raise cmd.block(cmd.next_command + 1, "the end of the workflow")
                result = validate_output(cmd.spec.name, cmd.spec.output_type, value)
                cmd.write(EventType.RUN_COMPLETED, None, None, {"result": result})
                update = RunUpdate(status=RunStatus.SUCCEEDED, result=result, release_lease=True)
                await cmd.flush(update)
                return Activation(RunStatus.SUCCEEDED, result=result, steps=cmd.steps)
            except WorkflowCancelled as exc:
                return await self._finish_failed(exc, cancelled=exc.reason)
            except Exception as exc:
                if not self._retries_left(exc):
                    return await self._finish_failed(exc, cancelled=None)
                await self._fail_attempt(exc)

    async def _attempt_start(self) -> None:
        """A later attempt waits out its backoff first (durably: it is a retry wait)."""
        starts_at = self.cmd.history.attempt_starts_at
        if self.cmd.attempt > 1 and starts_at is not None:
            when = parse_time(starts_at)
            if when > self.cmd.options.clock():
                await self.waits.wait(0, "retry", "workflow", when)

    def _retries_left(self, exc: Exception) -> bool:
        cmd = self.cmd
        if isinstance(exc, NonRetryableError | OutputValidationError) or cmd.blocked is not None:
            return False
        return cmd.attempt <= cmd.spec.max_retries

    async def _fail_attempt(self, exc: Exception) -> None:
        """Undo this attempt, record its failure, and start the next one from the top."""
        cmd = self.cmd
        if cmd.blocked is not None:
            raise cmd.blocked
        errors = await compensate(cmd, self.steps, "failed")
        error = error_info(exc)
        if errors:
            error["compensation_errors"] = errors
        retry_at = iso(cmd.options.clock() + _ATTEMPT_BACKOFF.delay(cmd.attempt))
        payload = {"attempt": cmd.attempt, "error": error, "retry_at": retry_at}
        payload["base"] = cmd.next_command
        cmd.write(EventType.ATTEMPT_FAILED, None, None, payload)
        cmd.logger.warning("attempt %d failed (%s); the workflow starts again", cmd.attempt, exc)
        await cmd.flush()
        cmd.history.attempt_starts_at = retry_at
        self.steps.compensations.clear()
        cmd.new_attempt()

    async def _finish_failed(self, exc: BaseException, cancelled: str | None) -> Activation:
        """Compensate and end; a mismatch (even in the undo steps) is the driver's to end."""
        if self.cmd.blocked is not None:
            raise self.cmd.blocked
        return await self._compensate_and_end(exc, cancelled)

    async def _end_blocked(self) -> Activation:
        """History and code disagree: keep history as it is and stop, visibly."""
        cmd = self.cmd
        blocked = cmd.blocked
        assert blocked is not None
        cmd.flusher.discard()  # nothing this activation decided reaches history
        detail = {"expected": blocked.expected, "recorded": blocked.recorded}
        diff = {**error_info(blocked), "command_id": blocked.command_id}
        cmd.write(EventType.RUN_BLOCKED, None, None, detail)
        update = RunUpdate(status=RunStatus.BLOCKED, error=diff, release_lease=True)
        await cmd.flusher.flush(update)
        return Activation(RunStatus.BLOCKED, error=diff, steps=cmd.steps)

    async def _compensate_and_end(self, exc: BaseException, cancelled: str | None) -> Activation:
        cmd = self.cmd
        error: dict[str, Any]
        compensation_errors = await compensate(cmd, self.steps, cancelled or "failed")
        if cancelled == "timed_out":
            status, event = RunStatus.TIMED_OUT, EventType.RUN_TIMED_OUT
            error = {"type": "TimedOut", "message": "maxDuration passed"}
        elif cancelled is not None:
            status, event = RunStatus.CANCELLED, EventType.RUN_CANCELLED
            error = {"type": "Cancelled", "message": "cancel requested"}
        else:
            status, event = RunStatus.FAILED, EventType.RUN_FAILED
            error = error_info(exc)
        if compensation_errors:
            error["compensation_errors"] = compensation_errors
        cmd.write(event, None, None, {"error": error})
        await cmd.flush(RunUpdate(status=status, error=error, release_lease=True))
        return Activation(status, error=error, steps=cmd.steps)
