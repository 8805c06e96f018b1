"""Keeps the status of active runs in step with the store.

One loop waits on the store's change notifications (LISTEN, any run), then
refreshes every active run at most once per interval: the run row, plus only
the history events after the last one folded (`after_seq`). Bursts of appends
therefore coalesce into one projection and one status patch per run per
interval, and a 10,000-step run costs the same per refresh as a 3-step one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ratline.controller.projection import HistoryFold, Notice, project
from ratline.controller.status import RunKey, StatusWriter
from ratline.store.base import RunRecord, RunStatus, Store

log = logging.getLogger(__name__)

# Called with the run, its record, the notices not reported before and the
# children its history requested that have not completed. It may be called
# while the caller holds the run's lock, so it must never take that lock.
NoticeSink = Callable[[RunKey, RunRecord, list[Notice], dict[str, dict[str, Any]]], Awaitable[None]]


@dataclass
class _Tracked:
    key: RunKey
    fold: HistoryFold = field(default_factory=HistoryFold)
    reported_through: int = 0  # notices at or below this seq were reported already
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Projector:
    """Folds history incrementally and hands projections to the `StatusWriter`."""

    def __init__(
        self, store: Store, writer: StatusWriter, sink: NoticeSink, interval: float
    ) -> None:
        self._store = store
        self._writer = writer
        self._sink = sink
        self._interval = interval
        self._tracked: dict[str, _Tracked] = {}
        self._active: set[str] = set()
        self._changed = asyncio.Event()

    def track(self, key: RunKey) -> None:
        """Refresh this run on every store change until it rests (finished or suspended)."""
        self._tracked_for(key)
        self._active.add(key.uid)
        self._changed.set()

    def untrack(self, uid: str) -> None:
        self._active.discard(uid)
        self._tracked.pop(uid, None)

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    def _tracked_for(self, key: RunKey) -> _Tracked:
        tracked = self._tracked.get(key.uid)
        if tracked is None:
            reported = self._writer.view(key.uid).get("historyLength") or 0
            tracked = _Tracked(key=key, reported_through=int(reported))
            self._tracked[key.uid] = tracked
        return tracked

    async def refresh(self, key: RunKey) -> RunRecord | None:
        """Project one run now; returns its record (None if not in the store yet)."""
        tracked = self._tracked_for(key)
        async with tracked.lock:
            record = await self._store.get_run(key.uid)
            if record is not None and record.history_length > tracked.fold.last_seq:
                events = await self._store.load_history(key.uid, tracked.fold.last_seq)
                notices = tracked.fold.apply_all(events)
            else:
                notices = []
            if not self._writer.known(key.uid):
                return record
            self._writer.set_projection(key.uid, project(record, tracked.fold))
            fresh = [n for n in notices if n.seq > tracked.reported_through]
            tracked.reported_through = max(tracked.reported_through, tracked.fold.last_seq)
        if record is not None:
            try:
                await self._sink(key, record, fresh, dict(tracked.fold.children))
            except Exception:
                log.exception("handling history notices of %s failed", key.name)
            if record.status.resting or record.status is RunStatus.SUSPENDED:
                self._active.discard(key.uid)
            if record.status.resting:
                self._tracked.pop(key.uid, None)  # a final run needs no fold any more
        return record

    async def listen(self) -> None:
        """Background loop: turn the store's NOTIFYs (any run) into a wake-up flag."""
        while True:
            try:
                if await self._store.wait_for_change(None, timeout_s=30.0):
                    self._changed.set()
            except Exception:
                log.exception("waiting for store changes failed; polling instead")
                await asyncio.sleep(self._interval)

    async def run(self) -> None:
        """Background loop: one refresh per active run per interval, on change."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._interval * 5)
            self._changed.clear()
            started = time.monotonic()
            for uid in list(self._active):
                tracked = self._tracked.get(uid)
                if tracked is None:
                    self._active.discard(uid)
                    continue
                try:
                    await self.refresh(tracked.key)
                except Exception:
                    log.exception("projecting run %s failed; will retry", tracked.key.name)
            spent = time.monotonic() - started
            if spent < self._interval:
                await asyncio.sleep(self._interval - spent)
