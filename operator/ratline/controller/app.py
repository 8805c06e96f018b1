"""Assembles and runs one operator process: store, clients, loops, kopf.

`run(settings)` is what `python -m ratline.controller` and `ratline operator`
call. Background loops (status writer, projector, scheduler) start before kopf
so kopf's shutdown does not mistake them for stray handler tasks; if one of
them dies, the whole operator stops (and its Deployment restarts it) rather
than limping on half-blind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import kopf

from ratline.controller.children import Children
from ratline.controller.config import Settings
from ratline.controller.context import Context
from ratline.controller.handlers import build_registry, kopf_settings, needs_attention
from ratline.controller.kube import Kube, KubeClient, load_api_client
from ratline.controller.metrics import Metrics, serve
from ratline.controller.projection import Notice
from ratline.controller.projector import Projector
from ratline.controller.reconciler import Reconciler
from ratline.controller.retention import retention_loop
from ratline.controller.scheduler import Scheduler
from ratline.controller.status import RunKey, StatusWriter
from ratline.controller.workers import Workers
from ratline.store import open_store
from ratline.store.base import RunRecord, Store

log = logging.getLogger(__name__)
MAX_EVENTS_PER_REFRESH = 20


class Operator:
    """One operator: the shared context plus the parts that act on it."""

    def __init__(self, settings: Settings, store: Store, kube: Kube) -> None:
        metrics = Metrics()
        writer = StatusWriter(kube, settings.status_interval, metrics.phase_changed)
        projector = Projector(store, writer, self._on_history, settings.status_interval)
        # With peering, a replica acts on due runs only once its kopf handlers (paused
        # on a standby) have seen them; standalone, it acts on every due run it watches.
        accept = writer.known if settings.peering else (lambda uid: True)
        scheduler = Scheduler(
            store, self._wake, settings.wake_poll, settings.namespaces, accept=accept
        )
        self.ctx = Context(
            settings=settings,
            store=store,
            kube=kube,
            metrics=metrics,
            writer=writer,
            projector=projector,
            scheduler=scheduler,
        )
        self.workers = Workers(self.ctx)
        self.children = Children(self.ctx)
        self.reconciler = Reconciler(self.ctx, self.workers, self.children)
        self.registry = build_registry(self.reconciler, self.workers)

    async def _wake(self, key: RunKey, why: str) -> None:
        await self.reconciler.reconcile(key.namespace, key.name, why)

    async def _on_history(
        self,
        key: RunKey,
        record: RunRecord,
        notices: list[Notice],
        children: dict[str, dict[str, Any]],
    ) -> None:
        """New history of a run: Events, signal latency, children, the parent."""
        ctx = self.ctx
        for notice in notices[:MAX_EVENTS_PER_REFRESH]:
            ctx.emit(key, notice.reason, notice.message, warning=notice.warning)
        if len(notices) > MAX_EVENTS_PER_REFRESH:
            extra = len(notices) - MAX_EVENTS_PER_REFRESH
            ctx.emit(key, "Progress", f"{extra} more history events (see `ratline history`)")
        for notice in notices:
            if notice.reason == "SignalReceived":
                ctx.metrics.signal_resumed(key.uid, str(notice.data.get("name")))
        if children:
            await self.children.ensure(key, children)
        if record.status.finished and record.parent_id:
            # No run lock here: the sink may run under it (a pod exit projects the run);
            # notify_parent is idempotent (inbox key, parentNotified) on its own.
            await self.children.notify_parent(key, record)

    async def active_runs(self) -> list[RunKey]:
        """Every watched WorkflowRun that is not final yet (or owes its parent a result)."""
        namespaces: list[str | None] = list(self.ctx.settings.namespaces) or [None]
        keys: list[RunKey] = []
        for namespace in namespaces:
            for obj in await self.ctx.kube.list_runs(namespace):
                meta = obj.get("metadata") or {}
                if meta.get("deletionTimestamp") or not needs_attention(obj):
                    continue
                keys.append(RunKey(str(meta["namespace"]), str(meta["name"]), str(meta["uid"])))
        return keys

    def background(self) -> list[Coroutine[Any, Any, None]]:
        ctx = self.ctx
        loops = [
            ctx.writer.run(),
            ctx.projector.listen(),
            ctx.projector.run(),
            ctx.scheduler.run_timers(),
            ctx.scheduler.run_due_poll(),
            ctx.scheduler.run_resync(self.active_runs, ctx.settings.resync_interval),
        ]
        if ctx.settings.retention is not None:
            loops.append(retention_loop(ctx.store, ctx.settings).run())
        return loops


async def run(settings: Settings) -> None:
    """Run the operator until SIGTERM/SIGINT (or a background loop dies)."""
    store = await open_store(settings.dsn)
    await store.migrate()
    kube = KubeClient(load_api_client())
    operator = Operator(settings, store, kube)
    server = serve(operator.ctx.metrics, settings.metrics_host, settings.metrics_port)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(coro) for coro in operator.background()]

    def died(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background loop died: %r; stopping the operator", task.exception())
            stop.set()

    for task in tasks:
        task.add_done_callback(died)
    try:
        await kopf.operator(
            registry=operator.registry,
            settings=kopf_settings(),
            clusterwide=settings.clusterwide,
            namespaces=list(settings.namespaces),
            standalone=settings.peering is None,
            peering_name=settings.peering,
            liveness_endpoint=settings.liveness,
            stop_flag=stop,
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            server.shutdown()
        await store.close()
        kube.close()
