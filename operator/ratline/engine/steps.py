"""Steps: replay a recorded outcome, or run the side effect with its retry policy.

Each attempt starts only after every earlier decision is durable (the
write-behind rule); a failed attempt records when the next one is due, so
backoff survives a crash.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from ratline.engine.codec import from_json, to_json
from ratline.engine.commands import Commands
from ratline.engine.failures import step_error_info, step_failure
from ratline.engine.parts import Compensation, current_step, is_async, iso, parse_time
from ratline.engine.waits import Waits
from ratline.sdk.context import StepInfo
from ratline.sdk.retry import DEFAULT_RETRY, RetryPolicy
from ratline.store.base import Event, EventType

# Enum members as module constants: `EventType.X` is a class attribute lookup per use.
_STEP_COMPLETED = EventType.STEP_COMPLETED
_STEP_FAILED = EventType.STEP_FAILED
_new_object = object.__new__


class Steps:
    """Runs the steps of one activation and keeps the undo actions they register."""

    def __init__(self, cmd: Commands, waits: Waits) -> None:
        self.cmd = cmd
        self.waits = waits
        self.compensations: list[Compensation] = []

    async def step(
        self,
        command_id: int,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retry: RetryPolicy | None,
        output_type: Any,
        compensate: Callable[[Any], Any] | None = None,
        *,
        offload: bool = False,
    ) -> Any:
        """Replay or execute one step. Sync functions run inline unless `offload`
        (fan-out), where they run in threads so that items proceed together."""
        cmd = self.cmd
        failures: list[Event] = []
        done: Event | None = None
        for event in cmd.history.by_command.get(command_id, ()):  # replay: usually one
            if event.type is _STEP_FAILED:
                failures.append(event)
            elif done is None and event.type is _STEP_COMPLETED:
                done = event
        if done is not None:
            value = from_json(done.payload.get("result"), output_type)
            self._note(command_id, name, len(failures) + 1, replayed=True, ok=True)
            self._register_undo(name, compensate, value)
            cmd.cancel_point(done.seq)
            return value
        if failures and failures[-1].payload.get("retry_at") is None:
            last = failures[-1]
            cmd.cancel_point(last.seq)
            self._note(command_id, name, len(failures), replayed=True, ok=False)
            raise step_failure(name, last.payload.get("error") or {}, len(failures))
        cmd.cancel_point(None)
        policy = retry or cmd.spec.retry or DEFAULT_RETRY
        attempt = len(failures) + 1
        if failures:
            retry_at = parse_time(failures[-1].payload["retry_at"])
            await self.waits.wait(command_id, "retry", name, retry_at)
        crash_after = cmd.options.crash_after_step
        crash_during = cmd.options.crash_during_step
        while True:
            await cmd.flush()  # write-behind: all earlier decisions are durable first
            started = time.perf_counter()
            token = current_step.set(f"{cmd.run.id}:{command_id}")
            cmd.in_flight += 1
            try:
                if is_async(fn):
                    value = await fn(*args)
                elif offload:  # fan-out: blocking items must run side by side
                    value = await asyncio.to_thread(fn, *args)
                else:  # sequential: a thread hop would cost more than most steps
                    value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:  # the step's own failure: retry or give up
                error: Exception | None = exc
            else:
                error = None
            finally:
                cmd.in_flight -= 1
                current_step.reset(token)
            if crash_during == name:  # testing: the process dies before recording
                cmd.crash(name)
            if cmd.stopped:  # a mismatch or a crash elsewhere: this result is not recorded
                cmd.halted()
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            if error is None:
                result = to_json(value)
                payload = {"result": result, "attempt": attempt, "duration_ms": elapsed_ms}
                cmd.write(_STEP_COMPLETED, command_id, name, payload)
                self._note(command_id, name, attempt, replayed=False, ok=True)
                if cmd.in_flight > 0 or crash_after == name:
                    await cmd.flush()
                if crash_after == name:
                    cmd.crash(name)
                value = from_json(result, output_type)
                self._register_undo(name, compensate, value)
                cmd.cancel_point(None)
                return value
            if policy.should_retry(attempt, error):
                retry_at = cmd.options.clock() + policy.delay(attempt)
                payload = {
                    "error": step_error_info(error),
                    "attempt": attempt,
                    "retry_at": iso(retry_at),
                }
                cmd.write(_STEP_FAILED, command_id, name, payload)
                cmd.logger.warning("step %s attempt %d failed: %s", name, attempt, error)
                await cmd.flush()
                await self.waits.wait(command_id, "retry", name, retry_at)
                attempt += 1
                continue
            info = step_error_info(error)
            cmd.write(
                _STEP_FAILED,
                command_id,
                name,
                {"error": info, "attempt": attempt, "retry_at": None},
            )
            self._note(command_id, name, attempt, replayed=False, ok=False)
            raise step_failure(name, info, attempt) from error

    def _register_undo(self, name: str, fn: Callable[[Any], Any] | None, result: Any) -> None:
        if fn is not None:
            self.compensations.append(Compensation(name, fn, (result,)))

    def _note(self, command_id: int, name: str, attempts: int, *, replayed: bool, ok: bool) -> None:
        # A frozen dataclass's __init__ sets each field through object.__setattr__
        # (~2 µs); filling __dict__ directly builds the same object in a fraction,
        # which matters when replaying 10,000 steps.
        info = _new_object(StepInfo)
        info.__dict__.update(
            command_id=command_id,
            name=name,
            kind="step",
            attempts=attempts,
            replayed=replayed,
            executed=not replayed,
            ok=ok,
        )
        self.cmd.steps.append(info)
