"""Worker pods' lifecycle: start one, react to how it ended, clean up.

Exit handling follows docs/architecture.md: 0 -> project the store; 65 / 66 /
2 -> Failed with InputInvalid / EntrypointInvalid / WorkerConfigInvalid, no
retry; anything else (69, 75, a crash, an eviction, a deleted pod) -> fence
the old worker (`revoke_lease`) and start a new pod after exponential backoff,
up to `max_retries`, then Failed with RetriesExhausted.

Pods whose run goes on are deleted once handled; the last pod of a finished
run is kept (unless --delete-finished-pods) so `kubectl logs` still works; it
goes away with the WorkflowRun (ownerReference).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from ratline.controller.context import Context
from ratline.controller.exits import Limits, decide
from ratline.controller.pods import (
    ExitAction,
    PodExit,
    WorkerPodParams,
    build_worker_pod,
    label_value,
    pod_exit,
    pod_stuck,
)
from ratline.controller.projection import FINAL_PHASES
from ratline.controller.status import RunKey
from ratline.controller.units import iso, utcnow
from ratline.controller.workflows import mark_unusable
from ratline.protocol import LABEL_ATTEMPT, LABEL_RUN_UID, LABEL_WORKFLOW
from ratline.store.base import RunStatus, RunUpdate

log = logging.getLogger(__name__)
IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


def is_live(pod: dict[str, Any]) -> bool:
    """Still running (or about to): not terminated and not being deleted."""
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
    return pod_exit(pod) is None and not deleting


class Workers:
    """Creates worker pods and handles their exits; callers hold the run's lock."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def count_live(self, namespace: str, workflow: str) -> int:
        selector = f"{LABEL_WORKFLOW}={label_value(workflow)}"
        pods = await self.ctx.kube.list_pods(namespace, selector)
        return sum(1 for pod in pods if is_live(pod))

    async def start(self, key: RunKey, status: dict[str, Any], wf_spec: dict[str, Any]) -> str:
        """Create the activation's pod (idempotent by name), then record it in status."""
        ctx = self.ctx
        attempt = int(status.get("activations") or 0) + 1
        params = WorkerPodParams(
            run_name=key.name,
            run_uid=key.uid,
            namespace=key.namespace,
            workflow=str(status.get("workflow") or ""),
            image=str(status.get("image") or ""),
            entrypoint=str(status.get("entrypoint") or ""),
            attempt=attempt,
            dsn_secret=ctx.settings.worker_dsn_secret,
            dsn_key=ctx.settings.worker_dsn_key,
            idle_threshold=ctx.settings.idle_threshold,
            command=ctx.settings.worker_command,
            pod_template=wf_spec.get("podTemplate") or {},
            default_retry=(wf_spec.get("defaults") or {}).get("retry") or None,
        )
        body = build_worker_pod(params)
        name = str(body["metadata"]["name"])
        # Pod first, then the record of it: the pod's name is the activation number, so
        # an operator that dies in between re-creates the same pod (409: fine) instead
        # of mistaking a pod it never created for one that crashed.
        if await ctx.kube.create_pod(key.namespace, body):
            ctx.metrics.pods_started.inc()
            log.info("started worker pod %s/%s", key.namespace, name)
        ctx.writer.set(key.uid, activations=attempt, workerPod=name, nextAttemptAt=None)
        await ctx.writer.flush(key.uid, urgent=True)
        ctx.projector.track(key)
        return name

    async def on_pod(self, event_type: str, pod: dict[str, Any]) -> RunKey | None:
        """A worker pod changed; returns the run to reconcile next, if any."""
        ctx = self.ctx
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        uid = labels.get(LABEL_RUN_UID)
        owner = next(
            (o for o in meta.get("ownerReferences") or [] if o.get("kind") == "WorkflowRun"),
            None,
        )
        ended = pod_exit(pod, deleted=event_type == "DELETED")
        if not uid or owner is None:
            return None
        key = RunKey(str(meta.get("namespace")), str(owner["name"]), str(uid))
        if ended is None:
            await self._note_stuck(key, pod)
            return None
        if not ctx.writer.known(key.uid):
            obj = await ctx.kube.get_run(key.namespace, key.name)
            meta = (obj or {}).get("metadata") or {}
            if meta.get("uid") != key.uid or meta.get("deletionTimestamp"):
                return None  # the run is gone or going; its finalizer removes the pods
            ctx.writer.seed(key, (obj or {}).get("status"))
        async with ctx.lock(key.uid):
            if not ctx.writer.known(key.uid):
                return None  # finalized meanwhile
            status = ctx.writer.view(key.uid)
            attempt = int(labels.get(LABEL_ATTEMPT) or 0)
            current = int(status.get("activations") or 0)
            if attempt < current:
                return None  # an older pod, superseded
            if attempt > current:  # started before a restart lost the status patch
                ctx.writer.set(key.uid, activations=attempt, workerPod=ended.pod)
            if (status.get("lastExit") or {}).get("pod") == ended.pod:
                # Handled already; an operator that died right after may have left the pod.
                if status.get("phase") not in FINAL_PHASES and event_type != "DELETED":
                    await self._delete(key, pod)
                return None
            again = await self.handle_exit(key, ended, pod if event_type != "DELETED" else None)
        workflow = status.get("workflow")
        if workflow:
            self.kick_queue(key.namespace, str(workflow))
        return key if again else None

    async def _note_stuck(self, key: RunKey, pod: dict[str, Any]) -> None:
        """A worker that cannot start (missing Secret key, bad image) shows as a condition;
        the pod stays: the kubelet retries once the cause is fixed."""
        writer = self.ctx.writer
        stuck = pod_stuck(pod)
        if not writer.known(key.uid):
            if stuck is None:
                return
            obj = await self.ctx.kube.get_run(key.namespace, key.name)
            if obj is None or obj["metadata"].get("uid") != key.uid:
                return
            writer.seed(key, obj.get("status"))
        async with self.ctx.lock(key.uid):
            if not writer.known(key.uid):
                return
            had = writer.condition(key.uid, "WorkerPending") is not None
            if stuck is None:
                if had:
                    writer.clear_condition(key.uid, "WorkerPending")
                    await writer.flush(key.uid)
                return
            reason, detail = stuck
            name = pod["metadata"]["name"]
            message = f"worker pod {name} cannot start ({reason}): {detail}"
            writer.set_condition(key.uid, "WorkerPending", reason, message)
            status = writer.view(key.uid)
            await writer.flush(key.uid, urgent=not had)
        if had:
            return
        self.ctx.emit(key, "WorkerPending", message, warning=True)
        if reason in IMAGE_ERRORS:  # the Workflow's image is wrong, not the namespace
            pinned = (str(status.get("image") or ""), str(status.get("entrypoint") or ""))
            workflow = str(status.get("workflow") or "")
            await mark_unusable(self.ctx.kube, key.namespace, workflow, pinned, reason, message)

    def kick_queue(self, namespace: str, workflow: str) -> None:
        """A slot may be free: let the first queued runs of the workflow try."""
        for item in self.ctx.slots.ordered(namespace, workflow)[:10]:
            self.ctx.scheduler.now(item.key, "slot freed")

    async def handle_exit(self, key: RunKey, ended: PodExit, pod: dict[str, Any] | None) -> bool:
        """React to one ended pod (lock held); True if the run should be reconciled now.

        Idempotent across operator restarts (see `exits`): store writes first, then the
        one status patch that marks the exit handled, then pod deletion and wake-up.
        """
        ctx = self.ctx
        settings = ctx.settings
        ctx.metrics.worker_exits.labels(outcome=ended.action.value).inc()
        status = ctx.writer.view(key.uid)
        record = await ctx.projector.refresh(key)
        limits = Limits(settings.max_retries, settings.backoff_initial, settings.backoff_max)
        decision = decide(ended, record, status, limits)
        if decision.fail is not None:
            update = RunUpdate(status=RunStatus.FAILED, error=decision.fail, clear_wake_at=True)
            await ctx.store.set_status(key.uid, update)
        if decision.revoke:
            await ctx.store.revoke_lease(key.uid)
        if decision.fail is not None:
            record = await ctx.projector.refresh(key)
        next_at = None if decision.delay is None else utcnow() + timedelta(seconds=decision.delay)
        last_exit: dict[str, Any] = {
            "pod": ended.pod,
            "reason": ended.reason,
            "at": iso(utcnow()),
            "historyLength": record.history_length if record is not None else 0,
        }
        if ended.code is not None:
            last_exit["exitCode"] = ended.code
        ctx.writer.clear_condition(key.uid, "WorkerPending")
        ctx.writer.set(
            key.uid, lastExit=last_exit, retries=decision.retries, nextAttemptAt=iso(next_at)
        )
        await ctx.writer.flush(key.uid, urgent=True)  # the exit is handled from here on
        if decision.event is not None:
            reason, message, warning = decision.event
            ctx.emit(key, reason, message, warning=warning)
        if ended.action in (ExitAction.ENTRYPOINT_INVALID, ExitAction.CONFIG_INVALID):
            pinned = (str(status.get("image") or ""), str(status.get("entrypoint") or ""))
            workflow = str(status.get("workflow") or "")
            message = decision.event[1] if decision.event else ended.reason
            await mark_unusable(
                ctx.kube, key.namespace, workflow, pinned, ended.action.value, message
            )
        if decision.finished:
            await self._finish_pod(key, pod)
            return False
        await self._delete(key, pod)
        if next_at is not None:
            ctx.scheduler.at(next_at, key, "crash backoff")
        return decision.reconcile

    async def _finish_pod(self, key: RunKey, pod: dict[str, Any] | None) -> None:
        """The run ended: keep its last pod for logs unless told otherwise."""
        await self.ctx.writer.flush(key.uid, urgent=True)
        if not self.ctx.settings.keep_finished_pods:
            await self._delete(key, pod)

    async def _delete(self, key: RunKey, pod: dict[str, Any] | None) -> None:
        if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        await self.ctx.kube.delete_pod(key.namespace, str(pod["metadata"]["name"]), 0)

    async def remove_all(self, key: RunKey) -> int:
        """Delete every worker pod of the run (its WorkflowRun is being deleted)."""
        pods = await self.ctx.kube.list_pods(key.namespace, f"{LABEL_RUN_UID}={key.uid}")
        for pod in pods:
            await self.ctx.kube.delete_pod(key.namespace, str(pod["metadata"]["name"]), 5)
        return len(pods)
