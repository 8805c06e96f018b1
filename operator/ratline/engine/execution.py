"""One activation of a run: replay its history, then advance it live.

The worker (and the testing runner) create an `Execution` per activation. It
implements `WorkflowContext`: each call is a numbered command; a command that
history already holds returns its recorded outcome, a new one is executed and
recorded. Events are written behind: they are flushed before the next side
effect starts, before suspending and at the end, so a step's completion costs
one commit and the run's final commit carries the last step too.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random as _random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ratline.engine.codec import error_info, from_json, to_json, validate_input
from ratline.engine.flush import Flusher
from ratline.engine.history import HistoryIndex
from ratline.engine.outcome import Activation, SimulatedCrash
from ratline.engine.parts import (
    Abort,
    Compensation,
    ExecutionOptions,
    Handle,
    PromiseHandle,
    PromiseState,
    ReplayQuietLogger,
    Waiter,
    child_name,
    current_step,
    is_async,
    iso,
    parse_time,
    retrieve,
    return_type,
)
from ratline.sdk.context import Promise, StepInfo, TaskHandle, WorkflowContext, WorkflowInfo
from ratline.sdk.definition import WorkflowSpec, spec_of, task_of
from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import (
    InputValidationError,
    NonDeterminismError,
    PromiseRejectedError,
    StepFailedError,
    WorkflowCancelled,
)
from ratline.sdk.retry import DEFAULT_RETRY, RetryPolicy
from ratline.store.base import (
    Event,
    EventType,
    InboxItem,
    InboxKind,
    Lease,
    NewEvent,
    RunRecord,
    RunStatus,
    RunUpdate,
    Store,
    trusted,
)

__all__ = ["COMPENSATION_RETRY", "Execution", "ExecutionOptions"]

COMPENSATION_RETRY = RetryPolicy(max_attempts=5, initial_interval=1.0, max_interval=60.0)
# Enum members as module constants: `EventType.X` is a class attribute lookup per use.
_STEP_COMPLETED = EventType.STEP_COMPLETED
_STEP_FAILED = EventType.STEP_FAILED
_new_object = object.__new__


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
        self.store = store
        self.record = run
        self.spec = spec
        self.options = options or ExecutionOptions()
        self.history = HistoryIndex.build(history)
        self._flusher = Flusher(store, lease, run.id, len(history))
        self._next_command = 0
        self._state: dict[str, Any] = {}
        for event in history:
            if event.type is EventType.STATE_SET and event.name is not None:
                self._state[event.name] = event.payload.get("value")
        seed = run.id  # a run retried from a step keeps the numbers of the run it copies
        if history and history[0].type is EventType.RUN_STARTED:
            seed = str(history[0].payload.get("retry_of") or run.id)
        self._rng = _random.Random(seed)
        self._waiters: list[Waiter] = []
        self._promises: dict[str, PromiseState] = {}
        self._inbox_waiting: dict[str, InboxItem] = {}
        self._inbox_seen: set[str] = set()
        self._compensations: list[Compensation] = []
        self._compensating = False
        self._cancel: str | None = self.history.cancel_reason
        self._blocked: NonDeterminismError | None = None
        self._abort: BaseException | None = None
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_inbox_poll = 0.0
        self._initial_inbox = inbox
        self.steps: list[StepInfo] = []
        self._logger = ReplayQuietLogger(self)

    @property
    def released(self) -> bool:
        """The last commit gave the lease back (the run finished): no release call needed."""
        return self._flusher.released

    # ---------------------------------------------------------------- SDK surface
    @property
    def replaying(self) -> bool:
        return self._next_command < self.history.max_command

    @property
    def info(self) -> WorkflowInfo:
        return WorkflowInfo(
            run_id=self.record.id,
            name=self.record.name,
            namespace=self.record.namespace,
            workflow=self.spec.name,
            attempt=self.options.attempt,
            replaying=self.replaying,
            step_key=current_step.get(),
        )

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._logger

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> Any:
        command_id = self._issue("step", name)
        return await self._step(command_id, name, fn, args, retry, return_type(fn), compensate)

    async def schedule(self, task: str | Callable[..., Any], *args: Any) -> Any:
        spec = task_of(task)
        command_id = self._issue("step", spec.name)
        return await self._step(command_id, spec.name, spec.fn, args, spec.retry, spec.output_type)

    def schedule_async(self, task: str | Callable[..., Any], *args: Any) -> TaskHandle[Any]:
        spec = task_of(task)
        command_id = self._issue("step", spec.name)
        coro = self._step(
            command_id, spec.name, spec.fn, args, spec.retry, spec.output_type, offload=True
        )
        return Handle(spec.name, command_id, self._spawn(coro))

    def run_async(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: RetryPolicy | None = None,
    ) -> TaskHandle[Any]:
        command_id = self._issue("step", name)
        coro = self._step(command_id, name, fn, args, retry, return_type(fn), offload=True)
        return Handle(name, command_id, self._spawn(coro))

    async def gather(self, *handles: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        results = await asyncio.gather(*handles, return_exceptions=return_exceptions)
        for item in results:
            if isinstance(item, WorkflowCancelled | Abort | SimulatedCrash):
                raise item
        return list(results)

    async def sleep(self, duration: timedelta | str | float) -> None:
        delta = parse_duration(duration)
        command_id = self._issue("timer", "sleep")
        fired = self.history.first(command_id, EventType.TIMER_FIRED)
        if fired is not None:
            self._cancel_point(fired.seq)
            return
        started = self.history.payload(command_id, EventType.TIMER_STARTED)
        if started is None:
            self._cancel_point(None)
            fire_at = self.options.clock() + delta
            self._record(EventType.TIMER_STARTED, command_id, "sleep", {"fire_at": iso(fire_at)})
        else:
            self._cancel_point(None)
            fire_at = parse_time(started["fire_at"])
        await self._wait(command_id, "timer", "sleep", fire_at)

    def promise(self, name: str, timeout: timedelta | str | float | None = None) -> Promise[Any]:
        command_id = self._issue("promise", name)
        if name in self._promises:
            raise ValueError(f"promise {name!r} was already created in this run")
        created = self.history.payload(command_id, EventType.PROMISE_CREATED)
        if created is None:
            deadline = self.options.clock() + parse_duration(timeout) if timeout else None
            payload = {"deadline": iso(deadline) if deadline else None}
            self._record(EventType.PROMISE_CREATED, command_id, name, payload)
        else:
            deadline = parse_time(created["deadline"]) if created.get("deadline") else None
        state = self._new_promise(command_id, name, deadline)
        return PromiseHandle(self, state)

    async def set(self, key: str, value: Any) -> None:
        command_id = self._issue("state", key)
        recorded = self.history.payload(command_id, EventType.STATE_SET)
        if recorded is None:
            value = to_json(value)
            self._record(EventType.STATE_SET, command_id, key, {"value": value})
            self._state[key] = value
        else:
            self._state[key] = recorded.get("value")

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def now(self) -> datetime:
        command_id = self._issue("marker", "now")
        recorded = self.history.payload(command_id, EventType.MARKER)
        if recorded is not None:
            return parse_time(recorded["value"])
        value = self.options.clock()
        self._record(EventType.MARKER, command_id, "now", {"value": iso(value)})
        return value

    def random(self) -> _random.Random:
        return self._rng

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def patched(self, patch_id: str) -> bool:
        name = f"patched:{patch_id}"
        upcoming = self._next_command + 1
        if upcoming <= self.history.max_command:  # replaying: follow what history did
            if self.history.records(upcoming) and self.history.matches(upcoming, "marker", name):
                self._issue("marker", name)
                return True
            return False
        command_id = self._issue("marker", name)
        self._record(EventType.MARKER, command_id, name, {"value": True})
        return True

    async def child(
        self, workflow: str | Callable[..., Any], inp: Any = None, *, name: str | None = None
    ) -> Any:
        wf_name = workflow if isinstance(workflow, str) else spec_of(workflow).name
        command_id = self._issue("child", name or wf_name)
        run_name = child_name(self.record.name, name or wf_name, command_id)
        if self.history.first(command_id, EventType.CHILD_STARTED) is None:
            self._cancel_point(None)
            payload = {
                "workflow": wf_name,
                "input": to_json(inp),
                "promise": f"child:{command_id}",
                "run_name": run_name,
            }
            self._record(EventType.CHILD_STARTED, command_id, name or wf_name, payload)
        state = self._new_promise(command_id, f"child:{command_id}", None)
        return await self.await_promise(state)

    def add_compensation(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self._compensations.append(Compensation(name, fn, args))

    # ---------------------------------------------------------------- commands
    def _issue(self, kind: str, name: str) -> int:
        """Number the next command and check it against what history recorded."""
        if self._abort is not None:
            raise Abort(self._abort)
        self._next_command += 1
        command_id = self._next_command
        if not self.history.matches(command_id, kind, name):
            error = NonDeterminismError(
                command_id, f"{kind} {name!r}", self.history.describe(command_id)
            )
            self._blocked = error
            raise error
        return command_id

    def _record(
        self, type_: EventType, command_id: int | None, name: str | None, payload: dict[str, Any]
    ) -> None:
        fields = {"type": type_, "command_id": command_id, "name": name, "payload": payload}
        self._flusher.buffer(trusted(NewEvent, fields))  # the engine's own, well-typed values

    def _cancel_point(self, resolved_seq: int | None) -> None:
        """Raise the pending cancel here unless history resolved this await before it.

        A cancel taken from the inbox in this activation is not in history yet: it
        comes after everything recorded, so replayed resolutions still return.
        """
        if self._cancel is None or self._compensating:
            return
        if resolved_seq is not None:
            cancel_seq = self.history.cancel_seq
            if cancel_seq is None or resolved_seq < cancel_seq:
                return
        raise WorkflowCancelled(self._cancel)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.add_done_callback(retrieve)
        self._tasks.append(task)
        return task

    async def _step(
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
        failures: list[Event] = []
        done: Event | None = None
        for event in self.history.by_command.get(command_id, ()):  # replay: usually one
            if event.type is _STEP_FAILED:
                failures.append(event)
            elif done is None and event.type is _STEP_COMPLETED:
                done = event
        if done is not None:
            value = from_json(done.payload.get("result"), output_type)
            self._note(command_id, name, len(failures) + 1, replayed=True, ok=True)
            self._register_undo(name, compensate, value)
            self._cancel_point(done.seq)
            return value
        if failures and failures[-1].payload.get("retry_at") is None:
            last = failures[-1]
            self._cancel_point(last.seq)
            self._note(command_id, name, len(failures), replayed=True, ok=False)
            err = last.payload.get("error") or {}
            raise StepFailedError(
                name, str(err.get("type")), str(err.get("message")), len(failures)
            )
        self._cancel_point(None)
        policy = retry or self.spec.retry or DEFAULT_RETRY
        attempt = len(failures) + 1
        if failures:
            await self._wait(
                command_id, "retry", name, parse_time(failures[-1].payload["retry_at"])
            )
        while True:
            await self._flush()  # write-behind: all earlier decisions are durable first
            started = time.perf_counter()
            token = current_step.set(f"{self.record.id}:{command_id}")
            self._in_flight += 1
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
                self._in_flight -= 1
                current_step.reset(token)
                if self._waiters:  # only a waiting sibling makes idleness possible
                    self._changed.set()
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            if error is None:
                result = to_json(value)
                payload = {"result": result, "attempt": attempt, "duration_ms": elapsed_ms}
                self._record(EventType.STEP_COMPLETED, command_id, name, payload)
                self._note(command_id, name, attempt, replayed=False, ok=True)
                if self._in_flight > 0 or self.options.crash_after_step == name:
                    await self._flush()
                if self.options.crash_after_step == name:
                    raise SimulatedCrash(name)
                value = from_json(result, output_type)
                self._register_undo(name, compensate, value)
                self._cancel_point(None)
                return value
            if policy.should_retry(attempt, error):
                retry_at = self.options.clock() + policy.delay(attempt)
                payload = {
                    "error": error_info(error),
                    "attempt": attempt,
                    "retry_at": iso(retry_at),
                }
                self._record(EventType.STEP_FAILED, command_id, name, payload)
                self._logger.warning("step %s attempt %d failed: %s", name, attempt, error)
                await self._flush()
                await self._wait(command_id, "retry", name, retry_at)
                attempt += 1
                continue
            payload = {"error": error_info(error), "attempt": attempt, "retry_at": None}
            self._record(EventType.STEP_FAILED, command_id, name, payload)
            self._note(command_id, name, attempt, replayed=False, ok=False)
            raise StepFailedError(name, type(error).__name__, str(error), attempt) from error

    def _register_undo(self, name: str, fn: Callable[[Any], Any] | None, result: Any) -> None:
        if fn is not None:
            self._compensations.append(Compensation(name, fn, (result,)))

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
        self.steps.append(info)

    # ---------------------------------------------------------------- waiting
    async def _wait(self, command_id: int, kind: str, name: str, deadline: datetime) -> None:
        self._cancel_point(None)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter = Waiter(command_id, kind, name, deadline, future)
        self._waiters.append(waiter)
        self._changed.set()
        try:
            await future
        finally:
            self._waiters.remove(waiter)

    def _new_promise(self, command_id: int, name: str, deadline: datetime | None) -> PromiseState:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieve)
        state = PromiseState(command_id, name, deadline, future)
        self._promises[name] = state
        for event in self.history.records(command_id):
            if event.type is EventType.PROMISE_RESOLVED:
                future.set_result(event.payload.get("value"))
            elif event.type is EventType.PROMISE_REJECTED:
                future.set_exception(PromiseRejectedError(name, event.payload.get("error")))
            elif event.type is EventType.PROMISE_TIMED_OUT:
                future.set_exception(TimeoutError(f"promise {name!r} timed out"))
            else:
                continue
            state.resolved_seq = event.seq
            break
        if not future.done() and name in self._inbox_waiting:
            self._resolve_from_inbox(state, self._inbox_waiting.pop(name))
        return state

    async def await_promise(self, state: PromiseState) -> Any:
        if state.future.done():
            self._cancel_point(state.resolved_seq)
            return state.future.result()
        self._cancel_point(None)
        waiter = Waiter(state.command_id, "promise", state.name, state.deadline, state.future)
        self._waiters.append(waiter)
        self._changed.set()
        try:
            return await asyncio.shield(state.future)
        finally:
            self._waiters.remove(waiter)

    def _resolve_from_inbox(self, state: PromiseState, item: InboxItem) -> None:
        if item.kind is InboxKind.REJECT:
            self._record(
                EventType.PROMISE_REJECTED, state.command_id, state.name, {"error": item.payload}
            )
            state.future.set_exception(PromiseRejectedError(state.name, item.payload))
        else:
            self._record(
                EventType.PROMISE_RESOLVED, state.command_id, state.name, {"value": item.payload}
            )
            state.future.set_result(item.payload)
        self._flusher.consume(item.name)
        self._changed.set()

    def _request_cancel(self, reason: str) -> None:
        if self._cancel is not None:
            return
        self._cancel = reason
        self._record(EventType.CANCEL_REQUESTED, None, None, {"reason": reason})
        self._changed.set()
        if self._compensating:
            return
        for waiter in list(self._waiters):
            if not waiter.future.done():
                waiter.future.set_exception(WorkflowCancelled(reason))

    def _apply_inbox(self, items: list[InboxItem]) -> bool:
        """Turn delivered items into history; True when something changed."""
        changed = False
        for item in items:
            if item.name in self._inbox_seen:
                continue
            self._inbox_seen.add(item.name)
            if item.kind in (InboxKind.CANCEL, InboxKind.TIMEOUT):
                self._flusher.consume(item.name)
                self._request_cancel("timed_out" if item.kind is InboxKind.TIMEOUT else "cancelled")
                changed = True
                continue
            state = self._promises.get(item.name)
            if state is None:
                self._inbox_waiting[item.name] = item
            elif state.future.done():
                self._flusher.consume(item.name)  # too late: already resolved or timed out
            else:
                self._resolve_from_inbox(state, item)
                changed = True
        return changed

    def _max_duration_deadline(self) -> datetime | None:
        seconds = self.record.max_duration_s
        if seconds is None and self.spec.max_duration is not None:
            seconds = self.spec.max_duration.total_seconds()
        if not seconds:
            return None
        started = self.record.started_at or self.record.created_at
        return started + timedelta(seconds=seconds)

    def _fire_due(self) -> bool:
        now = self.options.clock()
        fired = False
        for waiter in list(self._waiters):
            if waiter.future.done() or waiter.deadline is None or waiter.deadline > now:
                continue
            if waiter.kind == "timer":
                self._record(EventType.TIMER_FIRED, waiter.command_id, waiter.name, {})
                waiter.future.set_result(None)
            elif waiter.kind == "retry":
                waiter.future.set_result(None)
            else:
                state = self._promises[waiter.name]
                self._record(EventType.PROMISE_TIMED_OUT, waiter.command_id, waiter.name, {})
                state.future.set_exception(TimeoutError(f"promise {waiter.name!r} timed out"))
            fired = True
        limit = self._max_duration_deadline()
        if limit is not None and limit <= now and self._cancel is None:
            self._request_cancel("timed_out")
            fired = True
        return fired

    def _earliest_deadline(self) -> datetime | None:
        deadlines = [w.deadline for w in self._waiters if w.deadline and not w.future.done()]
        limit = self._max_duration_deadline()
        if limit is not None and self._cancel is None:
            deadlines.append(limit)
        return min(deadlines) if deadlines else None

    def _idle(self) -> bool:
        if self._in_flight or not self._waiters:
            return False
        return all(not w.future.done() for w in self._waiters)

    async def _settle(self) -> None:
        """Let every ready coroutine run until nothing changes for two loop turns."""
        quiet = 0
        for _ in range(200):
            self._changed.clear()
            await asyncio.sleep(0)
            quiet = quiet + 1 if not self._changed.is_set() else 0
            if quiet >= 2:
                return

    async def _poll_inbox(self) -> bool:
        self._last_inbox_poll = time.monotonic()
        items = await self.store.pending_inbox(self.record.id)
        return self._apply_inbox(items)

    # ---------------------------------------------------------------- flushing
    async def _flush(self, update: RunUpdate | None = None) -> None:
        try:
            await self._flusher.flush(update)
        except Exception as exc:  # fenced, or the store is gone: nothing more may be written
            self._abort = exc
            raise Abort(exc) from exc

    # ---------------------------------------------------------------- the activation
    async def activate(self) -> Activation:
        """Advance the run until it finishes or waits longer than the idle threshold."""
        try:
            inp = validate_input(self.spec.name, self.spec.input_type, self.record.input)
        except InputValidationError as exc:
            error = {**error_info(exc), "field": exc.field}
            self._record(EventType.RUN_FAILED, None, None, {"error": error})
            await self._flusher.flush(
                RunUpdate(status=RunStatus.FAILED, error=error, release_lease=True)
            )
            return Activation(RunStatus.FAILED, error=error, steps=self.steps)
        if not self.history.run_started:
            payload = {"input": to_json(self.record.input), "workflow": self.spec.name}
            self._record(EventType.RUN_STARTED, None, None, payload)
        self._flusher.set_status(RunStatus.RUNNING)
        if self._initial_inbox is None:
            await self._poll_inbox()
        else:
            self._last_inbox_poll = time.monotonic()
            self._apply_inbox(self._initial_inbox)
        self._fire_due()
        body = self._spawn(self._body(inp))
        body.add_done_callback(lambda _: self._changed.set())
        suspended: Activation | None = None
        while not body.done():
            await self._settle()
            if body.done():
                break
            if self._fire_due():
                continue
            if self._idle():
                suspended = await self._when_idle()
                if suspended is not None:
                    break
                continue
            poll_due = time.monotonic() - self._last_inbox_poll > self.options.busy_inbox_poll_s
            if poll_due and await self._poll_inbox():
                continue
            deadline = self._earliest_deadline()
            timeout = self.options.busy_inbox_poll_s
            if deadline is not None:
                timeout = min(timeout, max(0.0, (deadline - self.options.clock()).total_seconds()))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=max(timeout, 0.001))
        if suspended is not None:
            await self._stop_tasks()
            return suspended
        await self._stop_tasks()
        return body.result()  # type: ignore[no-any-return]

    async def _when_idle(self) -> Activation | None:
        """Every branch waits: take what the inbox holds, wait a little, or suspend."""
        if await self._poll_inbox() or self._fire_due():
            return None
        deadline = self._earliest_deadline()
        now = self.options.clock()
        threshold = timedelta(seconds=self.options.idle_threshold_s)
        if deadline is not None and deadline - now <= threshold:
            remaining = max(0.0, (deadline - now).total_seconds())
            await self._flush()
            await self.store.wait_for_change(self.record.id, remaining)
            return None
        waiting = sorted(w.name for w in self._waiters if w.kind == "promise")
        update = RunUpdate(
            status=RunStatus.SUSPENDED,
            wake_at=deadline,
            clear_wake_at=deadline is None,
            waiting_for=waiting,
        )
        await self._flush(update)
        # a signal delivered between our inbox read and this commit must not be lost
        if await self._poll_inbox():
            self._flusher.set_status(RunStatus.RUNNING)
            return None
        return Activation(
            RunStatus.SUSPENDED, wake_at=deadline, waiting_for=waiting, steps=self.steps
        )

    async def _stop_tasks(self) -> None:
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _body(self, inp: Any) -> Activation:
        """The workflow to its end; a crash or a lost lease may also hit compensation."""
        try:
            return await self._run_to_end(inp)
        except Abort as exc:
            raise exc.cause from None
        except SimulatedCrash:
            return Activation(RunStatus.RUNNING, crashed=True, steps=self.steps)

    async def _run_to_end(self, inp: Any) -> Activation:
        try:
            value = await self.spec.fn(self, inp)
            if self._blocked is not None:
                raise self._blocked
            if self.history.max_command > self._next_command:
                self._blocked = NonDeterminismError(
                    self._next_command + 1,
                    "the end of the workflow",
                    self.history.describe(self._next_command + 1),
                )
                raise self._blocked
            result = to_json(value)
            self._record(EventType.RUN_COMPLETED, None, None, {"result": result})
            await self._flush(
                RunUpdate(status=RunStatus.SUCCEEDED, result=result, release_lease=True)
            )
            return Activation(RunStatus.SUCCEEDED, result=result, steps=self.steps)
        except WorkflowCancelled as exc:
            return await self._finish_failed(exc, cancelled=exc.reason)
        except Exception as exc:
            return await self._finish_failed(exc, cancelled=None)

    async def _finish_failed(self, exc: BaseException, cancelled: str | None) -> Activation:
        if self._blocked is None:
            try:
                return await self._compensate_and_end(exc, cancelled)
            except NonDeterminismError:  # the undo steps no longer match history
                if self._blocked is None:
                    raise
        return await self._end_blocked()

    async def _end_blocked(self) -> Activation:
        """History and code disagree: keep history as it is and stop, visibly."""
        blocked = self._blocked
        assert blocked is not None
        self._flusher.discard()
        detail = {"expected": blocked.expected, "recorded": blocked.recorded}
        diff = {**error_info(blocked), "command_id": blocked.command_id}
        self._record(EventType.RUN_BLOCKED, None, None, detail)
        await self._flush(RunUpdate(status=RunStatus.BLOCKED, error=diff, release_lease=True))
        return Activation(RunStatus.BLOCKED, error=diff, steps=self.steps)

    async def _compensate_and_end(self, exc: BaseException, cancelled: str | None) -> Activation:
        reason = cancelled or "failed"
        error: dict[str, Any]
        compensation_errors = await self._compensate(reason)
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
        self._record(event, None, None, {"error": error})
        await self._flush(RunUpdate(status=status, error=error, release_lease=True))
        return Activation(status, error=error, steps=self.steps)

    async def _compensate(self, reason: str) -> list[str]:
        """Run registered undo actions in reverse order, each as a durable step."""
        if not self._compensations:
            return []
        self._compensating = True
        if not self.history.compensation_started:
            names = [c.name for c in reversed(self._compensations)]
            self._record(
                EventType.COMPENSATION_STARTED, None, None, {"reason": reason, "steps": names}
            )
        errors: list[str] = []
        for comp in reversed(self._compensations):
            step_name = f"compensate:{comp.name}"
            command_id = self._issue("step", step_name)
            try:
                await self._step(command_id, step_name, comp.fn, comp.args, COMPENSATION_RETRY, Any)
            except StepFailedError as exc:
                errors.append(str(exc))
        return errors
