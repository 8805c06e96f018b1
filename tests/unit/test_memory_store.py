"""What only the memory store promises: an injectable clock and no aliasing.

The shared semantics are pinned by tests/integration/test_store_contract.py,
which runs against this store too; these tests need no I/O at all.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from ratline.errors import LeaseHeldError
from ratline.store import (
    Event,
    EventType,
    InboxKind,
    NewEvent,
    NewRun,
    RunStatus,
    RunUpdate,
    open_store,
)
from ratline.store.base import trusted, wakes
from ratline.store.memory import MemoryStore


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _new_run(**fields: Any) -> NewRun:
    run_id = f"run-{uuid.uuid4()}"
    return NewRun(id=run_id, name="r", workflow="wf", **fields)


async def test_memory_store_stamps_times_from_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    run = await store.create_run(_new_run())
    assert run.created_at == clock.now
    lease = await store.acquire_lease(run.id, "w", ttl_s=30)
    assert lease.expires_at == clock.now + timedelta(seconds=30)
    clock.advance(5)
    [event] = await store.append(lease, [NewEvent(type=EventType.RUN_STARTED)])
    assert event.time == clock.now


async def test_memory_store_lease_expires_when_the_clock_passes_the_ttl() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    run = await store.create_run(_new_run())
    await store.acquire_lease(run.id, "old", ttl_s=30)
    clock.advance(29)
    with pytest.raises(LeaseHeldError, match="old"):
        await store.acquire_lease(run.id, "new")
    clock.advance(1)
    taken = await store.acquire_lease(run.id, "new")
    assert (taken.owner, taken.epoch) == ("new", 2)


async def test_memory_store_due_runs_follow_skipped_time() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    run = await store.create_run(_new_run())
    wake = clock.now + timedelta(days=7)
    await store.set_status(run.id, RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake))
    assert await store.due_runs(clock.now) == []
    clock.advance(timedelta(days=7).total_seconds())
    assert [r.id for r in await store.due_runs(clock.now)] == [run.id]


async def test_memory_store_copies_values_in_and_out() -> None:
    store = MemoryStore()
    value: dict[str, Any] = {"items": [1, {"k": "v"}]}
    run = await store.create_run(_new_run(input=value))
    value["items"].append("caller mutation after create")
    run.input["items"].append("mutation of a returned record")
    stored = await store.get_run(run.id)
    assert stored is not None
    assert stored.input == {"items": [1, {"k": "v"}]}

    lease = await store.acquire_lease(run.id, "w")
    payload: dict[str, Any] = {"value": (1, 2)}  # a tuple comes back as a JSON list
    [written] = await store.append(lease, [NewEvent(type=EventType.STATE_SET, payload=payload)])
    payload["value"] = "changed"
    written.payload["value"] = "changed too"
    [event] = await store.load_history(run.id)
    assert event.payload == {"value": [1, 2]}

    await store.deliver(run.id, "sig", InboxKind.SIGNAL, value)
    [item] = await store.pending_inbox(run.id)
    item.payload["items"].clear()
    [again] = await store.pending_inbox(run.id)
    assert again.payload["items"]


async def test_open_store_memory_scheme_gives_a_fresh_memory_store() -> None:
    first = await open_store("memory://")
    second = await open_store("memory://tests")
    assert isinstance(first, MemoryStore)
    assert isinstance(second, MemoryStore)
    await first.create_run(_new_run())
    assert await second.list_runs() == []


@pytest.mark.parametrize(
    ("dsn", "message"),
    [("mysql://db/x", "mysql"), ("sqlite:///tmp/x", "sqlite"), ("just-a-name", "no scheme")],
)
async def test_open_store_rejects_unknown_schemes(dsn: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await open_store(dsn)


def test_trusted_models_equal_validated_ones() -> None:
    """`trusted` skips validation on hot paths; it must build exactly what validation would."""
    fields = {
        "type": EventType.STEP_COMPLETED,
        "command_id": 3,
        "name": "charge",
        "payload": {"result": [1, {"a": None}]},
        "run_id": "r-1",
        "seq": 4,
        "time": datetime(2030, 1, 1, tzinfo=UTC),
    }
    fast = trusted(Event, dict(fields))
    checked = Event.model_validate(fields)
    assert fast == checked
    assert fast.model_dump() == checked.model_dump()
    assert fast.model_fields_set == checked.model_fields_set
    assert fast.model_copy(update={"seq": 5}).seq == 5
    assert fast.seq == 4
    with pytest.raises(ValidationError):
        fast.seq = 9  # still frozen


@pytest.mark.parametrize(
    ("kind", "name", "waiting_for", "due"),
    [
        (InboxKind.CANCEL, "cancel", [], True),
        (InboxKind.TIMEOUT, "timeout", ["approval"], True),
        (InboxKind.SIGNAL, "approval", ["approval"], True),
        (InboxKind.REJECT, "approval", ["approval", "other"], True),
        (InboxKind.SIGNAL, "approval#2", ["approval"], True),  # a tagged resend
        (InboxKind.SIGNAL, "escalation", ["approval"], False),
        (InboxKind.SIGNAL, "escalation#2", ["approval"], False),
        (InboxKind.REJECT, "escalation", [], False),
    ],
)
def test_only_what_a_run_waits_for_wakes_it(
    kind: InboxKind, name: str, waiting_for: list[str], due: bool
) -> None:
    """The inbox rule the memory store applies (Postgres: ratline_wakes, 0003)."""
    assert wakes(kind, name, waiting_for) is due


async def test_an_early_signal_waits_on_the_memory_clock_too() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    run = await store.create_run(NewRun(id=str(uuid.uuid4()), name="r", workflow="wf"))
    lease = await store.acquire_lease(run.id, "w")
    suspend = RunUpdate(status=RunStatus.SUSPENDED, clear_wake_at=True, waiting_for=["approval"])
    await store.append(lease, [], suspend)
    await store.deliver(run.id, "escalation", InboxKind.SIGNAL, 1)
    clock.advance(3600)
    assert await store.due_runs(clock()) == []
    record = await store.get_run(run.id)
    assert record is not None
    assert record.early_signals == ["escalation"]
