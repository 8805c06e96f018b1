"""The event store's contract, shared by the Postgres and the memory store.

The engine, the worker, the controller and the CLI talk to history only
through `Store`. Records crossing this boundary are frozen Pydantic models so
that both implementations persist and return exactly the same shapes.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: How long a store call rides out a lost Postgres before it gives up (seconds): the one
#: retry budget of the Postgres store. While the lease is ours, a checkpoint waits this
#: long for Postgres to come back before the process may exit. The worker and
#: `ratline run` read it from this variable or `--store-retry`.
DEFAULT_STORE_RETRY_S = 600.0
STORE_RETRY_ENV = "RATLINE_STORE_RETRY"


class RunStatus(enum.StrEnum):
    """Where a run stands, as the store records it (the CRD phase derives from it)."""

    PENDING = "pending"  # recorded, no worker has started it yet
    RUNNING = "running"  # a worker holds the lease and is advancing it
    SUSPENDED = "suspended"  # waiting for a timer (wake_at) or a promise; no worker needed
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"  # non-determinism detected; history kept, needs a code fix

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def resting(self) -> bool:
        """Finished or blocked: nothing will advance the run again (no worker needed)."""
        return self in _FINISHED or self is RunStatus.BLOCKED


_FINISHED = {
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.TIMED_OUT,
}


class EventType(enum.StrEnum):
    """Every kind of history event (see docs/architecture.md)."""

    RUN_STARTED = "RunStarted"
    STEP_STARTED = "StepStarted"
    STEP_COMPLETED = "StepCompleted"
    STEP_FAILED = "StepFailed"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    PROMISE_CREATED = "PromiseCreated"
    PROMISE_RESOLVED = "PromiseResolved"
    PROMISE_REJECTED = "PromiseRejected"
    PROMISE_TIMED_OUT = "PromiseTimedOut"
    STATE_SET = "StateSet"
    CHILD_STARTED = "ChildStarted"
    CHILD_COMPLETED = "ChildCompleted"
    COMPENSATION_STARTED = "CompensationStarted"
    RUN_COMPLETED = "RunCompleted"
    RUN_FAILED = "RunFailed"
    CANCEL_REQUESTED = "CancelRequested"
    RUN_CANCELLED = "RunCancelled"
    RUN_TIMED_OUT = "RunTimedOut"
    RUN_BLOCKED = "RunBlocked"
    MARKER = "Marker"  # patched(), random seeds and other non-step decisions
    ATTEMPT_FAILED = "AttemptFailed"  # whole-workflow retry: the next attempt starts anew
    SIGNAL_REFUSED = "SignalRefused"  # a typed promise's payload did not validate


# The kind of command each command-level event belongs to (run-level events have none).
COMMAND_KIND: dict[EventType, str] = {
    EventType.STEP_COMPLETED: "step",
    EventType.STEP_FAILED: "step",
    EventType.STEP_STARTED: "step",
    EventType.TIMER_STARTED: "timer",
    EventType.TIMER_FIRED: "timer",
    EventType.PROMISE_CREATED: "promise",
    EventType.PROMISE_RESOLVED: "promise",
    EventType.PROMISE_REJECTED: "promise",
    EventType.PROMISE_TIMED_OUT: "promise",
    EventType.STATE_SET: "state",
    EventType.CHILD_STARTED: "child",
    EventType.CHILD_COMPLETED: "child",
    EventType.MARKER: "marker",
}


class InboxKind(enum.StrEnum):
    """What the operator (or CLI) delivers into a run from outside."""

    SIGNAL = "signal"  # resolve promise `name` with `payload`
    REJECT = "reject"  # reject promise `name` with `payload` as the error
    CANCEL = "cancel"  # ask the run to cancel (compensation runs)
    TIMEOUT = "timeout"  # maxDuration passed: cancel and end TimedOut


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class NewRun(BaseModel):
    """A run to record; `id` is the WorkflowRun's uid, so creation is idempotent."""

    model_config = _FROZEN
    id: str
    namespace: str = "default"
    name: str
    workflow: str
    entrypoint: str = ""
    image: str = ""
    input: Any = None
    max_duration_s: float | None = None
    parent_id: str | None = None


class RunRecord(BaseModel):
    """One row of `runs`."""

    model_config = _FROZEN
    id: str
    namespace: str
    name: str
    workflow: str
    entrypoint: str
    image: str
    status: RunStatus
    input: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    wake_at: datetime | None = None
    waiting_for: list[str] = Field(default_factory=list)  # promise names
    # Signals and rejections of a suspended run that match none of `waiting_for` (their
    # promise is not created or not awaited yet): they wait in the inbox without waking
    # the run and resolve their promise once it exists. Empty unless suspended.
    early_signals: list[str] = Field(default_factory=list)
    lease_owner: str | None = None
    lease_epoch: int = 0
    lease_expires_at: datetime | None = None
    history_length: int = 0
    max_duration_s: float | None = None
    parent_id: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class NewEvent(BaseModel):
    """An event to append; the store assigns `seq` and `time`."""

    model_config = _FROZEN
    type: EventType
    command_id: int | None = None  # the position of the command that caused it
    name: str | None = None  # the command's name (step, timer, promise, key)
    payload: dict[str, Any] = Field(default_factory=dict)


class Event(NewEvent):
    """One row of `events`: append-only, keyed by (run_id, seq)."""

    run_id: str
    seq: int
    time: datetime


class InboxItem(BaseModel):
    """One row of `inbox`: unique by (run_id, name) so delivery is exactly once."""

    model_config = _FROZEN
    run_id: str
    name: str  # for signals the promise name; for cancel/timeout the kind itself
    kind: InboxKind
    payload: Any = None
    created_at: datetime
    consumed: bool = False


