"""A time-skipping, in-memory environment for testing workflows.

Workflow authors drive runs here the way the operator would, without
Kubernetes or Postgres: start a run (the same name is the same run), deliver
signals, move the clock, crash a worker after or inside a step and resume.
Children are runs of the environment too: find them in `run.children`,
signal them, and the parent resumes when they end. A seven-day sleep takes no
wall time because every wait suspends the run and `advance` / `result` move
the fake clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ratline.engine import Activation, ExecutionOptions, activate
from ratline.engine.codec import from_json, to_json
from ratline.sdk.context import StepInfo
from ratline.sdk.definition import WorkflowSpec, spec_of
from ratline.sdk.durations import parse_duration
from ratline.store.base import Event, EventType, InboxKind, NewRun, RunStatus
from ratline.store.memory import MemoryStore


class RunFailedError(AssertionError):
    """`result()` of a run that did not succeed: carries its status and error."""

    def __init__(self, status: RunStatus, error: dict[str, Any] | None) -> None:
        super().__init__(status, error)
        self.status = status
        self.error = error or {}

    def __str__(self) -> str:
        return (
            f"run ended {self.status.value}: {self.error.get('type')}: {self.error.get('message')}"
        )


@dataclass
class RunHandle:
    """One run in the test environment, with what each activation did."""

    env: WorkflowTestEnv
    run_id: str
    name: str
    spec: WorkflowSpec
    activations: list[Activation] = field(default_factory=list)
    parent: RunHandle | None = None
    promise: str = ""  # the parent's promise this child resolves
    children: list[RunHandle] = field(default_factory=list)
    reported: bool = False  # the parent has been told how this child ended

    @property
    def last(self) -> Activation:
        return self.activations[-1]

    @property
    def status(self) -> RunStatus:
        return self.last.status

    @property
    def steps(self) -> list[StepInfo]:
        """Steps as seen by the latest activation (replayed or executed)."""
        return self.last.steps

    def was_replayed(self, step: str) -> bool:
        return any(s.name == step and s.replayed for s in self.last.steps)

    def executions(self, step: str) -> int:
        """How many activations executed `step` for real (not replayed) and finished it."""
        return sum(1 for a in self.activations for s in a.steps if s.name == step and s.executed)

    async def history(self) -> list[Event]:
        return await self.env.store.load_history(self.run_id)

    async def signal(self, name: str, payload: Any = None) -> Activation:
        return await self.env.deliver(self, name, InboxKind.SIGNAL, payload)

    async def reject(self, name: str, error: Any = "rejected") -> Activation:
        return await self.env.deliver(self, name, InboxKind.REJECT, error)

    async def cancel(self) -> Activation:
        return await self.env.deliver(self, "cancel", InboxKind.CANCEL, None)

    async def resume(self) -> Activation:
        """Start a new activation, as a replacement worker pod would."""
        return await self.env.activate(self)

    @property
    def ended(self) -> bool:
        return self.status.finished or self.status is RunStatus.BLOCKED

    def _wakes(self) -> list[datetime]:
        """When this run or one of its unfinished descendants wakes by itself."""
        wakes = [] if self.last.wake_at is None else [self.last.wake_at]
        for child in self.children:
            if not child.ended:
                wakes += child._wakes()
        return wakes

    async def result(self, *, max_wakeups: int = 10_000) -> Any:
        """Run to the end, skipping time over timers; raise if it did not succeed."""
        for _ in range(max_wakeups):
            last = self.last
            if last.crashed:
                await self.resume()
                continue
            if last.status is RunStatus.SUCCEEDED:
                return from_json(last.result, self.spec.output_type)
            if self.ended:
                raise RunFailedError(last.status, last.error)
            wakes = self._wakes()
            if not wakes:
                raise RuntimeError(
                    f"run {self.name} waits for {', '.join(last.waiting_for) or 'a signal'} "
                    "with no deadline: deliver a signal first"
                )
            await self.env.advance_to(min(wakes))
        raise RuntimeError(f"run {self.name} did not finish after {max_wakeups} wake-ups")


class WorkflowTestEnv:
    """A fake clock, a memory store and the engine, wired like the operator would."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.store = MemoryStore(clock=self.now)
        self.runs: dict[str, RunHandle] = {}
        self._by_name: dict[str, RunHandle] = {}
        self._crash_after: str | None = None
        self._crash_during: str | None = None

    def now(self) -> datetime:
        return self._now

    def simulate_crash_after(self, step: str) -> None:
        """The next activation dies right after `step` completes and is checkpointed,
        as a killed pod would: sibling fan-out items in flight record nothing more."""
        self._crash_after = step

    def simulate_crash_during(self, step: str) -> None:
        """The next activation dies inside `step`: its side effect ran, its completion
        was never recorded, so the step runs again when the run resumes."""
        self._crash_during = step

    def run_named(self, name: str) -> RunHandle | None:
        return self._by_name.get(name)

    async def start(
        self,
        workflow: str | Callable[..., Any] | type,
        inp: Any = None,
        *,
        name: str | None = None,
        max_duration: str | timedelta | None = None,
    ) -> RunHandle:
        """Create and activate a run; a `name` already used is that run (idempotent, as
        applying the same WorkflowRun twice on a cluster is)."""
        return await self._start(workflow, inp, name=name, max_duration=max_duration)

    async def _start(
        self,
        workflow: str | Callable[..., Any] | type,
        inp: Any,
        *,
        name: str | None,
        max_duration: str | timedelta | None,
        parent: RunHandle | None = None,
        promise: str = "",
    ) -> RunHandle:
        spec = spec_of(workflow)
        if name is not None and name in self._by_name:
            return self._by_name[name]
        run_id = str(uuid.uuid4())
        run_name = name or f"{spec.name.lower()}-{run_id[:8]}"
        await self.store.create_run(
            NewRun(
                id=run_id,
                name=run_name,
                workflow=spec.name,
                input=to_json(inp),
                max_duration_s=(
                    parse_duration(max_duration).total_seconds() if max_duration else None
                ),
                parent_id=parent.run_id if parent is not None else None,
            )
        )
        handle = RunHandle(self, run_id, run_name, spec, parent=parent, promise=promise)
        self.runs[run_id] = handle
        self._by_name[run_name] = handle
        if parent is not None:
            parent.children.append(handle)
        await self.activate(handle)
        return handle

    async def activate(self, handle: RunHandle) -> Activation:
        crash_after, self._crash_after = self._crash_after, None
        crash_during, self._crash_during = self._crash_during, None
        options = ExecutionOptions(
            clock=self.now,
            idle_threshold_s=0.0,
            attempt=len(handle.activations) + 1,
            crash_after_step=crash_after,
            crash_during_step=crash_during,
        )
        owner = f"test-worker-{len(handle.activations) + 1}"
        if handle.activations and handle.last.crashed:
            await self.store.revoke_lease(handle.run_id)  # the crashed worker is gone
        outcome = await activate(
            self.store, handle.run_id, owner=owner, spec=handle.spec, options=options
        )
        handle.activations.append(outcome)
        await self._run_children(handle)
        return handle.last

    async def deliver(
        self, handle: RunHandle, name: str, kind: InboxKind, payload: Any
    ) -> Activation:
        """Deliver into the run's inbox and activate it. A signal whose name was used
        already (say, refused for a bad payload) goes in as `name#2`, `name#3`...,
        which the engine reads as another delivery for promise `name`."""
        item, tag = name, 1
        while not await self.store.deliver(handle.run_id, item, kind, to_json(payload)):
            if kind not in (InboxKind.SIGNAL, InboxKind.REJECT):
                break
            tag += 1
            item = f"{name}#{tag}"
        return await self.activate(handle)

    async def advance(self, delta: timedelta | str | float) -> None:
        """Move the clock and wake every run whose timer or deadline is now due."""
        await self.advance_to(self._now + parse_duration(delta))

    async def advance_to(self, when: datetime) -> None:
        if when > self._now:
            self._now = when
        for run in await self.store.due_runs(self._now):
            handle = self.runs.get(run.id)
            if handle is not None:
                await self.activate(handle)

    async def _run_children(self, parent: RunHandle) -> None:
        """Play the operator's part for `ctx.child`: start each child as a run of its
        own, and tell the parent how a child ended (which activates the parent)."""
        if parent.last.status is RunStatus.SUSPENDED:
            waiting = {w for w in parent.last.waiting_for if w.startswith("child:")}
            for event in await parent.history() if waiting else []:
                promise = str(event.payload.get("promise", ""))
                if event.type is not EventType.CHILD_STARTED or promise not in waiting:
                    continue
                await self._start(
                    str(event.payload["workflow"]),
                    event.payload.get("input"),
                    name=str(event.payload.get("run_name") or "") or None,
                    max_duration=None,
                    parent=parent,
                    promise=promise,
                )
        owner = parent.parent
        if owner is None or parent.reported or not parent.ended or parent.last.crashed:
            return
        parent.reported = True
        last = parent.last
        if last.status is RunStatus.SUCCEEDED:
            await self.store.deliver(owner.run_id, parent.promise, InboxKind.SIGNAL, last.result)
        else:
            error = last.error or {"type": last.status.value}
            await self.store.deliver(owner.run_id, parent.promise, InboxKind.REJECT, error)
        if not owner.ended:
            await self.activate(owner)
