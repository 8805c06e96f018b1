"""An operator on a memory store and a fake Kube, restartable between any two writes.

`Harness.restart()` throws the operator's memory away (status writer, folds,
scheduler heap) and builds a new one on the same durable state: the store and
the fake API objects, as a real operator restart would.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ratline.controller.app import Operator
from ratline.controller.config import Settings
from ratline.controller.status import RunKey
from ratline.store.base import InboxKind, NewRun, RunRecord, RunUpdate
from ratline.store.memory import MemoryStore
from tests.unit.kube_fake import FakeKube, Writes

NS = "ns"


class CountingStore(MemoryStore):
    """A memory store whose writes the operator makes count towards `Writes`."""

    def __init__(self, writes: Writes) -> None:
        super().__init__()
        self.writes = writes

    async def get_run(self, run_id: str) -> RunRecord | None:
        await asyncio.sleep(0)  # a real store round trip lets other tasks run
        return await super().get_run(run_id)

    async def create_run(self, run: NewRun) -> RunRecord:
        self.writes.check()
        record = await super().create_run(run)
        self.writes.record(f"store create {run.name}")
        return record

    async def set_status(self, run_id: str, update: RunUpdate) -> RunRecord:
        self.writes.check()
        record = await super().set_status(run_id, update)
        self.writes.record(f"store status {update.status}")
        return record

    async def revoke_lease(self, run_id: str) -> int:
        self.writes.check()
        epoch = await super().revoke_lease(run_id)
        self.writes.record("store revoke")
        return epoch

    async def deliver(self, run_id: str, name: str, kind: InboxKind, payload: Any = None) -> bool:
        self.writes.check()
        fresh = await super().deliver(run_id, name, kind, payload)
        self.writes.record(f"store deliver {name}")
        return fresh


class Harness:
    def __init__(self, **settings: Any) -> None:
        self.writes = Writes()
        self.store = CountingStore(self.writes)
        self.kube = FakeKube(self.writes)
        defaults: dict[str, Any] = {
            "dsn": "memory://",
            "backoff_initial": 300.0,
            "status_interval": 0.001,  # the background writer publishes at once
        }
        self.settings = Settings(**{**defaults, **settings})
        self.op = Operator(self.settings, self.store, self.kube)
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the status writer's background loop, as the real operator does."""
        self._writer = asyncio.create_task(self.op.ctx.writer.run())

    async def stop(self) -> None:
        task, self._writer = self._writer, None
        # Python 3.11's wait_for can swallow a cancel that races its timeout: insist.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()

    async def restart(self) -> None:
        """Kill the operator (memory lost) and start a new one on the same state."""
        await self.stop()
        self.writes.crash_after = None
        self.writes.dead = False
        self.op = Operator(self.settings, self.store, self.kube)
        self.start()

    def key(self, name: str) -> RunKey:
        obj = self.kube.runs[(NS, name)]
        return RunKey(NS, name, obj["metadata"]["uid"])

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.kube.runs[(NS, name)].get("status") or {})

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status(name).get("conditions") or []}

    async def reconcile(self, name: str, why: str = "test") -> None:
        await self.op.reconciler.reconcile(NS, name, why)

    async def pod_event(self, pod: dict[str, Any], event_type: str = "MODIFIED") -> None:
        """What the kopf pod handler does with a pod event."""
        key = await self.op.workers.on_pod(event_type, pod)
        if key is not None:
            await self.op.reconciler.reconcile(key.namespace, key.name, "worker exited")

    async def posted(self) -> list[tuple[str, str, str]]:
        """The Events posted so far, once the operator's background posts have ended."""
        while pending := list(self.op.ctx._background):
            await asyncio.gather(*pending, return_exceptions=True)
        return list(self.kube.events)

    async def flush(self, name: str) -> None:
        await self.op.ctx.writer.flush(self.key(name).uid, urgent=True)
