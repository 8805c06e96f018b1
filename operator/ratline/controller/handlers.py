"""kopf wiring: which cluster events reach which part of the operator.

`build_registry` returns a private `kopf.OperatorRegistry` (no global
decorators at import time). Handlers stay thin: they translate errors into
kopf's vocabulary (TemporaryError: retry later; PermanentError: stop until the
object changes) after recording them as a status condition, so bad input never
crash-loops the operator or the run.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from ratline.controller.lifecycle_api import LifecycleApi
from ratline.controller.projection import FINAL_PHASES
from ratline.controller.reconciler import InvalidSpec, Reconciler
from ratline.controller.schedule_handlers import register_schedules
from ratline.controller.status import RunKey
from ratline.controller.ttl import register_ttl
from ratline.controller.units import utcnow
from ratline.controller.workers import Workers
from ratline.controller.workflows import accepted_patch
from ratline.errors import StoreError
from ratline.protocol import (
    GROUP,
    LABEL_PARENT_UID,
    LABEL_RUN_UID,
    MANAGED_BY,
    RUNS,
    VERSION,
    WORKFLOWS,
)

log = logging.getLogger(__name__)


def kopf_settings(settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    """kopf's bookkeeping under our own names, and never in status (our schema owns it)."""
    settings = settings or kopf.OperatorSettings()
    settings.persistence.finalizer = "ratline.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP,
        key="last-handled-configuration",
        ignored_fields=["spec.input"],  # immutable, and possibly large
    )
    # One client stack for writes: kopf watches; Events, like every other write, go
    # through `Kube` (ratline.controller.kube), so kopf's own posting is off.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


def build_registry(reconciler: Reconciler, workers: Workers) -> kopf.OperatorRegistry:
    """All handlers of the operator, bound to one reconciler."""
    registry = kopf.OperatorRegistry()
    ctx = reconciler.ctx

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    async def reconcile(namespace: str, name: str, why: str) -> None:
        try:
            await reconciler.reconcile(namespace, name, why)
        except InvalidSpec as exc:
            raise kopf.PermanentError(str(exc)) from exc
        except StoreError as exc:
            raise kopf.TemporaryError(f"store unavailable: {exc}", delay=5) from exc
        except ApiException as exc:
            # 4xx will not heal quickly (RBAC, a refused manifest): retry slowly.
            delay = 30 if exc.status is not None and 400 <= exc.status < 500 else 5
            raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}", delay) from exc

    @kopf.on.resume(GROUP, VERSION, RUNS, registry=registry)
    async def run_resumed(**kwargs: Any) -> None:
        if not needs_attention(dict(kwargs["body"])):
            return  # nothing left to do: keeps restarts cheap with many finished runs
        await reconcile(kwargs["namespace"], kwargs["name"], "resume")

    @kopf.on.create(GROUP, VERSION, RUNS, registry=registry)
    async def run_created(**kwargs: Any) -> None:
        await reconcile(kwargs["namespace"], kwargs["name"], "create")

    @kopf.on.update(GROUP, VERSION, RUNS, field="spec", registry=registry)
    async def run_updated(**kwargs: Any) -> None:
        await reconcile(kwargs["namespace"], kwargs["name"], "spec changed")

    @kopf.on.delete(GROUP, VERSION, RUNS, registry=registry)
    async def run_deleted(**kwargs: Any) -> None:
        try:
            await reconciler.finalize(kwargs["namespace"], kwargs["name"], kwargs["uid"])
        except StoreError as exc:
            raise kopf.TemporaryError(f"store unavailable: {exc}", delay=5) from exc

    @kopf.on.event(GROUP, VERSION, WORKFLOWS, registry=registry)
    async def workflow_event(**kwargs: Any) -> None:
        if kwargs.get("type") == "DELETED":
            return
        namespace, name = kwargs["namespace"], kwargs["name"]
        waiting = await reconciler.workflow_appeared(namespace, name)
        if waiting:
            log.info("Workflow %s/%s appeared; reconciled %s", namespace, name, waiting)
        patch = accepted_patch(dict(kwargs["body"]))
        if patch is not None:
            try:
                await ctx.kube.patch_workflow_status(namespace, name, patch)
            except ApiException as exc:  # best effort: never block the runs on it
                log.warning("cannot update status of Workflow %s/%s: %s", namespace, name, exc)

    @kopf.on.event("", "v1", "pods", labels={MANAGED_BY: "ratline"}, registry=registry)
    async def pod_event(**kwargs: Any) -> None:
        pod = dict(kwargs["body"])
        try:
            key = await workers.on_pod(kwargs.get("type") or "", pod)
            if key is not None:
                await reconciler.reconcile(key.namespace, key.name, "worker exited")
        except Exception:
            # Event handlers are not retried by kopf: look at the run again soon; the
            # reconciler notices an ended pod whose exit was not handled.
            log.exception("handling worker pod %s failed; retrying via the run", _pod_name(pod))
            key = _run_of(pod)
            if key is not None:
                ctx.scheduler.at(utcnow() + timedelta(seconds=5), key, "pod event retry")

    lifecycle = LifecycleApi()  # schedules and TTL: their own client, made on first use
    register_schedules(registry, ctx, lifecycle)
    register_ttl(registry, ctx, lifecycle)
    return registry


def needs_attention(obj: dict[str, Any]) -> bool:
    """Not final yet, or a finished child that has not told its parent: worth reconciling."""
    status = obj.get("status") or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    child = LABEL_PARENT_UID in labels and not status.get("parentNotified")
    return status.get("phase") not in FINAL_PHASES or child


def _pod_name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def _run_of(pod: dict[str, Any]) -> RunKey | None:
    meta = pod.get("metadata") or {}
    uid = (meta.get("labels") or {}).get(LABEL_RUN_UID)
    owner = next(
        (o for o in meta.get("ownerReferences") or [] if o.get("kind") == "WorkflowRun"), None
    )
    if not uid or owner is None:
        return None
    return RunKey(str(meta.get("namespace")), str(owner["name"]), str(uid))