class Lease(BaseModel):
    """Proof that a worker owns a run; every write is conditional on `epoch`."""

    model_config = _FROZEN
    run_id: str
    owner: str
    epoch: int
    expires_at: datetime


class RunUpdate(BaseModel):
    """Fields of `runs` changed together with an append (one commit)."""

    model_config = _FROZEN
    status: RunStatus | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    wake_at: datetime | None = None
    clear_wake_at: bool = False
    waiting_for: list[str] | None = None
    # Append only: give the lease up in the same commit (the activation's last write),
    # which saves the separate `release_lease` round trip.
    release_lease: bool = False


@dataclass(frozen=True)
class Begun:
    """What `Store.begin` returns: everything an activation starts from, in one call.

    `lease` is None (and `history`, `inbox` are empty) when the run is finished or
    blocked: there is nothing to advance, so no lease was taken.
    """

    run: RunRecord
    lease: Lease | None
    history: list[Event]
    inbox: list[InboxItem]


def wakes(kind: InboxKind, name: str, waiting_for: Sequence[str]) -> bool:
    """Whether an inbox item makes a suspended run due: a cancel or a timeout always,
    a signal or rejection only for a promise the run waits for (an item `name#tag`,
    e.g. a corrected resend, is for promise `name`). The memory store uses this; the
    Postgres store keeps the same rule in SQL (0003_early_signals.sql)."""
    return kind in (InboxKind.CANCEL, InboxKind.TIMEOUT) or name.partition("#")[0] in waiting_for


M = TypeVar("M", bound=BaseModel)
_new_object = object.__new__
_set_attribute = object.__setattr__


def trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """Build a model from values the caller already knows are valid, skipping validation.

    For hot paths only (the engine's events, the store's own rows): `fields` must name
    every field with a value of its declared type. About 1 µs instead of 4 to 20 µs for
    validation or `model_construct`; tests/unit/test_memory_store.py checks that the
    result equals a validated model, so a Pydantic upgrade cannot silently break it.
    """
    model = _new_object(cls)
    _set_attribute(model, "__dict__", fields)
    _set_attribute(model, "__pydantic_fields_set__", set(fields))
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


class Store(abc.ABC):
    """Durable history of runs. Implementations: `PostgresStore`, `MemoryStore`."""

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent, safe to run concurrently)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # runs
    @abc.abstractmethod
    async def create_run(self, run: NewRun) -> RunRecord:
        """Insert the run, or return the existing one with the same id."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 1000
    ) -> list[RunRecord]: ...

    @abc.abstractmethod
    async def due_runs(self, now: datetime, limit: int = 100) -> list[RunRecord]:
        """Suspended runs whose `wake_at` is at or before `now`."""

    @abc.abstractmethod
    async def set_status(self, run_id: str, update: RunUpdate) -> RunRecord:
        """Change a run's row outside any lease (the operator: pending, deleted)."""

    # leases
    @abc.abstractmethod
    async def begin(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Begun:
        """Start an activation in one round trip: take the lease (as `acquire_lease`) and
        return the run, its whole history and its unconsumed inbox. A finished or blocked
        run is returned without a lease; `RunNotFoundError`, `LeaseHeldError` as usual."""

    @abc.abstractmethod
    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Lease:
        """Take the run by bumping `lease_epoch`; `LeaseHeldError` if another live owner has it."""

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease, ttl_s: float = 30.0) -> Lease:
        """Extend the lease; `FencedError` if a newer epoch exists."""

    @abc.abstractmethod
    async def release_lease(self, lease: Lease) -> None: ...

    @abc.abstractmethod
    async def revoke_lease(self, run_id: str) -> int:
        """Fence off whoever holds the run (its pod is gone); returns the new epoch."""

    # history
    @abc.abstractmethod
    async def load_history(self, run_id: str, after_seq: int = 0) -> list[Event]: ...

    @abc.abstractmethod
    async def append(
        self,
        lease: Lease,
        events: Sequence[NewEvent],
        update: RunUpdate | None = None,
        consumed_inbox: Sequence[str] = (),
    ) -> list[Event]:
        """Append in one commit, conditional on the lease epoch (`FencedError`
        otherwise); also applies `update` (including `release_lease`) and marks inbox
        items consumed. An append that suspends the run sets `wake_at` to now when an
        unconsumed item `wakes` it (delivered after the worker last read its inbox) and
        lists the others in `early_signals`. Wakes `wait_for_change` waiters when the
        status changes, when the lease is released and at least every quarter second
        while appends go on (Postgres throttles per-step notifications; see
        docs/architecture.md)."""

    # inbox
    @abc.abstractmethod
    async def deliver(self, run_id: str, name: str, kind: InboxKind, payload: Any = None) -> bool:
        """Insert into the inbox once; False when (run_id, name) was already there.

        Wakes a suspended run (sets wake_at to now) when the item is a cancel or a
        timeout or names a promise in `waiting_for`; any other signal or rejection is
        early: it is added to `early_signals` and the run sleeps on (see `wakes`)."""

    @abc.abstractmethod
    async def pending_inbox(self, run_id: str) -> list[InboxItem]:
        """Unconsumed items in delivery order."""

    @abc.abstractmethod
    async def inbox_item(self, run_id: str, name: str) -> InboxItem | None:
        """The item delivered as `name`, consumed or not (None: never delivered). The
        operator compares a patched signal payload with what went in before."""

    # notifications
    @abc.abstractmethod
    async def wait_for_change(self, run_id: str | None, timeout_s: float) -> bool:
        """Block until an append (see `append` for which ones), a delivery or a status
        change touches `run_id` (any run if None); False on timeout."""
