"""The `Store` contract, run against both implementations (memory and real Postgres).

Anything the engine, worker or operator relies on is pinned here once, so the
memory store used by unit tests cannot drift from the Postgres store. The last
section holds the Postgres-only failure cases (restart, wrong DSN, retries).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ratline.errors import FencedError, LeaseHeldError, RunNotFoundError, StoreError
from ratline.store import (
    EventType,
    InboxKind,
    Lease,
    NewEvent,
    NewRun,
    RunRecord,
    RunStatus,
    RunUpdate,
    Store,
    open_store,
)
from ratline.store.memory import MemoryStore
from ratline.store.postgres import PostgresStore
from tests.cluster.pg import PostgresServer, free_port


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each contract test runs once per implementation."""
    impl: Store
    if request.param == "memory":
        impl = MemoryStore()
    else:
        impl = await PostgresStore.connect(request.getfixturevalue("migrated_dsn"))
    try:
        yield impl
    finally:
        await impl.close()


def _run_id() -> str:
    return f"run-{uuid.uuid4()}"


async def _new_run(store: Store, **fields: Any) -> RunRecord:
    run_id = _run_id()
    return await store.create_run(NewRun(id=run_id, name=run_id[:20], workflow="wf", **fields))


def _events(*names: str) -> list[NewEvent]:
    return [
        NewEvent(type=EventType.STEP_COMPLETED, command_id=i, name=n, payload={"result": i})
        for i, n in enumerate(names, start=1)
    ]


def _now() -> datetime:
    return datetime.now(UTC)


# -- runs ---------------------------------------------------------------------------------


async def test_create_run_is_idempotent_and_starts_pending(store: Store) -> None:
    run_id = _run_id()
    first = await store.create_run(
        NewRun(id=run_id, name="a", workflow="wf", image="img:1", input={"n": 1})
    )
    again = await store.create_run(NewRun(id=run_id, name="other", workflow="other"))
    assert again == first
    assert first.status == RunStatus.PENDING
    assert (first.name, first.image, first.input, first.history_length) == (
        "a",
        "img:1",
        {"n": 1},
        0,
    )
    assert first.lease_epoch == 0
    assert first.lease_owner is None
    assert first.created_at.tzinfo is not None
    assert await store.get_run(run_id) == first


async def test_get_run_of_unknown_id_is_none(store: Store) -> None:
    assert await store.get_run(_run_id()) is None


async def test_list_runs_filters_by_status_and_honours_limit(store: Store) -> None:
    pending = await _new_run(store)
    running = await _new_run(store)
    await store.set_status(running.id, RunUpdate(status=RunStatus.RUNNING))
    assert {r.id for r in await store.list_runs()} == {pending.id, running.id}
    assert [r.id for r in await store.list_runs(statuses=[RunStatus.RUNNING])] == [running.id]
    assert await store.list_runs(statuses=[RunStatus.FAILED]) == []
    assert len(await store.list_runs(limit=1)) == 1


async def test_set_status_works_without_a_lease_and_stamps_times(store: Store) -> None:
    run = await _new_run(store)
    running = await store.set_status(run.id, RunUpdate(status=RunStatus.RUNNING))
    assert running.status == RunStatus.RUNNING
    assert running.started_at is not None
    done = await store.set_status(
        run.id, RunUpdate(status=RunStatus.FAILED, error={"type": "Boom", "message": "x"})
    )
    assert done.status == RunStatus.FAILED
    assert done.error == {"type": "Boom", "message": "x"}
    assert done.started_at == running.started_at
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at
    with pytest.raises(RunNotFoundError):
        await store.set_status(_run_id(), RunUpdate(status=RunStatus.RUNNING))


async def test_due_runs_lists_only_suspended_runs_whose_time_has_come(store: Store) -> None:
    past, future = _now() - timedelta(minutes=5), _now() + timedelta(hours=1)
    due = await _new_run(store)
    later = await _new_run(store)
    running = await _new_run(store)
    await store.set_status(due.id, RunUpdate(status=RunStatus.SUSPENDED, wake_at=past))
    await store.set_status(later.id, RunUpdate(status=RunStatus.SUSPENDED, wake_at=future))
    await store.set_status(running.id, RunUpdate(status=RunStatus.RUNNING, wake_at=past))
    assert [r.id for r in await store.due_runs(_now())] == [due.id]
    assert {r.id for r in await store.due_runs(future)} == {due.id, later.id}
    cleared = await store.set_status(due.id, RunUpdate(clear_wake_at=True))
    assert cleared.wake_at is None
    assert [r.id for r in await store.due_runs(_now())] == []


