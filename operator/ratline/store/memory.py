"""The in-process event store: unit tests and the time-skipping testing runner.

It keeps the Postgres store's semantics (fencing, exactly-once delivery, wake-ups,
NOTIFY-like waits) without I/O. Every value goes through a JSON round trip on the
way in and out, so callers can neither alias stored data nor store what Postgres
would refuse. `clock` replaces "now" so a runner can skip time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ratline.errors import FencedError, LeaseHeldError, RunNotFoundError, StoreError
from ratline.store.base import (
    Begun,
    Event,
    InboxItem,
    InboxKind,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    Store,
    trusted,
    wakes,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _copy(value: Any) -> Any:
    """A deep copy through strict JSON: exactly what a jsonb column would give back."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _event_copy(event: Event) -> Event:
    """A copy that shares nothing mutable with the stored event (payload copied)."""
    return trusted(Event, {**event.__dict__, "payload": _copy(event.payload)})


def _out(run: RunRecord) -> RunRecord:
    return run.model_copy(
        update={
            "input": _copy(run.input),
            "result": _copy(run.result),
            "error": _copy(run.error),
            "waiting_for": list(run.waiting_for),
            "early_signals": list(run.early_signals),
        }
    )


class MemoryStore(Store):
    """`Store` held in dicts; one instance per test or testing runner."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._inbox: dict[str, dict[str, InboxItem]] = {}  # insertion order = delivery order
        self._waiters: dict[str | None, set[asyncio.Event]] = {}

    def _now(self) -> datetime:
        now = _utc(self._clock())
        assert now is not None
        return now

    def _run(self, run_id: str, what: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"{what}: no run {run_id}")
        return run

    def _notify(self, run_id: str) -> None:
        for key in (run_id, None):
            for event in self._waiters.get(key, ()):
                event.set()

    def _apply(self, run: RunRecord, update: RunUpdate, now: datetime) -> RunRecord:
        """The same field rules as the Postgres store's UPDATE."""
        changes: dict[str, Any] = {"updated_at": now}
        fields = update.model_fields_set
        if update.status is not None:
            changes["status"] = update.status
            if update.status == RunStatus.RUNNING and run.started_at is None:
                changes["started_at"] = now
            if update.status.finished and run.finished_at is None:
                changes["finished_at"] = now
        if "result" in fields:
            changes["result"] = _copy(update.result)
        if "error" in fields:
            changes["error"] = _copy(update.error)
        if update.wake_at is not None:
            changes["wake_at"] = _utc(update.wake_at)
        elif update.clear_wake_at:
            changes["wake_at"] = None
        if update.waiting_for is not None:
            changes["waiting_for"] = list(update.waiting_for)
        return run.model_copy(update=changes)

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Nothing to create: the dicts are the schema."""

    async def close(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    # -- runs -------------------------------------------------------------------------------

    async def create_run(self, run: NewRun) -> RunRecord:
        existing = self._runs.get(run.id)
        if existing is not None:
            return _out(existing)
        now = self._now()
        record = RunRecord(
            **run.model_dump(exclude={"input"}),
            input=_copy(run.input),
            status=RunStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        self._runs[run.id] = record
        self._events[run.id] = []
        self._inbox[run.id] = {}
        return _out(record)

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return _out(run) if run is not None else None

    async def list_runs(
        self, *, statuses: Sequence[RunStatus] | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        wanted = None if statuses is None else {RunStatus(s) for s in statuses}
        runs = sorted(self._runs.values(), key=lambda r: (r.created_at, r.id))
        return [_out(r) for r in runs if wanted is None or r.status in wanted][:limit]

    async def due_runs(self, now: datetime, limit: int = 100) -> list[RunRecord]:
        cutoff = _utc(now)
        assert cutoff is not None
        due = [
            r
            for r in self._runs.values()
            if r.status == RunStatus.SUSPENDED and r.wake_at is not None and r.wake_at <= cutoff
        ]
        due.sort(key=lambda r: (r.wake_at or cutoff, r.id))
        return [_out(r) for r in due[:limit]]

    async def set_status(self, run_id: str, update: RunUpdate) -> RunRecord:
        run = self._apply(self._run(run_id, "set_status"), update, self._now())
        self._runs[run_id] = run
        self._notify(run_id)
        return _out(run)

    # -- leases -----------------------------------------------------------------------------

    async def begin(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Begun:
        run = self._run(run_id, "begin")
        if run.status.finished or run.status is RunStatus.BLOCKED:
            return Begun(_out(run), None, [], [])
        lease = await self.acquire_lease(run_id, owner, ttl_s)
        return Begun(
            _out(self._runs[run_id]),
            lease,
            await self.load_history(run_id),
            await self.pending_inbox(run_id),
        )

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float = 30.0) -> Lease:
        run = self._run(run_id, "acquire_lease")
        now = self._now()
        held = (
            run.lease_owner is not None
            and run.lease_owner != owner
            and run.lease_expires_at is not None
            and run.lease_expires_at > now
        )
        if held:
            assert run.lease_expires_at is not None
            raise LeaseHeldError(
                f"run {run_id} is leased by {run.lease_owner!r} "
                f"until {run.lease_expires_at.isoformat()}"
            )
        expires = now + timedelta(seconds=ttl_s)
        epoch = run.lease_epoch + 1
        self._runs[run_id] = run.model_copy(
            update={
                "lease_owner": owner,
                "lease_epoch": epoch,
                "lease_expires_at": expires,
                "updated_at": now,
            }
        )
        return Lease(run_id=run_id, owner=owner, epoch=epoch, expires_at=expires)

    def _check_lease(self, lease: Lease, what: str) -> RunRecord:
        run = self._run(lease.run_id, what)
        if run.lease_epoch != lease.epoch:
            raise FencedError(
                f"run {lease.run_id}: lease epoch {lease.epoch} of {lease.owner!r} is fenced "
                f"(current epoch {run.lease_epoch}); nothing was written"
            )
        return run

    async def renew_lease(self, lease: Lease, ttl_s: float = 30.0) -> Lease:
        run = self._check_lease(lease, "renew_lease")
        if run.lease_owner != lease.owner:
            raise FencedError(
                f"run {lease.run_id}: lease of {lease.owner!r} was released or taken over"
            )
        expires = self._now() + timedelta(seconds=ttl_s)
        self._runs[lease.run_id] = run.model_copy(update={"lease_expires_at": expires})
        return lease.model_copy(update={"expires_at": expires})

    async def release_lease(self, lease: Lease) -> None:
        run = self._runs.get(lease.run_id)
        if run is None or run.lease_epoch != lease.epoch or run.lease_owner != lease.owner:
            return
        self._runs[lease.run_id] = run.model_copy(
            update={"lease_owner": None, "lease_expires_at": None}
        )

    async def revoke_lease(self, run_id: str) -> int:
        run = self._run(run_id, "revoke_lease")
        epoch = run.lease_epoch + 1
        self._runs[run_id] = run.model_copy(
            update={
                "lease_epoch": epoch,
                "lease_owner": None,
                "lease_expires_at": None,
                "updated_at": self._now(),
            }
        )
        return epoch

    # -- history ----------------------------------------------------------------------------

    async def load_history(self, run_id: str, after_seq: int = 0) -> list[Event]:
        events = self._events.get(run_id, [])
        return [_event_copy(e) for e in events[max(after_seq, 0) :]]

    async def append(
        self,
        lease: Lease,
        events: Sequence[NewEvent],
        update: RunUpdate | None = None,
        consumed_inbox: Sequence[str] = (),
    ) -> list[Event]:
        run = self._check_lease(lease, "append")
        payloads = [_copy(e.payload) for e in events]  # may raise: before any write
        now = self._now()
        base = run.history_length
        new = [
            trusted(
                Event,
                {
                    "type": e.type,
                    "command_id": e.command_id,
                    "name": e.name,
                    "payload": payload,
                    "run_id": lease.run_id,
                    "seq": base + i,
                    "time": now,
                },
            )
            for i, (e, payload) in enumerate(zip(events, payloads, strict=True), start=1)
        ]
        run = self._apply(run, update or RunUpdate(), now)
        if update is not None and update.release_lease:
            run = run.model_copy(update={"lease_owner": None, "lease_expires_at": None})
        inbox = self._inbox[lease.run_id]
        for name in consumed_inbox:
            item = inbox.get(name)
            if item is not None:
                inbox[name] = item.model_copy(update={"consumed": True})
        if update is not None and update.status == RunStatus.SUSPENDED:
            waiting = [item for item in inbox.values() if not item.consumed]
            changes: dict[str, Any] = {
                "early_signals": [
                    i.name for i in waiting if not wakes(i.kind, i.name, run.waiting_for)
                ]
            }
            if any(wakes(i.kind, i.name, run.waiting_for) for i in waiting):
                changes["wake_at"] = now  # a delivery it has not seen, and waits for
            run = run.model_copy(update=changes)
        elif update is not None and update.status is not None:
            run = run.model_copy(update={"early_signals": []})
        self._runs[lease.run_id] = run.model_copy(update={"history_length": base + len(new)})
        self._events[lease.run_id].extend(new)
        self._notify(lease.run_id)
        return [_event_copy(e) for e in new]

    # -- inbox ------------------------------------------------------------------------------

    async def deliver(self, run_id: str, name: str, kind: InboxKind, payload: Any = None) -> bool:
        run = self._run(run_id, "deliver")
        inbox = self._inbox[run_id]
        if name in inbox:
            return False
        now = self._now()
        inbox[name] = InboxItem(
            run_id=run_id, name=name, kind=InboxKind(kind), payload=_copy(payload), created_at=now
        )
        if run.status is RunStatus.SUSPENDED and not wakes(kind, name, run.waiting_for):
            early = [*run.early_signals, name]  # waits for its promise; the run sleeps on
            self._runs[run_id] = run.model_copy(update={"early_signals": early, "updated_at": now})
        elif not run.status.finished:
            self._runs[run_id] = run.model_copy(update={"wake_at": now, "updated_at": now})
        self._notify(run_id)
        return True

    async def pending_inbox(self, run_id: str) -> list[InboxItem]:
        items = self._inbox.get(run_id, {}).values()
        return [
            item.model_copy(update={"payload": _copy(item.payload)})
            for item in items
            if not item.consumed
        ]

    async def inbox_item(self, run_id: str, name: str) -> InboxItem | None:
        item = self._inbox.get(run_id, {}).get(name)
        return None if item is None else item.model_copy(update={"payload": _copy(item.payload)})

    # -- notifications ----------------------------------------------------------------------

    async def wait_for_change(self, run_id: str | None, timeout_s: float) -> bool:
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters[run_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[run_id]
