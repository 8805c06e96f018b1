"""The replay matcher: numbers each command and checks it against history.

Every part of an activation shares one `Commands`: it holds the run, the
history index, the write-behind buffer and the cancel and abort flags. A
command that history holds is replayed from it; a new one records events
that the flusher commits before the next side effect (the write-behind rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

from ratline.engine.flush import Flusher
from ratline.engine.history import HistoryIndex
from ratline.engine.outcome import SimulatedCrash
from ratline.engine.parts import Abort, ExecutionOptions, ReplayQuietLogger, retrieve
from ratline.sdk.context import StepInfo
from ratline.sdk.definition import WorkflowSpec
from ratline.sdk.errors import NonDeterminismError, WorkflowCancelled
from ratline.store.base import (
    Event,
    EventType,
    Lease,
    NewEvent,
    RunRecord,
    RunUpdate,
    Store,
    trusted,
)


class ReplayEnd(BaseException):
    """The replayer reached the end of the recorded history: nothing new may run."""

    def __init__(self, command_id: int) -> None:
        super().__init__(command_id)
        self.command_id = command_id


class Commands:
    """What one activation knows: its run, its history and what it has issued."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        run: RunRecord,
        spec: WorkflowSpec,
        history: list[Event],
        options: ExecutionOptions,
    ) -> None:
        self.store = store
        self.run = run
        self.spec = spec
        self.options = options
        self.history = HistoryIndex.build(history)
        self.flusher = Flusher(store, lease, run.id, len(history))
        self.next_command = self.history.attempt_base  # earlier attempts are not replayed
        self.attempt = self.history.attempt
        self.state: dict[str, Any] = {}  # ctx.set / ctx.get of the current attempt
        for event in history:
            command_id = event.command_id
            if event.type is EventType.STATE_SET and command_id and command_id > self.next_command:
                self.state[str(event.name)] = event.payload.get("value")
        self._seed = run.id  # a run retried from a step keeps the numbers of the run it copies
        if history and history[0].type is EventType.RUN_STARTED:
            self._seed = str(history[0].payload.get("retry_of") or run.id)
        self.rng = self._new_rng()
        self.cancel: str | None = self.history.cancel_reason
        self.compensating = False
        self.blocked: NonDeterminismError | None = None
        self.abort: BaseException | None = None
        self.changed = asyncio.Event()  # set whenever a branch may have moved
        self.tasks: set[asyncio.Task[Any]] = set()  # the workflow's branches
        self.live = 0  # branches not finished yet
        self.parked: dict[asyncio.Task[Any], Callable[[], bool]] = {}  # branch -> still waiting?
        self.steps: list[StepInfo] = []
        self.in_flight = 0  # side effects running right now
        self.crashed = False  # testing: the simulated process died; nothing more happens
        self.stopped = False  # any of abort, blocked, crashed, replay_end: one check per call
        self.replay_end: ReplayEnd | None = None  # the replayer reached the end of history
        self.logger = ReplayQuietLogger(run.id, run.name, lambda: self.replaying)

    def _new_rng(self) -> _random.Random:
        return _random.Random(self._seed if self.attempt == 1 else f"{self._seed}:{self.attempt}")

    def new_attempt(self) -> None:
        """The whole workflow starts again: fresh state, numbers and cancel point."""
        self.attempt += 1
        self.state = {}
        self.rng = self._new_rng()
        self.compensating = False

    @property
    def replaying(self) -> bool:
        return self.next_command < self.history.max_command

    def issue(self, kind: str, name: str) -> int:
        """Number the next command and check it against what history recorded."""
        if self.stopped:
            self.halted()
        self.next_command += 1
        command_id = self.next_command
        if not self.history.matches(command_id, kind, name):
            raise self.block(command_id, f"{kind} {name!r}")
        if self.options.replay_only and command_id > self.history.max_command:
            self.replay_end = ReplayEnd(command_id)
            self._stop()
            raise self.replay_end
        return command_id

    def block(self, command_id: int, expected: str) -> NonDeterminismError:
        """The code and history disagree at `command_id`: the run stops here for good."""
        self.blocked = NonDeterminismError(command_id, expected, self.history.describe(command_id))
        self._stop()
        return self.blocked

    def _stop(self) -> None:
        self.stopped = True
        self.changed.set()  # the driver stops every branch

    def halted(self) -> None:
        """Raise if this activation may not go on: lost lease, mismatch, simulated crash.

        The first mismatch with history stops the run for good: a handler that
        swallowed the `NonDeterminismError` gets it again at its next command.
        """
        if self.abort is not None:
            raise Abort(self.abort)
        if self.blocked is not None:
            raise self.blocked
        if self.crashed:
            raise SimulatedCrash("the process is gone")
        if self.replay_end is not None:
            raise self.replay_end

    def crash(self, step: str) -> NoReturn:
        """Testing: the process dies here; siblings in flight record nothing more."""
        self.crashed = True
        self._stop()
        raise SimulatedCrash(step)

    def write(
        self, type_: EventType, command_id: int | None, name: str | None, payload: dict[str, Any]
    ) -> None:
        """Buffer an event for the next commit."""
        fields = {"type": type_, "command_id": command_id, "name": name, "payload": payload}
        self.flusher.buffer(trusted(NewEvent, fields))  # the engine's own, well-typed values

    def cancel_point(self, resolved_seq: int | None) -> None:
        """Raise the pending cancel here unless history resolved this await before it.

        A cancel taken from the inbox in this activation is not in history yet: it
        comes after everything recorded, so replayed resolutions still return.
        """
        if self.cancel is None or self.compensating:
            return
        if resolved_seq is not None:
            cancel_seq = self.history.cancel_seq
            if cancel_seq is None or resolved_seq < cancel_seq:
                return
        raise WorkflowCancelled(self.cancel)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a branch of the workflow (the body or a fan-out item)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.add_done_callback(self._branch_done)
        self.tasks.add(task)
        self.live += 1
        return task

    def _branch_done(self, task: asyncio.Task[Any]) -> None:
        retrieve(task)
        self.live -= 1
        self.changed.set()

    @contextlib.contextmanager
    def park(self, waiting: Callable[[], bool]) -> Iterator[None]:
        """The current branch waits while `waiting()` holds: a durable wait not yet
        ended, or other branches not yet done. Asked directly, not through done
        callbacks, so a wait that just ended never looks open."""
        task = asyncio.current_task()
        if task not in self.tasks or task in self.parked:  # not a branch: no knowledge
            yield
            return
        self.parked[task] = waiting
        self.changed.set()
        try:
            yield
        finally:
            del self.parked[task]

    def idle(self) -> bool:
        """Nothing can move without the outside world: no side effect runs, and every
        branch is parked on a wait that has not ended."""
        if self.in_flight or self.live != len(self.parked):
            return False
        return all(waiting() for waiting in self.parked.values())

    async def flush(self, update: RunUpdate | None = None) -> None:
        if self.stopped:  # nothing decided after a mismatch or a crash reaches history
            self.halted()
        try:
            await self.flusher.flush(update)
        except Exception as exc:  # fenced, or the store is gone: nothing more may be written
            self.abort = exc
            self._stop()
            raise Abort(exc) from exc
