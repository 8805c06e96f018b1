"""Level-triggered reconcile of one WorkflowRun: look at everything, fix what is missing.

Called by kopf (create / resume / spec change), by the scheduler (due timers,
backoff, freed slots, a Workflow that appeared) and after a worker pod ends.
Every step is idempotent, so any number of calls, in any order, after any
crash, converge: the Workflow is pinned once, the store row is created once
(keyed by uid), inbox entries are written once (keyed by name), and at most
one worker pod per activation exists (named by the activation number).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from ratline.controller.children import Children
from ratline.controller.context import Context
from ratline.controller.pods import PodExit, pod_exit
from ratline.controller.projection import FINAL_PHASES, HistoryFold, project
from ratline.controller.retry import RetryRefused, seed
from ratline.controller.status import RunKey
from ratline.controller.units import iso, parse_iso, utcnow
from ratline.controller.workers import Workers, is_live
from ratline.errors import PermanentError, StoreError
from ratline.protocol import LABEL_PARENT_UID
from ratline.sdk.durations import parse_duration
from ratline.store.base import InboxKind, NewRun, RunRecord, RunStatus, RunUpdate

log = logging.getLogger(__name__)


def signal_tag(payload: Any) -> str:
    """A short digest of a signal payload's canonical JSON: names a corrected resend."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class InvalidSpec(PermanentError):
    """The WorkflowRun (or its Workflow) cannot be run as written."""


