"""TTL after finished: delete a WorkflowRun `ttlSecondsAfterFinished` after it ends.

The run's own `spec.ttlSecondsAfterFinished` wins over its Workflow's
`spec.defaults.ttlSecondsAfterFinished`. An event handler arms one timer per
finished run; the operator's initial listing re-arms them all after a restart,
so nothing is persisted. Deleting goes through the API with a uid precondition
(a new run reusing the name is never hit) and the usual finalizer, which keeps
the run's history in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from ratline.controller.context import Context
from ratline.controller.lifecycle_api import GROUP, LABEL_PARENT_UID, RUNS, VERSION, LifecycleApi
from ratline.controller.projection import FINAL_PHASES
from ratline.controller.units import parse_iso, utcnow

log = logging.getLogger(__name__)
WORKFLOW_CACHE_S = 30.0
RETRY_S = 30.0


def ttl_seconds(run_spec: dict[str, Any], workflow_spec: dict[str, Any] | None) -> int | None:
    """The TTL that applies: the run's, else the Workflow's default, else None."""
    own = run_spec.get("ttlSecondsAfterFinished")
    if isinstance(own, int) and own >= 0:
        return own
    default = ((workflow_spec or {}).get("defaults") or {}).get("ttlSecondsAfterFinished")
    return default if isinstance(default, int) and default >= 0 else None


def expires_at(status: dict[str, Any], ttl: int | None) -> datetime | None:
    """When a finished run's CR goes; None while it runs or without a TTL."""
    if ttl is None or status.get("phase") not in FINAL_PHASES:
        return None
    finished = parse_iso(status.get("finishedAt"))
    return None if finished is None else finished + timedelta(seconds=ttl)


class RunTtl:
    """One timer per finished run with a TTL."""

    def __init__(self, ctx: Context, api: LifecycleApi) -> None:
        self.ctx = ctx
        self.api = api
        self._armed: dict[str, tuple[datetime, asyncio.Task[None]]] = {}
        self._workflows: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    async def _workflow_spec(self, namespace: str, name: str) -> dict[str, Any] | None:
        hit = self._workflows.get((namespace, name))
        if hit is not None and time.monotonic() - hit[0] < WORKFLOW_CACHE_S:
            return hit[1]
        workflow = await self.ctx.kube.get_workflow(namespace, name) if name else None
        spec = None if workflow is None else dict(workflow.get("spec") or {})
        self._workflows[(namespace, name)] = (time.monotonic(), spec)
        return spec

    async def on_event(self, event: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if event == "DELETED" or meta.get("deletionTimestamp"):
            self.disarm(uid)
            return
        status, spec = body.get("status") or {}, body.get("spec") or {}
        if status.get("phase") not in FINAL_PHASES or not uid:
            return
        if LABEL_PARENT_UID in (meta.get("labels") or {}) and not status.get("parentNotified"):
            return  # a child run stays until its parent has its outcome (a later event)
        wf_spec = None
        if "ttlSecondsAfterFinished" not in spec:
            ref = str(status.get("workflow") or (spec.get("workflowRef") or {}).get("name") or "")
            wf_spec = await self._workflow_spec(str(meta["namespace"]), ref)
        due = expires_at(status, ttl_seconds(spec, wf_spec))
        if due is None:
            self.disarm(uid)
            return
        armed = self._armed.get(uid)
        if armed is not None and armed[0] == due:
            return
        self.disarm(uid)
        task = asyncio.get_running_loop().create_task(
            self._expire(str(meta["namespace"]), str(meta["name"]), uid, due)
        )
        self._armed[uid] = (due, task)

    def disarm(self, uid: str) -> None:
        armed = self._armed.pop(uid, None)
        if armed is not None and not armed[1].done():
            armed[1].cancel()

    async def _expire(self, namespace: str, name: str, uid: str, due: datetime) -> None:
        await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()))
        while True:
            try:
                if await self.api.delete_run(namespace, name, uid):
                    log.info("deleted WorkflowRun %s/%s: its TTL passed", namespace, name)
                break
            except ApiException as exc:
                log.warning("TTL delete of %s/%s failed: %s; retrying", namespace, name, exc)
            await asyncio.sleep(RETRY_S)
        self._armed.pop(uid, None)


def register_ttl(registry: kopf.OperatorRegistry, ctx: Context, api: LifecycleApi) -> RunTtl:
    """Add the WorkflowRun TTL handler to `registry`."""
    ttl = RunTtl(ctx, api)

    @kopf.on.event(GROUP, VERSION, RUNS, registry=registry)
    async def run_ttl_event(**kwargs: Any) -> None:
        await ttl.on_event(str(kwargs.get("type") or ""), dict(kwargs["body"]))

    return ttl
