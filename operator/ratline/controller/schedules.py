"""WorkflowSchedule logic without I/O: parse a spec, decide what one tick does.

`decide(now, spec, last, created, runs)` is the whole policy (CronJob's): the
latest firing after the last one (or, with a starting deadline, after
`now - deadline`) starts at most once, concurrency says whether it may, and the
history limits say which finished runs go. The kopf wiring in
`schedule_handlers.py` feeds it the live objects and carries out the result;
`ratline schedule trigger` reuses `run_body`. Cron expressions are evaluated by
cronsim and time zones by zoneinfo: nothing here parses cron itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

LABEL_SCHEDULE = "ratline.dev/schedule"
ANNOTATION_SCHEDULED_TIME = "ratline.dev/scheduled-time"
ANNOTATION_TRIGGERED = "ratline.dev/triggered-by"
# cron's @-forms as the five fields they stand for (a lookup, not a parser).
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FORBID_RECHECK = timedelta(seconds=5)  # how soon a held-back firing looks again


class Policy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class ScheduleInvalid(ValueError):
    """The spec cannot be scheduled; `reason` is the Ready condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ScheduleSpec:
    """The parts of `spec` the decision needs, validated."""

    cron: str
    zone: ZoneInfo
    suspend: bool = False
    policy: Policy = Policy.ALLOW
    deadline: timedelta | None = None
    keep_succeeded: int = 3
    keep_failed: int = 1

    def latest_at_or_before(self, when: datetime) -> datetime:
        """The latest firing time <= `when` (cronsim's reverse walk is strictly before)."""
        start = when.astimezone(self.zone) + timedelta(seconds=1)
        return next(CronSim(self.cron, start.replace(microsecond=0), reverse=True)).astimezone(UTC)

    def next_after(self, when: datetime) -> datetime:
        """The first firing time strictly after `when`."""
        return next(CronSim(self.cron, when.astimezone(self.zone))).astimezone(UTC)


def parse_spec(spec: Mapping[str, Any]) -> ScheduleSpec:
    """ScheduleSpec from a WorkflowSchedule's spec; ScheduleInvalid names the field."""
    raw = str(spec.get("schedule") or "").strip()
    cron = _MACROS.get(raw, raw)
    zone_name = str(spec.get("timeZone") or "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleInvalid(
            "UnknownTimeZone", f"spec.timeZone: unknown time zone {zone_name!r}"
        ) from exc
    try:
        next(CronSim(cron, datetime(2000, 1, 1, tzinfo=zone)))
    except (CronSimError, StopIteration) as exc:
        raise ScheduleInvalid(
            "InvalidSchedule", f"spec.schedule: {raw!r} is not a cron expression: {exc}"
        ) from exc
    deadline = spec.get("startingDeadlineSeconds")
    numbers = {
        "startingDeadlineSeconds": deadline,
        "successfulRunsHistoryLimit": spec.get("successfulRunsHistoryLimit", 3),
        "failedRunsHistoryLimit": spec.get("failedRunsHistoryLimit", 1),
    }
    for name, value in numbers.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ScheduleInvalid("InvalidSpec", f"spec.{name} must be an integer >= 0")
    try:
        policy = Policy(spec.get("concurrencyPolicy") or "Allow")
    except ValueError as exc:
        raise ScheduleInvalid(
            "InvalidSpec", "spec.concurrencyPolicy must be Allow, Forbid or Replace"
        ) from exc
    return ScheduleSpec(
        cron=cron,
        zone=zone,
        suspend=bool(spec.get("suspend")),
        policy=policy,
        deadline=None if deadline is None else timedelta(seconds=int(deadline)),
        keep_succeeded=int(numbers["successfulRunsHistoryLimit"] or 0),
        keep_failed=int(numbers["failedRunsHistoryLimit"] or 0),
    )


@dataclass(frozen=True)
class RunInfo:
    """One WorkflowRun of the schedule, as the decision sees it."""

    name: str
    created: datetime
    phase: str | None = None
    finished_at: datetime | None = None
    uid: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed", "Cancelled", "TimedOut")