class Reconciler:
    """Drives one run towards what its spec and its history ask for."""

    def __init__(self, ctx: Context, workers: Workers, children: Children) -> None:
        self.ctx = ctx
        self.workers = workers
        self.children = children
        # uid -> signal name -> `name#<digest>` of the payload known to be under `name`
        self._payload_tags: dict[str, dict[str, str]] = {}

    async def reconcile(self, namespace: str, name: str, why: str = "") -> RunKey | None:
        """Reconcile the run named `name`; returns its key (None if it is gone)."""
        started = time.monotonic()
        obj = await self.ctx.kube.get_run(namespace, name)
        if obj is None and why == "due":
            await self._forget_orphan(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        key = RunKey(namespace, name, str(obj["metadata"]["uid"]))
        self.ctx.writer.seed(key, obj.get("status"))
        async with self.ctx.lock(key.uid):
            writer = self.ctx.writer
            try:
                await self._reconcile(key, obj)
            except InvalidSpec as exc:
                writer.set_condition(key.uid, "InvalidSpec", "InvalidSpec", str(exc))
                self.ctx.emit(key, "InvalidSpec", str(exc), warning=True)
                raise
            except StoreError as exc:
                writer.set_condition(key.uid, "StoreUnavailable", "StoreUnavailable", str(exc))
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                writer.set_condition(key.uid, "ReconcileError", "ReconcileError", message)
                raise
            else:
                writer.clear_condition(key.uid, "StoreUnavailable", "ReconcileError")
            finally:
                await self.ctx.writer.flush(key.uid)
                self.ctx.metrics.reconcile_seconds.labels(kind="run").observe(
                    time.monotonic() - started
                )
        log.debug("reconciled %s/%s (%s)", namespace, name, why)
        return key

    async def _reconcile(self, key: RunKey, obj: dict[str, Any]) -> None:
        ctx = self.ctx
        spec: dict[str, Any] = obj.get("spec") or {}
        ctx.writer.set(key.uid, observedGeneration=obj["metadata"].get("generation"))
        status = ctx.writer.view(key.uid)
        if status.get("phase") in FINAL_PHASES and status.get("image"):
            ctx.slots.remove(key.uid)
            record = await ctx.store.get_run(key.uid)
            if record is not None and record.status.finished:
                await self.children.notify_parent(key, record)
            return
        wf_spec = await self._pin(key, spec)
        if wf_spec is None:
            return
        record = await ctx.store.get_run(key.uid)
        if record is None:
            record = await self._create_record(key, obj, wf_spec)
        retry_of = spec.get("retryOf") or {}
        if retry_of and record.history_length == 0:
            record = await self._seed(key, retry_of, record)
        if not record.status.finished and await self._deliver(key, spec, record):
            record = await ctx.store.get_run(key.uid) or record
        await self._ensure_worker(key, obj, record)

    async def _pin(self, key: RunKey, spec: dict[str, Any]) -> dict[str, Any] | None:
        """The Workflow's spec; pins image and entrypoint the first time. None: missing."""
        ctx = self.ctx
        status = ctx.writer.view(key.uid)
        ref = str(status.get("workflow") or (spec.get("workflowRef") or {}).get("name") or "")
        workflow = await ctx.kube.get_workflow(key.namespace, ref) if ref else None
        if status.get("image"):
            return dict((workflow or {}).get("spec") or {})
        if workflow is None:
            self._workflow_missing(key, ref)
            return None
        wf_spec = dict(workflow.get("spec") or {})
        ctx.writer.set(
            key.uid,
            workflow=ref,
            image=str(wf_spec.get("image") or ""),
            entrypoint=str(wf_spec.get("entrypoint") or ""),
        )
        ctx.writer.clear_condition(key.uid, "WorkflowNotFound", "InvalidSpec")
        ctx.writer.set_waiting(key.uid, None)
        ctx.awaiting_workflow.get((key.namespace, ref), set()).discard(key.name)
        return wf_spec

    def _workflow_missing(self, key: RunKey, ref: str) -> None:
        ctx = self.ctx
        message = (
            f"Workflow {ref!r} does not exist in namespace {key.namespace}; "
            "the run starts as soon as it is created"
        )
        if ctx.writer.condition(key.uid, "WorkflowNotFound") is None:
            ctx.emit(key, "WorkflowNotFound", message, warning=True)
        ctx.writer.set_condition(key.uid, "WorkflowNotFound", "WorkflowNotFound", message)
        ctx.writer.set_waiting(key.uid, f"workflow {ref}")
        ctx.writer.set_projection(key.uid, project(None, HistoryFold()))
        ctx.awaiting_workflow[(key.namespace, ref)].add(key.name)
        recheck = utcnow() + timedelta(seconds=ctx.settings.workflow_recheck)
        ctx.scheduler.at(recheck, key, "workflow recheck")

    async def _create_record(
        self, key: RunKey, obj: dict[str, Any], wf_spec: dict[str, Any]
    ) -> RunRecord:
        ctx = self.ctx
        spec = obj.get("spec") or {}
        status = ctx.writer.view(key.uid)
        text = spec.get("maxDuration") or (wf_spec.get("defaults") or {}).get("maxDuration")
        try:
            max_duration = parse_duration(str(text)).total_seconds() if text else None
        except ValueError as exc:
            raise InvalidSpec(f"maxDuration: {exc}") from None
        labels = obj["metadata"].get("labels") or {}
        record = await ctx.store.create_run(
            NewRun(
                id=key.uid,
                namespace=key.namespace,
                name=key.name,
                workflow=str(status.get("workflow") or ""),
                entrypoint=str(status.get("entrypoint") or ""),
                image=str(status.get("image") or ""),
                input=spec.get("input"),
                max_duration_s=max_duration,
                parent_id=labels.get(LABEL_PARENT_UID),
            )
        )
        ctx.projector.track(key)
        return record

    async def _seed(self, key: RunKey, retry_of: dict[str, Any], record: RunRecord) -> RunRecord:
        """`spec.retryOf`: inherit the old run's history before any worker starts."""
        old, step = str(retry_of.get("uid") or ""), str(retry_of.get("fromStep") or "")
        try:
            plan = await seed(self.ctx.store, key.uid, old, step)
        except RetryRefused as exc:
            raise InvalidSpec(f"spec.retryOf: {exc}") from None
        if plan is not None:
            kept = ", ".join(plan.kept_steps) or "none"
            self.ctx.emit(key, "RetrySeeded", f"retrying {old} from step {step} (kept: {kept})")
        return await self.ctx.store.get_run(key.uid) or record

    async def _deliver(self, key: RunKey, spec: dict[str, Any], record: RunRecord) -> bool:
        """Write new signals, rejections, cancel and timeout into the inbox, once each."""
        ctx = self.ctx
        done = set(ctx.writer.view(key.uid).get("delivered") or [])
        changed = False
        for name, payload in (spec.get("signals") or {}).items():
            changed = await self._deliver_signal(key, str(name), payload, done) or changed
        wanted: list[tuple[str, InboxKind, Any]] = []
        for name, message in (spec.get("rejections") or {}).items():
            error = {"type": "Rejected", "message": str(message)}
            wanted.append((str(name), InboxKind.REJECT, error))
        if spec.get("cancel"):
            wanted.append(("cancel", InboxKind.CANCEL, None))
        deadline = self._deadline(record)
        if deadline is not None:
            if deadline <= utcnow():
                wanted.append(("timeout", InboxKind.TIMEOUT, None))
            else:
                ctx.scheduler.at(deadline, key, "maxDuration")
        # `delivered` in status only saves round trips (it is capped for size); the inbox
        # is what decides: `deliver` is a no-op for a name it holds, and says so.
        fresh = [item for item in wanted if item[0] not in done]
        for name, kind, payload in fresh:
            first = await ctx.store.deliver(key.uid, name, kind, payload)
            done.add(name)
            if first:
                self._delivered(key, name, kind)
        if fresh or changed:
            ctx.writer.set(key.uid, delivered=sorted(done)[:256])
        return bool(fresh) or changed

    async def _deliver_signal(self, key: RunKey, name: str, payload: Any, done: set[str]) -> bool:
        """`spec.signals[name]`: the first payload goes in as `name`; a different payload
        patched later (a corrected resend after a refusal) goes in as `name#<digest>`,
        which the engine reads as another delivery for promise `name`. The tag comes
        from the content, so retries and restarts write each payload once; the payload
        under `name` is compared once per operator process (then remembered). True
        when `done` changed."""
        store = self.ctx.store
        tagged = f"{name}#{signal_tag(payload)}"
        known = self._payload_tags.setdefault(key.uid, {})
        if tagged in done or known.get(name) == tagged:
            return False
        first = name not in done
        if first:
            done.add(name)
            if await store.deliver(key.uid, name, InboxKind.SIGNAL, payload):
                known[name] = tagged
                self._delivered(key, name, InboxKind.SIGNAL)
                return True
        held = await store.inbox_item(key.uid, name)
        # The same payload, or the name went in as a rejection: left as it was.
        if (
            held is None
            or held.kind is not InboxKind.SIGNAL
            or signal_tag(held.payload) == signal_tag(payload)
        ):
            known[name] = tagged
            return first
        done.add(tagged)
        if await store.deliver(key.uid, tagged, InboxKind.SIGNAL, payload):
            self.ctx.metrics.signal_delivered(key.uid, name)
            self.ctx.emit(key, "Delivered", f"signal {name} delivered again as {tagged}")
        return True

    def _delivered(self, key: RunKey, name: str, kind: InboxKind) -> None:
        if kind is InboxKind.SIGNAL or kind is InboxKind.REJECT:
            self.ctx.metrics.signal_delivered(key.uid, name)
        verb = {
            InboxKind.SIGNAL: f"signal {name} delivered",
            InboxKind.REJECT: f"rejection of {name} delivered",
            InboxKind.CANCEL: "cancel requested",
            InboxKind.TIMEOUT: "maxDuration passed: timing out",
        }[kind]
        self.ctx.emit(key, "Delivered" if kind is not InboxKind.TIMEOUT else "TimingOut", verb)

    @staticmethod
    def _deadline(record: RunRecord) -> datetime | None:
        if record.max_duration_s is None or record.started_at is None:
            return None
        return record.started_at + timedelta(seconds=record.max_duration_s)

    async def _ensure_worker(self, key: RunKey, obj: dict[str, Any], record: RunRecord) -> None:
        """Start a worker if the run needs one and none is alive (respecting backoff, slots)."""
        ctx = self.ctx
        if record.status.resting:
            await ctx.projector.refresh(key)
            ctx.slots.remove(key.uid)
            return
        now = utcnow()
        if record.status is RunStatus.SUSPENDED and (
            record.wake_at is None or record.wake_at > now
        ):
            if record.wake_at is not None:
                ctx.scheduler.at(record.wake_at, key, "wake")
            await ctx.projector.refresh(key)
            return
        if not await self._worker_gone(key):
            return
        status = ctx.writer.view(key.uid)
        if status.get("phase") in FINAL_PHASES:
            return  # the old worker's exit just ended the run
        next_at = parse_iso(status.get("nextAttemptAt"))
        if next_at is not None and next_at > now:
            ctx.scheduler.at(next_at, key, "crash backoff")
            ctx.writer.set_waiting(key.uid, f"restart backoff until {iso(next_at)}")
            return
        workflow = str(status.get("workflow") or "")
        wf = await ctx.kube.get_workflow(key.namespace, workflow)
        wf_spec: dict[str, Any] = dict((wf or {}).get("spec") or {})
        limit = int(wf_spec.get("concurrency") or 0)
        if limit <= 0:
            await self._start(key, status, wf_spec)
            return
        async with ctx.slot_lock(key.namespace, workflow):
            live = await self.workers.count_live(key.namespace, workflow)
            spec = obj.get("spec") or {}
            created = str(obj["metadata"].get("creationTimestamp") or "")
            ctx.slots.add(key.namespace, workflow, key, int(spec.get("priority") or 0), created)
            if not ctx.slots.may_start(key.namespace, workflow, key.uid, limit - live):
                message = (
                    f"{live}/{limit} worker pods of Workflow {workflow} are running; "
                    "queued runs start by priority, then age"
                )
                ctx.writer.set_condition(key.uid, "Queued", "ConcurrencyLimit", message)
                ctx.writer.set_waiting(key.uid, "a concurrency slot")
                ctx.scheduler.at(now + timedelta(seconds=10), key, "queued recheck")
                return
            ctx.slots.remove(key.uid)
            await self._start(key, status, wf_spec)

    async def _start(self, key: RunKey, status: dict[str, Any], wf_spec: dict[str, Any]) -> None:
        self.ctx.writer.clear_condition(key.uid, "Queued")
        self.ctx.writer.set_waiting(key.uid, None)
        await self.workers.start(key, status, wf_spec)

    async def _worker_gone(self, key: RunKey) -> bool:
        """False while the current worker pod lives; handles an exit nobody saw."""
        ctx = self.ctx
        status = ctx.writer.view(key.uid)
        name = status.get("workerPod")
        if not name or (status.get("lastExit") or {}).get("pod") == name:
            return True
        pod = await ctx.kube.get_pod(key.namespace, str(name))
        if pod is not None and is_live(pod):
            ctx.projector.track(key)
            return False
        ended = pod_exit(pod) if pod is not None else None
        if ended is None:
            ended = PodExit(pod=str(name), code=None, reason="PodDeleted")
        await self.workers.handle_exit(key, ended, pod)
        return True

    async def _forget_orphan(self, namespace: str, name: str) -> None:
        """A due run whose WorkflowRun vanished without its finalizer (force-deleted):
        close it in the store so it stops coming back as due."""
        for record in await self.ctx.store.due_runs(utcnow(), limit=200):
            if record.namespace == namespace and record.name == name:
                error = {"type": "RunDeleted", "message": "the WorkflowRun no longer exists"}
                await self.ctx.store.set_status(
                    record.id,
                    RunUpdate(status=RunStatus.CANCELLED, error=error, clear_wake_at=True),
                )
                log.info("closed orphaned run %s/%s in the store", namespace, name)

    async def workflow_appeared(self, namespace: str, workflow: str) -> list[str]:
        """Runs that waited for this Workflow: reconcile them now."""
        names = sorted(self.ctx.awaiting_workflow.pop((namespace, workflow), set()))
        for name in names:
            await self.reconcile(namespace, name, "workflow appeared")
        return names

    async def finalize(self, namespace: str, name: str, uid: str) -> None:
        """The WorkflowRun is being deleted: stop its pods and close it in the store."""
        ctx = self.ctx
        key = RunKey(namespace, name, uid)
        async with ctx.lock(uid):
            removed = await self.workers.remove_all(key)
            record = await ctx.store.get_run(uid)
            if record is not None:
                await ctx.store.revoke_lease(uid)
                if not record.status.finished:
                    error = {"type": "RunDeleted", "message": "the WorkflowRun was deleted"}
                    await ctx.store.set_status(
                        uid,
                        RunUpdate(status=RunStatus.CANCELLED, error=error, clear_wake_at=True),
                    )
        ctx.drop(uid)
        self._payload_tags.pop(uid, None)
        log.info("finalized %s/%s (%d worker pod(s) deleted)", namespace, name, removed)