# -- leases -------------------------------------------------------------------------------


async def test_acquire_lease_bumps_the_epoch_and_the_same_owner_may_retake(store: Store) -> None:
    run = await _new_run(store)
    first = await store.acquire_lease(run.id, "worker-a", ttl_s=30)
    assert (first.owner, first.epoch) == ("worker-a", 1)
    assert first.expires_at > _now() + timedelta(seconds=20)
    again = await store.acquire_lease(run.id, "worker-a", ttl_s=30)
    assert again.epoch == 2
    row = await store.get_run(run.id)
    assert row is not None
    assert (row.lease_owner, row.lease_epoch) == ("worker-a", 2)


async def test_acquire_lease_held_by_a_live_owner_names_the_holder(store: Store) -> None:
    run = await _new_run(store)
    await store.acquire_lease(run.id, "worker-a", ttl_s=30)
    with pytest.raises(LeaseHeldError, match="worker-a"):
        await store.acquire_lease(run.id, "worker-b")


async def test_acquire_lease_after_expiry_takes_over(store: Store) -> None:
    run = await _new_run(store)
    old = await store.acquire_lease(run.id, "worker-a", ttl_s=0)
    await asyncio.sleep(0.01)
    new = await store.acquire_lease(run.id, "worker-b")
    assert new.epoch == old.epoch + 1
    assert new.owner == "worker-b"


async def test_acquire_lease_of_unknown_run_raises_not_found(store: Store) -> None:
    with pytest.raises(RunNotFoundError):
        await store.acquire_lease(_run_id(), "worker-a")


