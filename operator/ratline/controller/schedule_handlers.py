"""kopf wiring of WorkflowSchedules: one daemon per schedule carries out `decide`.

The daemon lists the schedule's runs (label `ratline.dev/schedule`), asks
`schedules.decide` what to do, creates / deletes runs, writes the status and
sleeps until the next firing or until the spec changes (an event handler wakes
it). Creating a run is idempotent: its name comes from the scheduled minute, so
a 409 means this firing already happened (a restart, a second operator) and
counts as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from datetime import datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from ratline.controller.context import Context
from ratline.controller.lifecycle_api import GROUP, SCHEDULES, VERSION, LifecycleApi
from ratline.controller.schedules import (
    ANNOTATION_SCHEDULED_TIME,
    LABEL_SCHEDULE,
    Decision,
    RunInfo,
    ScheduleInvalid,
    decide,
    parse_spec,
    run_body,
)
from ratline.controller.units import iso, parse_iso, utcnow

log = logging.getLogger(__name__)
RESYNC = timedelta(seconds=60)  # look again at least this often (runs finishing, pruning)
ACTIVE_RECHECK = timedelta(seconds=5)  # while runs are active: their ends free history


def run_info(run: dict[str, Any]) -> RunInfo:
    """What `decide` needs of a WorkflowRun dict."""
    meta = run.get("metadata") or {}
    status = run.get("status") or {}
    created = parse_iso((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME))
    created = created or parse_iso(meta.get("creationTimestamp")) or utcnow()
    return RunInfo(
        name=str(meta.get("name")),
        created=created,
        phase=status.get("phase"),
        finished_at=parse_iso(status.get("finishedAt")),
        uid=str(meta.get("uid") or ""),
    )


def ready(status: str, reason: str, message: str, generation: Any, old: Any) -> dict[str, Any]:
    """The Ready condition, keeping lastTransitionTime while its status holds."""
    prior = next((c for c in old or [] if c.get("type") == "Ready"), None)
    since = prior.get("lastTransitionTime") if prior and prior.get("status") == status else None
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:2048],
        "lastTransitionTime": since or iso(utcnow()),
        "observedGeneration": generation,
    }


class ScheduleDaemons:
    """Per-schedule loops and the events that wake them early."""

    def __init__(self, ctx: Context, api: LifecycleApi) -> None:
        self.ctx = ctx
        self.api = api
        self._wake: dict[str, asyncio.Event] = {}
        self._seen: dict[str, Any] = {}
        self._posting: set[asyncio.Task[None]] = set()

    def poke(self, uid: str, generation: Any) -> None:
        """A spec change (new generation) wakes the schedule's daemon now."""
        if self._seen.get(uid) != generation and uid in self._wake:
            self._wake[uid].set()

    async def tick(self, body: dict[str, Any], now: datetime) -> tuple[Decision | None, datetime]:
        """One pass: decide, act, write status; returns the decision and the next wake."""
        meta, status = body["metadata"], body.get("status") or {}
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
        conditions = status.get("conditions")
        try:
            spec = parse_spec(body.get("spec") or {})
        except ScheduleInvalid as exc:
            invalid = {
                "nextScheduleTime": None,
                "observedGeneration": generation,
                "conditions": [ready("False", exc.reason, str(exc), generation, conditions)],
            }
            await self._patch_if_changed(namespace, name, status, invalid)
            return None, now + RESYNC
        runs = [
            run_info(r) for r in await self.api.runs_labelled(namespace, f"{LABEL_SCHEDULE}={name}")
        ]
        last = parse_iso(status.get("lastScheduleTime"))
        created = parse_iso(meta.get("creationTimestamp")) or now
        decision = decide(now, spec, last, created, runs)
        patch: dict[str, Any] = {"observedGeneration": generation}
        active = list(decision.active)
        if decision.create is not None:
            run = run_body(body, decision.create)
            made = await self.ctx.kube.create_run(namespace, run)
            run_name = run["metadata"]["name"]
            if made:
                log.info("schedule %s/%s fired: created %s", namespace, name, run_name)
                self._emit(meta, "RunCreated", f"created WorkflowRun {run_name}")
            if not any(r.name == run_name for r in active):
                active.append(RunInfo(name=run_name, created=decision.create))
            patch["lastScheduleTime"] = iso(decision.create)
            patch["lastRun"] = run_name
        for doomed in decision.delete:
            await self.api.delete_run(namespace, doomed)
            log.info("schedule %s/%s deleted run %s", namespace, name, doomed)
        prior: dict[str, Any] = next((c for c in conditions or [] if c.get("type") == "Ready"), {})
        if decision.skipped and prior.get("reason") != "Skipped":
            self._emit(meta, "Skipped", decision.skipped)
        patch["nextScheduleTime"] = iso(decision.next_schedule)
        patch["active"] = [{"name": r.name, "uid": r.uid} for r in active[-100:]]
        patch["activeCount"] = len(active)
        if spec.suspend:
            cond = ready("True", "Suspended", "spec.suspend is true", generation, conditions)
        elif decision.skipped:
            cond = ready("True", "Skipped", decision.skipped, generation, conditions)
        else:
            message = f"next firing at {iso(decision.next_schedule)}"
            cond = ready("True", "Scheduled", message, generation, conditions)
        patch["conditions"] = [cond]
        await self._patch_if_changed(namespace, name, status, patch)
        wake = decision.wake or now + RESYNC
        if active:
            wake = min(wake, now + ACTIVE_RECHECK)
        return decision, min(wake, now + RESYNC)

    async def _patch_if_changed(
        self, namespace: str, name: str, status: dict[str, Any], patch: dict[str, Any]
    ) -> None:
        def same(key: str, value: Any) -> bool:
            old = status.get(key)
            if key == "conditions" and old and value:
                strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
                prior = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old]
                return strip == prior
            return bool(old == value)

        if not all(same(k, v) for k, v in patch.items()):
            await self.api.patch_schedule_status(namespace, name, patch)

    def _emit(self, meta: dict[str, Any], reason: str, message: str) -> None:
        involved = {
            "kind": "WorkflowSchedule",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }
        task = asyncio.get_running_loop().create_task(
            self.ctx.kube.post_event(involved, reason, message)
        )
        self._posting.add(task)  # a strong reference until it is done
        task.add_done_callback(self._posting.discard)

    async def loop(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        """The daemon: tick, then sleep until the wake time or a spec change."""
        uid = str(body.metadata["uid"])
        wake = self._wake.setdefault(uid, asyncio.Event())
        try:
            while not stopped:
                snapshot = copy.deepcopy(dict(body))
                self._seen[uid] = snapshot["metadata"].get("generation")
                wake.clear()
                try:
                    _, until = await self.tick(snapshot, utcnow())
                except ApiException as exc:
                    log.warning("schedule %s: Kubernetes API %s; retrying", uid, exc.status)
                    until = utcnow() + timedelta(seconds=5)
                except Exception:  # never let one bad tick end the schedule's daemon
                    log.exception("schedule %s: tick failed; retrying in 30 s", uid)
                    until = utcnow() + timedelta(seconds=30)
                delay = max(0.05, (until - utcnow()).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
        finally:
            self._wake.pop(uid, None)
            self._seen.pop(uid, None)


def register_schedules(
    registry: kopf.OperatorRegistry, ctx: Context, api: LifecycleApi
) -> ScheduleDaemons:
    """Add the WorkflowSchedule daemon and its wake-up handler to `registry`."""
    daemons = ScheduleDaemons(ctx, api)

    @kopf.daemon(GROUP, VERSION, SCHEDULES, registry=registry, cancellation_timeout=5.0)
    async def schedule_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await daemons.loop(body, stopped)

    @kopf.on.event(GROUP, VERSION, SCHEDULES, registry=registry)
    async def schedule_event(**kwargs: Any) -> None:
        meta = kwargs.get("meta") or {}
        if kwargs.get("type") != "DELETED" and meta.get("uid"):
            daemons.poke(str(meta["uid"]), meta.get("generation"))

    return daemons
