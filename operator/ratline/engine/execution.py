"""One activation of a run, as the `WorkflowContext` a workflow sees.

The worker (and the testing runner) create an `Execution` per activation. Each
SDK call is a numbered command (`commands.py`): a command that history already
holds returns its recorded outcome, a new one is executed and recorded. Steps
live in `steps.py`, timers, promises and the inbox in `waits.py`, the loop that
drives the activation to its end or its suspension in `driver.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ratline.engine.codec import to_json
from ratline.engine.commands import Commands
from ratline.engine.compensation import COMPENSATION_RETRY
from ratline.engine.driver import Driver
from ratline.engine.outcome import Activation, SimulatedCrash
from ratline.engine.parts import (
    Abort,
    Compensation,
    ExecutionOptions,
    Handle,
    PromiseHandle,
    child_name,
    current_step,
    iso,
    joined,
    parse_time,
    return_type,
)
from ratline.engine.steps import Steps
from ratline.engine.waits import Waits
from ratline.sdk.context import Promise, StepInfo, TaskHandle, WorkflowContext, WorkflowInfo
from ratline.sdk.definition import WorkflowSpec, spec_of, task_of
from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import NonDeterminismError, WorkflowCancelled
from ratline.sdk.retry import RetryPolicy
from ratline.store.base import Event, EventType, InboxItem, Lease, RunRecord, Store

__all__ = ["COMPENSATION_RETRY", "Execution", "ExecutionOptions"]


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """Any awaitable handed to `gather` becomes a branch the engine can see."""
    return await awaitable


class Execution(WorkflowContext):
    """Replays and advances one run while holding its lease."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        run: RunRecord,
        spec: WorkflowSpec,
        history: list[Event],
        options: ExecutionOptions | None = None,
        inbox: list[InboxItem] | None = None,
    ) -> None:
        """`inbox`: the run's unconsumed items if the caller just read them (`Store.begin`);
        None makes the activation read them first."""
        self._cmd = cmd = Commands(store, lease, run, spec, history, options or ExecutionOptions())
        self._waits = Waits(cmd)
        self._steps = Steps(cmd, self._waits)
        self._driver = Driver(cmd, self._waits, self._steps)
        self._initial_inbox = inbox

    @property
    def released(self) -> bool:
        """The last commit gave the lease back (the run finished): no release call needed."""
        return self._cmd.flusher.released

    @property
    def blocked(self) -> NonDeterminismError | None:
        """The first mismatch between the code and history, if the code met one."""
        return self._cmd.blocked

    @property
    def steps(self) -> list[StepInfo]:
        return self._cmd.steps

    async def activate(self) -> Activation:
        """Advance the run until it finishes or waits longer than the idle threshold."""
        return await self._driver.activate(self, self._initial_inbox)

    # ---------------------------------------------------------------- SDK surface
    @property
    def replaying(self) -> bool:
        return self._cmd.replaying

    @property
    def info(self) -> WorkflowInfo:
        cmd = self._cmd
        return WorkflowInfo(
            run_id=cmd.run.id,
            name=cmd.run.name,
            namespace=cmd.run.namespace,
            workflow=cmd.spec.name,
            attempt=cmd.options.attempt,
            workflow_attempt=cmd.attempt,
            replaying=cmd.replaying,
            step_key=current_step.get(),
        )

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._cmd.logger

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> Any:
        command_id = self._cmd.issue("step", name)
        return await self._steps.step(
            command_id, name, fn, args, retry, return_type(fn), compensate
        )

    async def schedule(self, task: str | Callable[..., Any], *args: Any) -> Any:
        spec = task_of(task)
        command_id = self._cmd.issue("step", spec.name)
        return await self._steps.step(
            command_id, spec.name, spec.fn, args, spec.retry, spec.output_type
        )

    def schedule_async(self, task: str | Callable[..., Any], *args: Any) -> TaskHandle[Any]:
        spec = task_of(task)
        command_id = self._cmd.issue("step", spec.name)
        coro = self._steps.step(
            command_id, spec.name, spec.fn, args, spec.retry, spec.output_type, offload=True
        )
        return Handle(spec.name, command_id, self._cmd.spawn(coro), self._cmd.park)

    def run_async(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
    ) -> TaskHandle[Any]:
        command_id = self._cmd.issue("step", name)
        coro = self._steps.step(command_id, name, fn, args, retry, return_type(fn), offload=True)
        return Handle(name, command_id, self._cmd.spawn(coro), self._cmd.park)

    async def gather(self, *handles: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        cmd = self._cmd
        branches = [h.task if isinstance(h, Handle) else cmd.spawn(_awaited(h)) for h in handles]
        gathered = asyncio.gather(
            *(asyncio.shield(b) for b in branches), return_exceptions=return_exceptions
        )
        with cmd.park(joined(branches, return_exceptions)):  # moves when they end
            results = await gathered
        for item in results:
            if isinstance(item, WorkflowCancelled | NonDeterminismError | Abort | SimulatedCrash):
                raise item
        return list(results)

    async def sleep(self, duration: timedelta | str | float) -> None:
        delta = parse_duration(duration)
        command_id = self._cmd.issue("timer", "sleep")
        await self._waits.sleep(command_id, delta)

    def promise(
        self, name: str, timeout: timedelta | str | float | None = None, *, type: Any = None
    ) -> Promise[Any]:
        command_id = self._cmd.issue("promise", name)
        state = self._waits.create_promise(command_id, name, timeout, type)
        return PromiseHandle(state, self._waits.await_promise)

    async def set(self, key: str, value: Any) -> None:
        command_id = self._cmd.issue("state", key)
        recorded = self._cmd.history.payload(command_id, EventType.STATE_SET)
        if recorded is None:
            value = to_json(value)
            self._cmd.write(EventType.STATE_SET, command_id, key, {"value": value})
            self._cmd.state[key] = value
        else:
            self._cmd.state[key] = recorded.get("value")

    def get(self, key: str, default: Any = None) -> Any:
        return self._cmd.state.get(key, default)

    def now(self) -> datetime:
        command_id = self._cmd.issue("marker", "now")
        recorded = self._cmd.history.payload(command_id, EventType.MARKER)
        if recorded is not None:
            return parse_time(recorded["value"])
        value = self._cmd.options.clock()
        self._cmd.write(EventType.MARKER, command_id, "now", {"value": iso(value)})
        return value

    def random(self) -> _random.Random:
        return self._cmd.rng

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._cmd.rng.getrandbits(128), version=4)

    def patched(self, patch_id: str) -> bool:
        cmd = self._cmd
        name = f"patched:{patch_id}"
        upcoming = cmd.next_command + 1
        if upcoming <= cmd.history.max_command:  # replaying: follow what history did
            if cmd.history.records(upcoming) and cmd.history.matches(upcoming, "marker", name):
                cmd.issue("marker", name)
                return True
            return False
        command_id = cmd.issue("marker", name)
        cmd.write(EventType.MARKER, command_id, name, {"value": True})
        return True

    async def child(
        self, workflow: str | Callable[..., Any], inp: Any = None, *, name: str | None = None
    ) -> Any:
        cmd = self._cmd
        wf_name = workflow if isinstance(workflow, str) else spec_of(workflow).name
        command_id = cmd.issue("child", name or wf_name)
        run_name = child_name(cmd.run.name, name or wf_name, command_id)
        if cmd.history.first(command_id, EventType.CHILD_STARTED) is None:
            cmd.cancel_point(None)
            payload = {
                "workflow": wf_name,
                "input": to_json(inp),
                "promise": f"child:{command_id}",
                "run_name": run_name,
            }
            cmd.write(EventType.CHILD_STARTED, command_id, name or wf_name, payload)
        state = self._waits.open_promise(command_id, f"child:{command_id}", None)
        return await self._waits.await_promise(state)

    def add_compensation(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.compensations.append(Compensation(name, fn, args))
