"""What every part of a running operator shares: settings, clients, locks.

One `Context` per operator process (kopf passes it to handlers through its
`memo`); nothing here is a module-level singleton, so tests can build several.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from ratline.controller.config import Settings
from ratline.controller.kube import Kube
from ratline.controller.metrics import Metrics
from ratline.controller.projector import Projector
from ratline.controller.scheduler import Scheduler, SlotQueue
from ratline.controller.status import RunKey, StatusWriter
from ratline.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The operator's shared state; built by `app.build_context`."""

    settings: Settings
    store: Store
    kube: Kube
    metrics: Metrics
    writer: StatusWriter
    projector: Projector
    scheduler: Scheduler
    slots: SlotQueue = field(default_factory=SlotQueue)
    # Runs waiting for a Workflow to appear: (namespace, workflow) -> run names.
    awaiting_workflow: dict[tuple[str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _slot_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def lock(self, uid: str) -> asyncio.Lock:
        """Serialises everything done to one run (kopf handlers, timers, pod events)."""
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    def slot_lock(self, namespace: str, workflow: str) -> asyncio.Lock:
        """Serialises count-then-start for one concurrency-limited Workflow."""
        key = (namespace, workflow)
        lock = self._slot_locks.get(key)
        if lock is None:
            lock = self._slot_locks[key] = asyncio.Lock()
        return lock

    def drop(self, uid: str) -> None:
        """Forget a deleted run everywhere."""
        self._locks.pop(uid, None)
        self.writer.forget(uid)
        self.projector.untrack(uid)
        self.slots.remove(uid)

    def emit(self, key: RunKey, reason: str, message: str, *, warning: bool = False) -> None:
        """Post a Kubernetes Event about the run in the background (best effort)."""
        task = asyncio.create_task(
            self.kube.post_event(key.involved, reason, message, warning=warning)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