async def test_renew_lease_extends_it_and_a_stale_epoch_is_fenced(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a", ttl_s=1)
    renewed = await store.renew_lease(lease, ttl_s=60)
    assert renewed.epoch == lease.epoch
    assert renewed.expires_at > lease.expires_at
    await store.revoke_lease(run.id)
    with pytest.raises(FencedError):
        await store.renew_lease(renewed)


async def test_release_lease_lets_another_owner_in_at_once(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a", ttl_s=60)
    await store.release_lease(lease)
    row = await store.get_run(run.id)
    assert row is not None
    assert row.lease_owner is None
    other = await store.acquire_lease(run.id, "worker-b")
    assert other.epoch == lease.epoch + 1
    await store.release_lease(lease)  # stale release: a no-op, not an error
    row = await store.get_run(run.id)
    assert row is not None
    assert row.lease_owner == "worker-b"


async def test_revoke_lease_fences_the_holder_and_returns_the_new_epoch(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a", ttl_s=60)
    assert await store.revoke_lease(run.id) == lease.epoch + 1
    with pytest.raises(FencedError):
        await store.append(lease, _events("late"))
    replacement = await store.acquire_lease(run.id, "worker-b")  # no TTL wait
    assert replacement.epoch == lease.epoch + 2
    with pytest.raises(RunNotFoundError):
        await store.revoke_lease(_run_id())


async def test_zombie_worker_cannot_write_after_a_newer_acquire(store: Store) -> None:
    run = await _new_run(store)
    zombie = await store.acquire_lease(run.id, "worker-old", ttl_s=0)
    await asyncio.sleep(0.01)
    fresh = await store.acquire_lease(run.id, "worker-new", ttl_s=60)
    await store.append(fresh, _events("one"))
    before = await store.get_run(run.id)
    await store.deliver(run.id, "sig", InboxKind.SIGNAL, 1)
    with pytest.raises(FencedError, match="fenced"):
        await store.append(
            zombie,
            _events("zombie"),
            RunUpdate(status=RunStatus.SUCCEEDED, result="bad"),
            consumed_inbox=["sig"],
        )
    after = await store.get_run(run.id)
    assert after is not None
    assert before is not None
    assert (after.status, after.result, after.history_length) == (RunStatus.PENDING, None, 1)
    assert [e.name for e in await store.load_history(run.id)] == ["one"]
    assert [i.name for i in await store.pending_inbox(run.id)] == ["sig"]


async def test_concurrent_acquirers_exactly_one_wins(store: Store) -> None:
    run = await _new_run(store)
    results = await asyncio.gather(
        *(store.acquire_lease(run.id, f"worker-{i}", ttl_s=60) for i in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Lease)]
    losers = [r for r in results if isinstance(r, LeaseHeldError)]
    assert (len(winners), len(losers)) == (1, 4), results
    assert winners[0].epoch == 1


# -- history ------------------------------------------------------------------------------


async def test_append_commits_events_update_and_inbox_consumption_together(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.deliver(run.id, "approve", InboxKind.SIGNAL, {"ok": True})
    await store.deliver(run.id, "other", InboxKind.SIGNAL, None)
    wake = _now() + timedelta(hours=2)
    written = await store.append(
        lease,
        [
            NewEvent(
                type=EventType.PROMISE_RESOLVED,
                command_id=3,
                name="approve",
                payload={"value": {"ok": True}},
            ),
            NewEvent(
                type=EventType.TIMER_STARTED,
                command_id=4,
                name="sleep",
                payload={"fire_at": wake.isoformat()},
            ),
        ],
        RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake, waiting_for=["other-promise"]),
        consumed_inbox=["approve"],
    )
    assert [(e.seq, e.type, e.name) for e in written] == [
        (1, EventType.PROMISE_RESOLVED, "approve"),
        (2, EventType.TIMER_STARTED, "sleep"),
    ]
    assert await store.load_history(run.id) == written
    row = await store.get_run(run.id)
    assert row is not None
    assert (row.status, row.history_length, row.waiting_for) == (
        RunStatus.SUSPENDED,
        2,
        ["other-promise"],
    )
    assert [i.name for i in await store.pending_inbox(run.id)] == ["other"]
    # "other" is unconsumed but the run waits for "other-promise": an early signal,
    # listed, and the timer stays.
    assert row.early_signals == ["other"]
    assert row.wake_at == wake


async def test_suspending_without_unseen_deliveries_keeps_the_timer(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.deliver(run.id, "sig", InboxKind.SIGNAL, 1)
    wake = _now() + timedelta(hours=2)
    await store.append(
        lease, _events("s"), RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake), ["sig"]
    )
    row = await store.get_run(run.id)
    assert row is not None
    assert row.wake_at == wake
    assert await store.due_runs(_now()) == []


async def test_append_keeps_seq_contiguous_across_batches(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    returned = []
    for batch in (["a"], ["b", "c", "d"], [], ["e", "f"]):
        returned += await store.append(lease, _events(*batch))
    history = await store.load_history(run.id)
    assert [e.seq for e in history] == [1, 2, 3, 4, 5, 6]
    assert [e.name for e in history] == ["a", "b", "c", "d", "e", "f"]
    assert history == returned
    row = await store.get_run(run.id)
    assert row is not None
    assert row.history_length == 6


async def test_load_history_after_seq_returns_only_the_tail(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, _events("a", "b", "c", "d"))
    assert [e.seq for e in await store.load_history(run.id, after_seq=2)] == [3, 4]
    assert await store.load_history(run.id, after_seq=4) == []
    assert await store.load_history(_run_id()) == []


async def test_append_status_changes_stamp_started_and_finished(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, _events("start"), RunUpdate(status=RunStatus.RUNNING))
    started = await store.get_run(run.id)
    assert started is not None
    assert started.started_at is not None
    assert started.finished_at is None
    await store.append(
        lease,
        [NewEvent(type=EventType.RUN_COMPLETED, payload={"result": [1, 2]})],
        RunUpdate(status=RunStatus.SUCCEEDED, result=[1, 2], clear_wake_at=True),
    )
    done = await store.get_run(run.id)
    assert done is not None
    assert (done.status, done.result) == (RunStatus.SUCCEEDED, [1, 2])
    assert done.started_at == started.started_at
    assert done.finished_at is not None


async def test_append_of_unknown_run_raises_not_found(store: Store) -> None:
    lease = Lease(run_id=_run_id(), owner="w", epoch=1, expires_at=_now())
    with pytest.raises(RunNotFoundError):
        await store.append(lease, _events("x"))


async def test_non_json_payload_is_refused_and_nothing_is_written(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    bad = NewEvent(type=EventType.STATE_SET, name="k", payload={"value": float("nan")})
    with pytest.raises(StoreError, match="JSON"):
        await store.append(lease, [bad])
    assert await store.load_history(run.id) == []


async def test_nested_json_values_round_trip_without_aliasing(store: Store) -> None:
    value: dict[str, Any] = {
        "text": 'naïve ☃ "quoted" \\ back',
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x", []]}], "empty": {}},
        "big": 2**53,
        "neg": -0.125,
    }
    run = await _new_run(store, input=value)
    assert run.input == value
    lease = await store.acquire_lease(run.id, "worker-a")
    [written] = await store.append(
        lease,
        [NewEvent(type=EventType.STATE_SET, command_id=1, name="k", payload={"value": value})],
        RunUpdate(result=value, waiting_for=["p"]),
    )
    written.payload["value"]["nested"]["list"].append("mutated")  # must not reach the store
    await store.deliver(run.id, "p", InboxKind.SIGNAL, value)
    [event] = await store.load_history(run.id)
    assert event.payload == {"value": value}
    [item] = await store.pending_inbox(run.id)
    assert item.payload == value
    row = await store.get_run(run.id)
    assert row is not None
    assert row.result == value
    assert row.input == value


# -- inbox --------------------------------------------------------------------------------


async def test_deliver_is_exactly_once_per_name(store: Store) -> None:
    run = await _new_run(store)
    assert await store.deliver(run.id, "approve", InboxKind.SIGNAL, {"v": 1}) is True
    assert await store.deliver(run.id, "approve", InboxKind.SIGNAL, {"v": 2}) is False
    [item] = await store.pending_inbox(run.id)
    assert (item.name, item.kind, item.payload, item.consumed) == (
        "approve",
        InboxKind.SIGNAL,
        {"v": 1},
        False,
    )


async def test_deliver_wakes_a_suspended_run_but_not_a_finished_one(store: Store) -> None:
    sleeping = await _new_run(store)
    finished = await _new_run(store)
    far = _now() + timedelta(days=1)
    await store.set_status(sleeping.id, RunUpdate(status=RunStatus.SUSPENDED, wake_at=far))
    await store.set_status(finished.id, RunUpdate(status=RunStatus.SUCCEEDED))
    assert await store.due_runs(_now()) == []
    await store.deliver(sleeping.id, "cancel", InboxKind.CANCEL)
    await store.deliver(finished.id, "cancel", InboxKind.CANCEL)
    assert [r.id for r in await store.due_runs(_now() + timedelta(seconds=1))] == [sleeping.id]
    row = await store.get_run(finished.id)
    assert row is not None
    assert row.wake_at is None


async def _suspended(store: Store, waiting_for: list[str], wake: datetime | None) -> Lease:
    """A run whose worker suspended it waiting for `waiting_for` (and `wake`)."""
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    update = RunUpdate(
        status=RunStatus.SUSPENDED,
        wake_at=wake,
        clear_wake_at=wake is None,
        waiting_for=waiting_for,
    )
    await store.append(lease, _events("s"), update)
    return lease


async def test_an_early_signal_is_listed_and_does_not_make_the_run_due(store: Store) -> None:
    lease = await _suspended(store, ["approval"], None)
    run_id = lease.run_id
    assert await store.deliver(run_id, "escalation", InboxKind.SIGNAL, {"level": 2})
    assert await store.deliver(run_id, "refusal", InboxKind.REJECT, {"message": "no"})
    soon = _now() + timedelta(seconds=5)
    assert await store.due_runs(soon) == []
    row = await store.get_run(run_id)
    assert row is not None
    assert (row.status, row.wake_at) == (RunStatus.SUSPENDED, None)
    assert row.early_signals == ["escalation", "refusal"]
    # What it waits for makes it due (a tagged name is for the promise before the #);
    # the early ones stay listed and in the inbox.
    assert await store.deliver(run_id, "approval#resend", InboxKind.SIGNAL, True)
    assert [r.id for r in await store.due_runs(soon)] == [run_id]
    row = await store.get_run(run_id)
    assert row is not None
    assert row.early_signals == ["escalation", "refusal"]
    names = [i.name for i in await store.pending_inbox(run_id)]
    assert names == ["escalation", "refusal", "approval#resend"]
    # Running again clears the list (it describes a suspended run only).
    await store.append(lease, [], RunUpdate(status=RunStatus.RUNNING), ["approval#resend"])
    row = await store.get_run(run_id)
    assert row is not None
    assert row.early_signals == []


@pytest.mark.parametrize("kind", [InboxKind.CANCEL, InboxKind.TIMEOUT])
async def test_cancel_and_timeout_wake_a_run_whatever_it_waits_for(
    store: Store, kind: InboxKind
) -> None:
    lease = await _suspended(store, ["approval"], _now() + timedelta(days=1))
    assert await store.deliver(lease.run_id, kind.value, kind)
    assert [r.id for r in await store.due_runs(_now() + timedelta(seconds=5))] == [lease.run_id]


async def test_suspending_with_only_early_items_keeps_the_timer(store: Store) -> None:
    """Items delivered while the run was running: at suspension only those the run
    waits for make it due; the rest are listed as early."""
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, _events("a"), RunUpdate(status=RunStatus.RUNNING))
    await store.deliver(run.id, "escalation", InboxKind.SIGNAL, 1)
    wake = _now() + timedelta(hours=1)
    suspend = RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake, waiting_for=["approval"])
    await store.append(lease, [], suspend)
    row = await store.get_run(run.id)
    assert row is not None
    assert (row.wake_at, row.early_signals) == (wake, ["escalation"])
    assert await store.due_runs(_now() + timedelta(seconds=5)) == []
    # The same item, once the run waits for it, makes the suspension due at once.
    await store.append(lease, [], RunUpdate(status=RunStatus.RUNNING))
    wait_for_it = RunUpdate(status=RunStatus.SUSPENDED, wake_at=wake, waiting_for=["escalation"])
    await store.append(lease, [], wait_for_it)
    row = await store.get_run(run.id)
    assert row is not None
    assert row.early_signals == []
    assert row.wake_at is not None
    assert row.wake_at <= _now()


async def test_deliver_to_unknown_run_raises_not_found(store: Store) -> None:
    with pytest.raises(RunNotFoundError):
        await store.deliver(_run_id(), "x", InboxKind.SIGNAL, 1)


async def test_pending_inbox_keeps_delivery_order_and_skips_consumed(store: Store) -> None:
    run = await _new_run(store)
    for name in ("zeta", "alpha", "mid", "cancel"):
        kind = InboxKind.CANCEL if name == "cancel" else InboxKind.SIGNAL
        await store.deliver(run.id, name, kind, name)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, [], consumed_inbox=["alpha", "not-there"])
    pending = await store.pending_inbox(run.id)
    assert [(i.name, i.kind) for i in pending] == [
        ("zeta", InboxKind.SIGNAL),
        ("mid", InboxKind.SIGNAL),
        ("cancel", InboxKind.CANCEL),
    ]
    assert all(i.run_id == run.id and i.created_at.tzinfo is not None for i in pending)


async def test_inbox_item_returns_a_consumed_item_and_none_for_an_unknown_name(
    store: Store,
) -> None:
    run = await _new_run(store)
    await store.deliver(run.id, "approve", InboxKind.SIGNAL, {"v": 1})
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, [], consumed_inbox=["approve"])
    item = await store.inbox_item(run.id, "approve")
    assert item is not None
    assert (item.name, item.kind, item.payload, item.consumed) == (
        "approve",
        InboxKind.SIGNAL,
        {"v": 1},
        True,
    )
    assert await store.inbox_item(run.id, "approve#2") is None


# -- begin: one call starts an activation --------------------------------------------------


async def test_begin_takes_the_lease_and_returns_run_history_and_inbox(store: Store) -> None:
    run = await _new_run(store, input={"n": [1, 2]})
    first = await store.acquire_lease(run.id, "worker-a")
    written = await store.append(first, _events("a", "b"), RunUpdate(status=RunStatus.RUNNING))
    await store.release_lease(first)
    await store.deliver(run.id, "approve", InboxKind.SIGNAL, {"ok": True})
    await store.deliver(run.id, "cancel", InboxKind.CANCEL)
    begun = await store.begin(run.id, "worker-b", ttl_s=60)
    assert begun.lease is not None
    assert (begun.lease.owner, begun.lease.epoch) == ("worker-b", first.epoch + 1)
    assert begun.lease.expires_at > _now() + timedelta(seconds=30)
    assert begun.history == written == await store.load_history(run.id)
    assert [(e.seq, e.type, e.name, e.payload) for e in begun.history] == [
        (1, EventType.STEP_COMPLETED, "a", {"result": 1}),
        (2, EventType.STEP_COMPLETED, "b", {"result": 2}),
    ]
    assert all(e.time.tzinfo is not None for e in begun.history)
    assert begun.inbox == await store.pending_inbox(run.id)
    assert [(i.name, i.kind, i.payload) for i in begun.inbox] == [
        ("approve", InboxKind.SIGNAL, {"ok": True}),
        ("cancel", InboxKind.CANCEL, None),
    ]
    assert begun.run == await store.get_run(run.id)
    assert (begun.run.input, begun.run.status, begun.run.history_length) == (
        {"n": [1, 2]},
        RunStatus.RUNNING,
        2,
    )
    assert begun.run.lease_owner == "worker-b"
    assert begun.run.started_at is not None
    assert begun.run.started_at.tzinfo is not None
    with pytest.raises(FencedError):
        await store.append(first, _events("zombie"))


async def test_begin_leaves_finished_and_blocked_runs_without_a_lease(store: Store) -> None:
    for status in (RunStatus.SUCCEEDED, RunStatus.BLOCKED):
        run = await _new_run(store)
        await store.set_status(run.id, RunUpdate(status=status, result={"r": 1}))
        begun = await store.begin(run.id, "worker-a")
        assert begun.lease is None
        assert (begun.history, begun.inbox) == ([], [])
        assert (begun.run.status, begun.run.result, begun.run.lease_epoch) == (status, {"r": 1}, 0)
        after = await store.get_run(run.id)
        assert after is not None
        assert after.lease_owner is None
        assert after.lease_epoch == 0


async def test_begin_refuses_a_live_lease_and_unknown_runs(store: Store) -> None:
    run = await _new_run(store)
    await store.acquire_lease(run.id, "worker-a", ttl_s=60)
    with pytest.raises(LeaseHeldError, match="worker-a"):
        await store.begin(run.id, "worker-b")
    again = await store.begin(run.id, "worker-a")  # the same owner may retake
    assert again.lease is not None
    assert again.lease.epoch == 2
    with pytest.raises(RunNotFoundError):
        await store.begin(_run_id(), "worker-a")


async def test_append_can_release_the_lease_in_the_same_commit(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a", ttl_s=60)
    update = RunUpdate(status=RunStatus.SUCCEEDED, result=1, release_lease=True)
    await store.append(lease, _events("last"), update)
    after = await store.get_run(run.id)
    assert after is not None
    assert (after.status, after.lease_owner, after.lease_expires_at) == (
        RunStatus.SUCCEEDED,
        None,
        None,
    )
    assert after.lease_epoch == lease.epoch  # released, not revoked
    other = await store.acquire_lease(run.id, "worker-b", ttl_s=60)
    assert other.epoch == lease.epoch + 1


# -- notifications ------------------------------------------------------------------------


async def _waiter(store: Store, run_id: str | None, timeout_s: float) -> asyncio.Task[bool]:
    """Start a waiter and let it register (the first wait also opens the listener)."""
    await store.wait_for_change(run_id, 0.01)
    task = asyncio.create_task(store.wait_for_change(run_id, timeout_s))
    await asyncio.sleep(0.01)
    return task


async def test_wait_for_change_wakes_on_append(store: Store) -> None:
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    task = await _waiter(store, run.id, 10)
    await store.append(lease, _events("a"))
    assert await asyncio.wait_for(task, 5) is True


async def test_wait_for_change_wakes_on_a_status_change_right_after_a_step(store: Store) -> None:
    """Step appends may be throttled; a status change (and a release) always notifies."""
    run = await _new_run(store)
    lease = await store.acquire_lease(run.id, "worker-a")
    await store.append(lease, _events("a"))
    task = await _waiter(store, run.id, 10)
    await store.append(lease, [], RunUpdate(status=RunStatus.SUSPENDED, waiting_for=["p"]))
    assert await asyncio.wait_for(task, 5) is True
    task = await _waiter(store, run.id, 10)
    await store.append(lease, [], RunUpdate(release_lease=True))
    assert await asyncio.wait_for(task, 5) is True


async def test_wait_for_change_wakes_on_deliver_and_for_any_run(store: Store) -> None:
    run = await _new_run(store)
    mine = await _waiter(store, run.id, 10)
    anyone = await _waiter(store, None, 10)
    await store.deliver(run.id, "sig", InboxKind.SIGNAL, 1)
    assert await asyncio.wait_for(mine, 5) is True
    assert await asyncio.wait_for(anyone, 5) is True


async def test_wait_for_change_ignores_other_runs_and_times_out(store: Store) -> None:
    run = await _new_run(store)
    other = await _new_run(store)
    task = await _waiter(store, run.id, 0.3)
    await store.deliver(other.id, "sig", InboxKind.SIGNAL, 1)
    started = time.monotonic()
    assert await asyncio.wait_for(task, 5) is False
    assert time.monotonic() - started < 2


# -- Postgres only ------------------------------------------------------------------------


@pytest.mark.integration
async def test_postgres_store_recovers_after_a_server_restart(
    pg_store: PostgresStore, postgres: PostgresServer
) -> None:
    run = await _new_run(pg_store)
    lease = await pg_store.acquire_lease(run.id, "worker-a", ttl_s=60)
    await pg_store.append(lease, _events("before"))
    waiter = await _waiter(pg_store, run.id, 30)
    await asyncio.to_thread(postgres.restart)
    # The listener lost its connection: the waiter wakes (a change may have been missed).
    assert await asyncio.wait_for(waiter, 10) is True
    await pg_store.append(lease, _events("after"))  # pooled connections are replaced
    assert [e.name for e in await pg_store.load_history(run.id)] == ["before", "after"]
    task = await _waiter(pg_store, run.id, 10)  # and the listener reconnects
    await pg_store.deliver(run.id, "sig", InboxKind.SIGNAL, 1)
    assert await asyncio.wait_for(task, 5) is True


@pytest.mark.integration
async def test_postgres_store_survives_a_restart_it_has_not_noticed_yet(
    pg_store: PostgresStore, postgres: PostgresServer
) -> None:
    run = await _new_run(pg_store)
    lease = await pg_store.acquire_lease(run.id, "worker-a", ttl_s=60)
    await asyncio.gather(*(pg_store.get_run(run.id) for _ in range(3)))  # several pooled
    postgres.restart()  # blocks the loop: the idle connections' sockets are dead but unread
    results = await asyncio.gather(
        pg_store.append(lease, _events("after")),
        pg_store.get_run(run.id),
        pg_store.pending_inbox(run.id),
    )
    assert [e.seq for e in results[0]] == [1]
    assert [e.name for e in await pg_store.load_history(run.id)] == ["after"]


@pytest.mark.integration
async def test_postgres_append_retry_with_the_same_token_writes_once(
    migrated_dsn: str,
) -> None:
    store = await PostgresStore.connect(migrated_dsn)
    try:
        run = await _new_run(store)
        lease = await store.acquire_lease(run.id, "worker-a")
    finally:
        await store.close()
    conn = await asyncpg.connect(migrated_dsn)
    try:
        call = (
            "SELECT outcome, base_seq FROM ratline_append($1, $2, 'tok', $3::jsonb,"
            " NULL, false, NULL, false, NULL, NULL, false, NULL, '{}')"
        )
        events = '[{"type": "Marker", "name": "now", "payload": {"value": 1}}]'
        first = await conn.fetchrow(call, run.id, lease.epoch, events)
        second = await conn.fetchrow(call, run.id, lease.epoch, events)
        count = await conn.fetchval("SELECT count(*) FROM events WHERE run_id = $1", run.id)
    finally:
        await conn.close()
    assert first is not None
    assert second is not None
    assert (first["outcome"], first["base_seq"]) == ("ok", 0)
    assert (second["outcome"], second["base_seq"]) == ("duplicate", 0)
    assert count == 1


@pytest.mark.integration
async def test_postgres_concurrent_appends_of_many_runs_share_commits(
    migrated_dsn: str,
) -> None:
    """Appends that queue while every sender is busy leave as one statement; each run
    keeps its own fencing and its own events."""
    store = await PostgresStore.connect(migrated_dsn, min_size=2, max_size=2)
    try:
        runs = [await _new_run(store) for _ in range(40)]
        leases = [await store.acquire_lease(r.id, "worker-a") for r in runs]
        zombie = leases[7]
        await store.revoke_lease(zombie.run_id)
        results = await asyncio.gather(
            *(store.append(lease, _events(f"s{i}", "t")) for i, lease in enumerate(leases)),
            return_exceptions=True,
        )
        batches = store._group.batches
    finally:
        await store.close()
    assert batches >= 1
    assert isinstance(results[7], FencedError)
    for i, (run, result) in enumerate(zip(runs, results, strict=True)):
        if i == 7:
            continue
        assert isinstance(result, list), result
        assert [(e.run_id, e.seq, e.name) for e in result] == [
            (run.id, 1, f"s{i}"),
            (run.id, 2, "t"),
        ]
    check = await PostgresStore.connect(migrated_dsn)
    try:
        assert await check.load_history(zombie.run_id) == []
        history = await check.load_history(runs[3].id)
        assert [(e.seq, e.name, e.payload) for e in history] == [
            (1, "s3", {"result": 1}),
            (2, "t", {"result": 2}),
        ]
    finally:
        await check.close()


@pytest.mark.integration
async def test_postgres_batched_update_fields_match_a_single_append(migrated_dsn: str) -> None:
    """ratline_commit_many decodes every RunUpdate field as ratline_commit does."""
    store = await PostgresStore.connect(migrated_dsn, min_size=1, max_size=1)
    wake = datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    update = RunUpdate(
        status=RunStatus.SUSPENDED, result=None, error={"m": "x"}, wake_at=wake, waiting_for=["p"]
    )
    try:
        runs = [await _new_run(store) for _ in range(6)]
        leases = [await store.acquire_lease(r.id, "worker-a") for r in runs]
        await store.deliver(runs[0].id, "p", InboxKind.SIGNAL, 1)
        await asyncio.gather(
            *(store.append(lease, _events("a"), update, ["p"]) for lease in leases)
        )
        assert store._group.batches >= 1  # one sender: the other five were batched
        records = [await store.get_run(r.id) for r in runs]
    finally:
        await store.close()
    for record in records:
        assert record is not None
        assert (record.status, record.result, record.error, record.wake_at) == (
            RunStatus.SUSPENDED,
            None,
            {"m": "x"},
            wake,
        )
        assert (record.waiting_for, record.history_length, record.lease_owner) == (
            ["p"],
            1,
            "worker-a",
        )


@pytest.mark.integration
async def test_postgres_unreachable_dsn_fails_fast_with_a_clear_error() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach Postgres at 127.0.0.1:{port}") as info:
        await PostgresStore.connect(
            f"postgresql://bob:s3cret-pw@127.0.0.1:{port}/db", connect_retry_s=0.5
        )
    assert time.monotonic() - started < 5
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.integration
async def test_postgres_missing_database_is_reported_without_retrying(
    postgres: PostgresServer,
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="does not exist"):
        await PostgresStore.connect(postgres.dsn(f"missing_{uuid.uuid4().hex}"))
    assert time.monotonic() - started < 5


@pytest.mark.integration
async def test_open_store_picks_the_implementation_by_scheme(migrated_dsn: str) -> None:
    memory = await open_store("memory://")
    assert isinstance(memory, MemoryStore)
    for dsn in (migrated_dsn, migrated_dsn.replace("postgresql://", "postgres://", 1)):
        pg = await open_store(dsn)
        try:
            assert isinstance(pg, PostgresStore)
            assert await pg.get_run(_run_id()) is None
        finally:
            await pg.close()
    with pytest.raises(ValueError, match="mysql"):
        await open_store("mysql://localhost/db")
