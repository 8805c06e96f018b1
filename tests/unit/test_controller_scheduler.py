"""Scheduling: the concurrency queue's order and the due-run poll (memory store)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ratline.controller.scheduler import Scheduler, SlotQueue
from ratline.controller.status import RunKey
from ratline.controller.units import utcnow
from ratline.store.base import NewRun, RunStatus, RunUpdate
from ratline.store.memory import MemoryStore


def key(name: str) -> RunKey:
    return RunKey("ns", name, f"uid-{name}")


def test_queue_orders_by_priority_then_age() -> None:
    queue = SlotQueue()
    queue.add("ns", "wf", key("old-low"), priority=0, created="2030-01-01T00:00:00Z")
    queue.add("ns", "wf", key("new-high"), priority=5, created="2030-01-01T00:00:09Z")
    queue.add("ns", "wf", key("old-high"), priority=5, created="2030-01-01T00:00:01Z")
    queue.add("ns", "other", key("elsewhere"), priority=99, created="2030-01-01T00:00:00Z")
    assert [q.key.name for q in queue.ordered("ns", "wf")] == ["old-high", "new-high", "old-low"]
    assert queue.may_start("ns", "wf", "uid-old-high", free_slots=1)
    assert not queue.may_start("ns", "wf", "uid-new-high", free_slots=1)
    assert queue.may_start("ns", "wf", "uid-new-high", free_slots=2)
    assert not queue.may_start("ns", "wf", "uid-old-high", free_slots=0)
    queue.remove("uid-old-high")
    assert queue.may_start("ns", "wf", "uid-new-high", free_slots=1)


async def _due_run(store: MemoryStore, name: str, namespace: str = "ns") -> str:
    run_id = f"uid-{name}"
    await store.create_run(NewRun(id=run_id, namespace=namespace, name=name, workflow="wf"))
    past = utcnow() - timedelta(seconds=5)
    await store.set_status(run_id, RunUpdate(status=RunStatus.SUSPENDED, wake_at=past))
    return run_id


async def test_due_poll_reconciles_due_runs_of_watched_namespaces_it_accepts() -> None:
    store = MemoryStore()
    await _due_run(store, "due")
    await _due_run(store, "foreign", namespace="other")
    await _due_run(store, "unknown")
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def callback(run: RunKey, why: str) -> None:
        seen.append((run.name, why))
        done.set()

    scheduler = Scheduler(
        store, callback, poll_interval=0.05, namespaces=("ns",),
        accept=lambda uid: uid != "uid-unknown",
    )  # fmt: skip
    poll = asyncio.create_task(scheduler.run_due_poll())
    try:
        await asyncio.wait_for(done.wait(), timeout=5)
        await asyncio.sleep(0.2)
    finally:
        poll.cancel()
    assert set(seen) == {("due", "due")}


async def test_timers_fire_in_order_and_once_per_run_in_flight() -> None:
    fired: list[str] = []
    release = asyncio.Event()

    async def callback(run: RunKey, why: str) -> None:
        fired.append(f"{run.name}:{why}")
        if run.name == "slow":
            await release.wait()

    scheduler = Scheduler(MemoryStore(), callback, poll_interval=60)
    timers = asyncio.create_task(scheduler.run_timers())
    try:
        now = utcnow()
        scheduler.at(now + timedelta(milliseconds=150), key("b"), "later")
        scheduler.at(now + timedelta(milliseconds=50), key("a"), "sooner")
        scheduler.now(key("slow"), "first")
        await asyncio.sleep(0.05)
        scheduler.now(key("slow"), "while running")  # coalesced: already in flight
        await asyncio.sleep(0.3)
        release.set()
        await asyncio.sleep(0.05)
    finally:
        timers.cancel()
    assert fired == ["slow:first", "a:sooner", "b:later"]
