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
from ratline.controller.pods import (
    LABEL_ATTEMPT,
    LABEL_RUN_UID,
    LABEL_WORKFLOW,
    ExitAction,
    PodExit,
    WorkerPodParams,
    backoff_delay,
    build_worker_pod,
    label_value,
    pod_exit,
    pod_stuck,
)
from ratline.controller.projection import error_text
from ratline.controller.status import RunKey
from ratline.controller.units import iso, utcnow
from ratline.store.base import RunRecord, RunStatus, RunUpdate

log = logging.getLogger(__name__)

_FAILURE_TEXT = {
    ExitAction.INPUT_INVALID: "the input does not fit the workflow's input model",
    ExitAction.ENTRYPOINT_INVALID: "the entrypoint cannot be imported or is not a workflow",
    ExitAction.CONFIG_INVALID: "the worker is missing a required setting (see the pod's log)",
}


def _ended(record: RunRecord | None) -> bool:
    return record is not None and (record.status.finished or record.status is RunStatus.BLOCKED)


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
        """Record the activation durably, then create its pod (idempotent by name)."""
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
        ctx.writer.set(key.uid, activations=attempt, workerPod=name, nextAttemptAt=None)
        await ctx.writer.flush(key.uid, urgent=True)
        if await ctx.kube.create_pod(key.namespace, body):
            ctx.metrics.pods_started.inc()
            log.info("started worker pod %s/%s", key.namespace, name)
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
                return None  # handled already
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
            if not had:
                self.ctx.emit(key, "WorkerPending", message, warning=True)
            await writer.flush(key.uid, urgent=not had)

    def kick_queue(self, namespace: str, workflow: str) -> None:
        """A slot may be free: let the first queued runs of the workflow try."""
        for item in self.ctx.slots.ordered(namespace, workflow)[:10]:
            self.ctx.scheduler.now(item.key, "slot freed")

    async def handle_exit(self, key: RunKey, ended: PodExit, pod: dict[str, Any] | None) -> bool:
        """React to one ended pod (lock held); True if the run may need a new worker."""
        ctx = self.ctx
        action = ended.action
        ctx.metrics.worker_exits.labels(outcome=action.value).inc()
        ctx.writer.clear_condition(key.uid, "WorkerPending")
        last_exit: dict[str, Any] = {"pod": ended.pod, "reason": ended.reason, "at": iso(utcnow())}
        if ended.code is not None:
            last_exit["exitCode"] = ended.code
        ctx.writer.set(key.uid, lastExit=last_exit)
        record = await ctx.store.get_run(key.uid)
        if action is ExitAction.PROJECT:
            record = await ctx.projector.refresh(key)
            if _ended(record):
                await self._finish_pod(key, pod)
                return False
            if record is not None and record.status is RunStatus.SUSPENDED:
                await self._delete(key, pod)
                await ctx.writer.flush(key.uid, urgent=True)
                return True
            # exit 0 but the store says the run still runs: replace it, with backoff
            return await self._retry(key, ended, pod, record)
        if action is ExitAction.RETRY:
            if _ended(record):
                await ctx.projector.refresh(key)
                await self._finish_pod(key, pod)
                return False
            return await self._retry(key, ended, pod, record)
        await self._fail(key, action, ended, record)
        await self._finish_pod(key, pod)
        return False

    async def _fail(
        self, key: RunKey, action: ExitAction, ended: PodExit, record: RunRecord | None
    ) -> None:
        """65 / 66 / 2: a permanent problem; Failed with a condition, never retried."""
        ctx = self.ctx
        detail = error_text(record.error) if record is not None and record.error else ""
        message = f"worker pod {ended.pod} exited {ended.code}: {_FAILURE_TEXT[action]}"
        if detail:
            message += f": {detail}"
        if record is not None and not record.status.finished:
            error = {"type": action.value, "message": message}
            await ctx.store.set_status(
                key.uid, RunUpdate(status=RunStatus.FAILED, error=error, clear_wake_at=True)
            )
        ctx.writer.set_condition(key.uid, action.value, action.value, message)
        ctx.emit(key, action.value, message, warning=True)
        await ctx.projector.refresh(key)

    async def _retry(
        self, key: RunKey, ended: PodExit, pod: dict[str, Any] | None, record: RunRecord | None
    ) -> bool:
        """Fence the dead worker, count the retry, schedule a new pod after backoff."""
        ctx = self.ctx
        settings = ctx.settings
        if record is not None:
            await ctx.store.revoke_lease(key.uid)
        retries = int(ctx.writer.view(key.uid).get("retries") or 0)
        code = "none" if ended.code is None else str(ended.code)
        if retries >= settings.max_retries:
            message = (
                f"worker pod {ended.pod} ended ({ended.reason}, exit code {code}) and "
                f"{retries} replacement(s) already failed (max {settings.max_retries})"
            )
            if record is not None:
                error = {"type": "RetriesExhausted", "message": message}
                await ctx.store.set_status(
                    key.uid, RunUpdate(status=RunStatus.FAILED, error=error, clear_wake_at=True)
                )
            ctx.writer.set_condition(key.uid, "RetriesExhausted", "RetriesExhausted", message)
            ctx.emit(key, "RetriesExhausted", message, warning=True)
            await ctx.projector.refresh(key)
            await self._finish_pod(key, pod)
            return False
        retries += 1
        delay = backoff_delay(retries, settings.backoff_initial, settings.backoff_max)
        next_at = utcnow() + timedelta(seconds=delay)
        ctx.writer.set(key.uid, retries=retries, nextAttemptAt=iso(next_at))
        ctx.emit(
            key,
            "WorkerRestarting",
            f"worker pod {ended.pod} ended ({ended.reason}, exit code {code}); "
            f"replacement {retries} in {delay:g}s",
            warning=True,
        )
        await ctx.writer.flush(key.uid, urgent=True)
        await self._delete(key, pod)
        ctx.scheduler.at(next_at, key, "crash backoff")
        return False

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
