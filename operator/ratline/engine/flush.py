"""Write-behind buffer of an activation's events, committed in one append.

Appends are fenced by the lease epoch. A connection lost mid-commit is retried by
the store (its one retry loop, bounded by its outage budget); the append's token
makes sure a commit that did land is never written twice.
"""

from __future__ import annotations

import asyncio

from ratline.store.base import Lease, NewEvent, RunStatus, RunUpdate, Store


class Flusher:
    """Buffers events, consumed inbox names and a pending status for the next commit."""

    def __init__(self, store: Store, lease: Lease, run_id: str, history_length: int) -> None:
        self.store = store
        self.lease = lease
        self.run_id = run_id
        self.length = history_length
        self._events: list[NewEvent] = []
        self._consumed: list[str] = []
        self._status: RunStatus | None = None
        self._lock = asyncio.Lock()
        self.released = False  # a commit gave the lease back: nothing more may be written

    def buffer(self, event: NewEvent) -> None:
        self._events.append(event)

    def consume(self, inbox_name: str) -> None:
        self._consumed.append(inbox_name)

    def set_status(self, status: RunStatus) -> None:
        """Include this status in the next commit (e.g. running again after a wake-up)."""
        self._status = status

    def discard(self) -> None:
        self._events.clear()
        self._consumed.clear()

    def _merged(self, update: RunUpdate | None) -> RunUpdate | None:
        if self._status is None or (update is not None and update.status is not None):
            return update
        resumed = RunUpdate(status=self._status, clear_wake_at=True, waiting_for=[])
        if update is None:
            return resumed
        return update.model_copy(update={"status": self._status})

    async def flush(self, update: RunUpdate | None = None) -> None:
        async with self._lock:
            update = self._merged(update)
            if not self._events and not self._consumed and update is None:
                return
            events, consumed = self._events, self._consumed
            self._events, self._consumed = [], []
            await self._append(events, update, consumed)
            self._status = None
            self.released = update is not None and update.release_lease

    async def _append(
        self, events: list[NewEvent], update: RunUpdate | None, consumed: list[str]
    ) -> None:
        """One append. Retrying a lost connection is the store's job (one loop, one
        budget: `PostgresStore` retries within `retry_s`, with a token so a commit whose
        reply was lost is not written twice); a second loop here would stack budgets."""
        await self.store.append(self.lease, events, update, consumed)
        self.length += len(events)
