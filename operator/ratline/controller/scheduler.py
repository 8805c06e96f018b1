"""When to look at a run again: timers, due wake-ups, resync and the concurrency queue.

`Scheduler` calls back into the reconciler (a) at times the reconciler asked
for (crash backoff, maxDuration, a missing Workflow's re-check), (b) for
every suspended run the store says is due (`due_runs`: timers, retry waits,
promise deadlines, deliveries), polled so nothing depends on in-memory state
surviving a restart, and (c) for every run not final yet, once per resync
interval: the safety net for a watch event or a wake-up that was missed. A
wake-up whose reconcile fails (store or API error) is retried with backoff,
never dropped, like controller-runtime's requeue. `SlotQueue` orders runs
waiting for a concurrency slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ratline.controller.pods import backoff_delay
from ratline.controller.status import RunKey
from ratline.controller.units import utcnow
from ratline.errors import PermanentError
from ratline.store.base import Store

log = logging.getLogger(__name__)

Callback = Callable[[RunKey, str], Awaitable[None]]
Lister = Callable[[], Awaitable[list[RunKey]]]
RETRY_INITIAL = 1.0  # seconds before the first retry of a failed wake-up (doubles)
RETRY_MAX = 60.0


class Scheduler:
    """A heap of (when, run) plus a `due_runs` poll; each due run is reconciled once at a time."""

    def __init__(
        self,
        store: Store,
        callback: Callback,
        poll_interval: float,
        namespaces: tuple[str, ...] = (),
        concurrency: int = 16,
        accept: Callable[[str], bool] = lambda uid: True,
    ) -> None:
        self._store = store
        self._callback = callback
        self._poll = poll_interval
        self._namespaces = frozenset(namespaces)
        self._accept = accept  # which due runs this replica may act on
        self._heap: list[tuple[datetime, int, RunKey, str]] = []
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._in_flight: set[str] = set()
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[str, int] = {}  # uid -> failed wake-ups in a row

    def at(self, when: datetime, key: RunKey, why: str) -> None:
        """Reconcile `key` at `when` (earlier entries for the same run are kept: cheap)."""
        heapq.heappush(self._heap, (when, next(self._counter), key, why))
        self._wakeup.set()

    def now(self, key: RunKey, why: str) -> None:
        self.at(utcnow(), key, why)

    def _dispatch(self, key: RunKey, why: str) -> None:
        if key.uid in self._in_flight:
            return
        self._in_flight.add(key.uid)
        task = asyncio.create_task(self._invoke(key, why), name=f"ratline-wake-{key.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invoke(self, key: RunKey, why: str) -> None:
        try:
            async with self._limit:
                await self._callback(key, why)
        except PermanentError as exc:  # the spec must change first; its update reconciles
            self._failures.pop(key.uid, None)
            log.warning("scheduled reconcile of %s (%s): %s", key.name, why, exc)
        except Exception as exc:
            failures = self._failures.get(key.uid, 0) + 1
            self._failures[key.uid] = failures
            delay = backoff_delay(failures, RETRY_INITIAL, RETRY_MAX)
            log.warning(
                "scheduled reconcile of %s (%s) failed (%s: %s); retrying in %gs",
                key.name,
                why,
                type(exc).__name__,
                exc,
                delay,
            )
            self.at(utcnow() + timedelta(seconds=delay), key, why)
        else:
            self._failures.pop(key.uid, None)
        finally:
            self._in_flight.discard(key.uid)

    def pending(self, uid: str) -> list[str]:
        """Why `uid` is scheduled (heap entries), for tests and debugging."""
        return [why for _, _, key, why in self._heap if key.uid == uid]

    async def run_timers(self) -> None:
        """Background loop: pop due heap entries and reconcile them."""
        while True:
            now = utcnow()
            while self._heap and self._heap[0][0] <= now:
                _, _, key, why = heapq.heappop(self._heap)
                self._dispatch(key, why)
            timeout = 60.0
            if self._heap:
                timeout = max(0.0, (self._heap[0][0] - now).total_seconds())
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(timeout, 60.0))

    async def run_due_poll(self) -> None:
        """Background loop: suspended runs whose wake_at passed get a worker again."""
        while True:
            try:
                for record in await self._store.due_runs(utcnow(), limit=200):
                    if self._namespaces and record.namespace not in self._namespaces:
                        continue
                    if not self._accept(record.id):
                        continue
                    self._dispatch(RunKey(record.namespace, record.name, record.id), "due")
            except Exception:
                log.exception("looking up due runs failed; will retry")
            await asyncio.sleep(self._poll)

    async def run_resync(self, active: Lister, interval: float) -> None:
        """Background loop: reconcile every run that is not final, once per `interval`."""
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                keys = await active()
            except Exception:
                log.exception("listing runs for the resync failed; will retry")
                continue
            for key in keys:
                if self._accept(key.uid):
                    self._dispatch(key, "resync")


@dataclass(order=True, frozen=True)
class QueuedRun:
    """Sort key of a run waiting for a slot: higher priority first, then older."""

    neg_priority: int
    created: str  # RFC 3339 creationTimestamp: sorts chronologically
    uid: str
    key: RunKey = field(compare=False)


class SlotQueue:
    """Runs waiting for a concurrency slot, per (namespace, workflow)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], dict[str, QueuedRun]] = {}

    def add(self, namespace: str, workflow: str, key: RunKey, priority: int, created: str) -> None:
        queue = self._queues.setdefault((namespace, workflow), {})
        queue[key.uid] = QueuedRun(-priority, created, key.uid, key)

    def remove(self, uid: str) -> None:
        for queue in self._queues.values():
            queue.pop(uid, None)

    def ordered(self, namespace: str, workflow: str) -> list[QueuedRun]:
        return sorted(self._queues.get((namespace, workflow), {}).values())

    def may_start(self, namespace: str, workflow: str, uid: str, free_slots: int) -> bool:
        """True if `uid` is among the first `free_slots` queued runs (it must be queued)."""
        if free_slots <= 0:
            return False
        head = self.ordered(namespace, workflow)[:free_slots]
        return any(item.uid == uid for item in head)
