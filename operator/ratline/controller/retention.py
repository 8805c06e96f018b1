"""The operator's retention loop: prune finished histories older than `--retention`.

`Retention.sweep` asks the store for one bounded batch after another
(`ratline.store.retention.prune_finished`), pausing between batches so pruning a
large backlog never monopolises the database, until a batch comes back short.
`run` sweeps every `interval` seconds. The prune function and the clock are
parameters, so the policy is unit-tested without Postgres or real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from ratline.controller.config import Settings
from ratline.controller.units import utcnow
from ratline.store.base import Store
from ratline.store.retention import prune_finished

log = logging.getLogger(__name__)
Prune = Callable[[datetime, int], Awaitable[int]]


class Retention:
    """Keeps finished histories for `keep`, then deletes them in batches."""

    def __init__(
        self,
        prune: Prune,
        keep: timedelta,
        *,
        batch: int = 500,
        interval: float = 300.0,
        pause: float = 0.05,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if batch < 1:
            raise ValueError("retention batch must be >= 1")
        self.prune, self.keep, self.batch = prune, keep, batch
        self.interval, self.pause = interval, pause
        self.clock, self.sleep = clock, sleep

    async def sweep(self) -> int:
        """Prune everything finished before now - keep; returns how many runs went."""
        cutoff = self.clock() - self.keep
        total = 0
        while True:
            count = await self.prune(cutoff, self.batch)
            total += count
            if count < self.batch:
                break
            await self.sleep(self.pause)
        if total:
            log.info("retention: pruned %d finished run(s) older than %s", total, self.keep)
        return total

    async def run(self) -> None:
        """Sweep forever; a failed sweep (store down) is logged and retried next time."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; retrying in %.0f s", self.interval)
            await self.sleep(self.interval)


def retention_loop(store: Store, settings: Settings) -> Retention:
    """The operator's Retention, pruning `store` as `settings` say (retention must be set)."""
    assert settings.retention is not None

    async def prune(before: datetime, batch: int) -> int:
        return await prune_finished(store, before, batch)

    return Retention(
        prune,
        timedelta(seconds=settings.retention),
        batch=settings.retention_batch,
        interval=settings.retention_interval,
    )
