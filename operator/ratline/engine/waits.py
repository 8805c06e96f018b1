"""Durable waits: timers, retry backoffs, promises and the run's inbox.

A branch that waits registers a `Waiter`; deadlines fire from the clock, and
promises resolve from inbox items (signals, rejections, child results). A
cancel or timeout item turns into a `WorkflowCancelled` at every open wait.

An inbox item named `promise` or `promise#tag` is for promise `promise`: the tag
lets a corrected signal follow a refused one (the inbox keeps one item per name).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from ratline.engine.codec import from_json, refusal
from ratline.engine.commands import Commands
from ratline.engine.parts import PromiseState, Waiter, iso, parse_time, retrieve
from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import PromiseRejectedError, WorkflowCancelled
from ratline.store.base import EventType, InboxItem, InboxKind


class Waits:
    """The open waits of one activation and the inbox items that may end them."""

    def __init__(self, cmd: Commands) -> None:
        self.cmd = cmd
        self.waiters: list[Waiter] = []
        self.promises: dict[str, PromiseState] = {}
        self._inbox_waiting: defaultdict[str, list[InboxItem]] = defaultdict(list)
        self._inbox_seen: set[str] = set()
        self.last_inbox_poll = 0.0

    # ---------------------------------------------------------------- timers
    async def wait(self, command_id: int, kind: str, name: str, deadline: datetime) -> None:
        """Block this branch until `deadline` (a timer or a retry backoff)."""
        self.cmd.cancel_point(None)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter = Waiter(command_id, kind, name, deadline, future)
        self.waiters.append(waiter)
        try:
            with self.cmd.park(lambda: not future.done()):
                await future
        finally:
            self.waiters.remove(waiter)

    async def sleep(self, command_id: int, delta: timedelta) -> None:
        cmd = self.cmd
        fired = cmd.history.first(command_id, EventType.TIMER_FIRED)
        if fired is not None:
            cmd.cancel_point(fired.seq)
            return
        started = cmd.history.payload(command_id, EventType.TIMER_STARTED)
        cmd.cancel_point(None)
        if started is None:
            fire_at = cmd.options.clock() + delta
            cmd.write(EventType.TIMER_STARTED, command_id, "sleep", {"fire_at": iso(fire_at)})
        else:
            fire_at = parse_time(started["fire_at"])
        await self.wait(command_id, "timer", "sleep", fire_at)

    # ---------------------------------------------------------------- promises
    def create_promise(
        self, command_id: int, name: str, timeout: timedelta | str | float | None, type_: Any
    ) -> PromiseState:
        if name in self.promises:
            raise ValueError(f"promise {name!r} was already created in this run")
        cmd = self.cmd
        created = cmd.history.payload(command_id, EventType.PROMISE_CREATED)
        if created is None:
            deadline = cmd.options.clock() + parse_duration(timeout) if timeout else None
            payload = {"deadline": iso(deadline) if deadline else None}
            cmd.write(EventType.PROMISE_CREATED, command_id, name, payload)
        else:
            deadline = parse_time(created["deadline"]) if created.get("deadline") else None
        return self.open_promise(command_id, name, deadline, type_)

    def open_promise(
        self, command_id: int, name: str, deadline: datetime | None, type_: Any = None
    ) -> PromiseState:
        """The promise's state, resolved already if history or the inbox holds its value."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieve)
        state = PromiseState(command_id, name, deadline, future, type_=type_)
        self.promises[name] = state
        for event in self.cmd.history.records(command_id):
            if event.type is EventType.PROMISE_RESOLVED:
                future.set_result(from_json(event.payload.get("value"), type_))
            elif event.type is EventType.PROMISE_REJECTED:
                future.set_exception(PromiseRejectedError(name, event.payload.get("error")))
            elif event.type is EventType.PROMISE_TIMED_OUT:
                future.set_exception(TimeoutError(f"promise {name!r} timed out"))
            else:
                continue
            state.resolved_seq = event.seq
            break
        for item in self._inbox_waiting.pop(name, []):
            if future.done():
                self.cmd.flusher.consume(item.name)  # a second signal for a resolved promise
            else:
                self._resolve_from_inbox(state, item)
        return state

    async def await_promise(self, state: PromiseState) -> Any:
        if state.future.done():
            self.cmd.cancel_point(state.resolved_seq)
            return state.future.result()
        self.cmd.cancel_point(None)
        waiter = Waiter(state.command_id, "promise", state.name, state.deadline, state.future)
        self.waiters.append(waiter)
        try:
            with self.cmd.park(lambda: not state.future.done()):
                return await asyncio.shield(state.future)
        finally:
            self.waiters.remove(waiter)

    def _resolve_from_inbox(self, state: PromiseState, item: InboxItem) -> None:
        cmd = self.cmd
        if item.kind is InboxKind.REJECT:
            cmd.write(
                EventType.PROMISE_REJECTED, state.command_id, state.name, {"error": item.payload}
            )
            state.future.set_exception(PromiseRejectedError(state.name, item.payload))
        else:
            refused = refusal(state.type_, item.payload)
            if refused is None:
                cmd.write(
                    EventType.PROMISE_RESOLVED,
                    state.command_id,
                    state.name,
                    {"value": item.payload},
                )
                state.future.set_result(from_json(item.payload, state.type_))
            else:  # refused: recorded, and the promise keeps waiting for a corrected signal
                payload = {**refused, "signal": item.name, "payload": item.payload}
                cmd.write(EventType.SIGNAL_REFUSED, state.command_id, state.name, payload)
                cmd.logger.warning("signal %s refused: %s", item.name, refused["message"])
        cmd.flusher.consume(item.name)
        cmd.changed.set()

    # ---------------------------------------------------------------- inbox and cancel
    def request_cancel(self, reason: str) -> None:
        cmd = self.cmd
        if cmd.cancel is not None:
            return
        cmd.cancel = reason
        cmd.write(EventType.CANCEL_REQUESTED, None, None, {"reason": reason})
        cmd.changed.set()
        if cmd.compensating:
            return
        for waiter in list(self.waiters):
            if not waiter.future.done():
                waiter.future.set_exception(WorkflowCancelled(reason))

    def apply_inbox(self, items: list[InboxItem]) -> bool:
        """Turn delivered items into history; True when something changed."""
        changed = False
        for item in items:
            if item.name in self._inbox_seen:
                continue
            self._inbox_seen.add(item.name)
            if item.kind in (InboxKind.CANCEL, InboxKind.TIMEOUT):
                self.cmd.flusher.consume(item.name)
                self.request_cancel("timed_out" if item.kind is InboxKind.TIMEOUT else "cancelled")
                changed = True
                continue
            promise = item.name.partition("#")[0]
            state = self.promises.get(promise)
            if state is None:
                self._inbox_waiting[promise].append(item)
            elif state.future.done():
                self.cmd.flusher.consume(item.name)  # too late: already resolved or timed out
            else:
                self._resolve_from_inbox(state, item)
                changed = True
        return changed

    async def poll_inbox(self) -> bool:
        """Read the inbox, but only once what is buffered is durable: no read may fail
        (or wait out an outage) while a finished step's completion is only in memory."""
        await self.cmd.flush()
        self.last_inbox_poll = time.monotonic()
        items = await self.cmd.store.pending_inbox(self.cmd.run.id)
        return self.apply_inbox(items)

    # ---------------------------------------------------------------- deadlines
    def _max_duration_deadline(self) -> datetime | None:
        run, spec = self.cmd.run, self.cmd.spec
        seconds = run.max_duration_s
        if seconds is None and spec.max_duration is not None:
            seconds = spec.max_duration.total_seconds()
        if not seconds:
            return None
        started = run.started_at or run.created_at
        return started + timedelta(seconds=seconds)

    def fire_due(self) -> bool:
        """Fire every wait whose deadline passed; True when one did."""
        cmd = self.cmd
        now = cmd.options.clock()
        fired = False
        for waiter in list(self.waiters):
            if waiter.future.done() or waiter.deadline is None or waiter.deadline > now:
                continue
            if waiter.kind == "timer":
                cmd.write(EventType.TIMER_FIRED, waiter.command_id, waiter.name, {})
                waiter.future.set_result(None)
            elif waiter.kind == "retry":
                waiter.future.set_result(None)
            else:
                state = self.promises[waiter.name]
                cmd.write(EventType.PROMISE_TIMED_OUT, waiter.command_id, waiter.name, {})
                state.future.set_exception(TimeoutError(f"promise {waiter.name!r} timed out"))
            fired = True
        limit = self._max_duration_deadline()
        if limit is not None and limit <= now and cmd.cancel is None:
            self.request_cancel("timed_out")
            fired = True
        return fired

    def earliest_deadline(self) -> datetime | None:
        deadlines = [w.deadline for w in self.waiters if w.deadline and not w.future.done()]
        limit = self._max_duration_deadline()
        if limit is not None and self.cmd.cancel is None:
            deadlines.append(limit)
        return min(deadlines) if deadlines else None

    def waiting_for(self) -> list[str]:
        return sorted(w.name for w in self.waiters if w.kind == "promise")

    def idle(self) -> bool:
        """Every branch is blocked on a durable wait (directly or through a join)."""
        return bool(self.waiters) and self.cmd.idle()