@dataclass(frozen=True)
class Decision:
    """What one tick does: at most one run to create, runs to delete, when to look again."""

    create: datetime | None = None  # the scheduled time of the run to create
    delete: tuple[str, ...] = ()
    skipped: str | None = None  # why a due firing did not start
    next_schedule: datetime | None = None
    wake: datetime | None = None
    active: tuple[RunInfo, ...] = field(default=())


def decide(
    now: datetime,
    spec: ScheduleSpec,
    last: datetime | None,
    created: datetime,
    runs: Sequence[RunInfo],
) -> Decision:
    """One tick of a schedule (CronJob's semantics; see the module docstring)."""
    active = tuple(sorted((r for r in runs if not r.finished), key=lambda r: r.created))
    delete = list(_beyond_history(spec, runs))
    earliest = last or created
    if spec.deadline is not None:
        earliest = max(earliest, now - spec.deadline)
    due = spec.latest_at_or_before(now)
    next_schedule = None if spec.suspend else spec.next_after(now)
    wake = next_schedule
    if spec.suspend or due <= earliest:
        return Decision(delete=tuple(delete), next_schedule=next_schedule, wake=wake, active=active)
    if active and spec.policy is Policy.FORBID:
        recheck = now + FORBID_RECHECK
        wake = recheck if next_schedule is None else min(next_schedule, recheck)
        return Decision(
            delete=tuple(delete),
            skipped=f"Forbid: {active[-1].name} is still active",
            next_schedule=next_schedule,
            wake=wake,
            active=active,
        )
    if active and spec.policy is Policy.REPLACE:
        delete += [r.name for r in active]
        active = ()
    return Decision(
        create=due, delete=tuple(delete), next_schedule=next_schedule, wake=wake, active=active
    )


def _beyond_history(spec: ScheduleSpec, runs: Sequence[RunInfo]) -> list[str]:
    """Finished runs past the history limits, oldest first."""
    finished = sorted(
        (r for r in runs if r.finished), key=lambda r: (r.finished_at or r.created, r.created)
    )
    succeeded = [r.name for r in finished if r.phase == "Succeeded"]
    failed = [r.name for r in finished if r.phase != "Succeeded"]
    old_ok = succeeded[: max(0, len(succeeded) - spec.keep_succeeded)]
    old_failed = failed[: max(0, len(failed) - spec.keep_failed)]
    return old_ok + old_failed


def run_name(schedule: str, at: datetime, *, manual: bool = False) -> str:
    """Deterministic: the schedule's name and the firing's minute (seconds if manual)."""
    if manual:
        return f"{schedule}-m{int(at.timestamp())}"
    return f"{schedule}-{int(at.timestamp()) // 60}"


def render_input(template: Any, schedule: str, at: datetime) -> Any:
    """The input template with ${scheduledTime} and ${scheduleName} filled in."""
    if isinstance(template, str):
        stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return template.replace("${scheduledTime}", stamp).replace("${scheduleName}", schedule)
    if isinstance(template, dict):
        return {k: render_input(v, schedule, at) for k, v in template.items()}
    if isinstance(template, list):
        return [render_input(v, schedule, at) for v in template]
    return copy.deepcopy(template)


def run_body(
    schedule: Mapping[str, Any], at: datetime, *, manual: str | None = None
) -> dict[str, Any]:
    """The WorkflowRun a firing at `at` creates, owned by the schedule."""
    meta = schedule["metadata"]
    spec = schedule.get("spec") or {}
    name = str(meta["name"])
    labels = {**(spec.get("runLabels") or {}), LABEL_SCHEDULE: name}
    annotations = {ANNOTATION_SCHEDULED_TIME: at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if manual:
        annotations[ANNOTATION_TRIGGERED] = manual
    run_spec: dict[str, Any] = {"workflowRef": {"name": spec["workflowRef"]["name"]}}
    if spec.get("input") is not None:
        run_spec["input"] = render_input(spec["input"], name, at)
    if spec.get("ttlSecondsAfterFinished") is not None:
        run_spec["ttlSecondsAfterFinished"] = spec["ttlSecondsAfterFinished"]
    return {
        "apiVersion": "ratline.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {
            "name": run_name(name, at, manual=manual is not None),
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "ratline.dev/v1alpha1",
                    "kind": "WorkflowSchedule",
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": run_spec,
    }
