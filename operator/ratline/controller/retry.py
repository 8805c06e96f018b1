"""Retrying a finished run from a step: which history the new run inherits, and seeding it.

`kubectl ratline retry` validates with `retry_plan` and creates a WorkflowRun
with `spec.retryOf: {uid, fromStep}`; the reconciler, the one writer of runs
in the store, creates the new run's row and seeds the inherited history
(`seed`) before any worker pod of it exists. Seeding is idempotent: a row
whose history is still empty is seeded, one with history never again.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ratline.errors import PermanentError
from ratline.store.base import Event, EventType, NewEvent, RunStatus, Store

_RUN_LEVEL = {
    EventType.CANCEL_REQUESTED,
    EventType.COMPENSATION_STARTED,
    EventType.RUN_COMPLETED,
    EventType.RUN_FAILED,
    EventType.RUN_CANCELLED,
    EventType.RUN_TIMED_OUT,
    EventType.RUN_BLOCKED,
}
_STEP_EVENTS = {EventType.STEP_STARTED, EventType.STEP_COMPLETED, EventType.STEP_FAILED}


class RetryRefused(PermanentError):
    """The run cannot be retried as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class RetryPlan:
    """What a retried run starts with: the events before `cut` (a command id)."""

    from_step: str
    cut: int
    events: list[NewEvent]
    kept_steps: list[str]


def retry_plan(history: Sequence[Event], status: RunStatus, from_step: str | None) -> RetryPlan:
    """Choose where a retry restarts and which events the new run inherits.

    Commands are numbered in the order the workflow issues them, so the new run
    inherits RunStarted and every event of a command numbered before the first
    command of `from_step` (default: the first step that failed for good).
    Replay then returns the recorded results of those commands and runs the
    rest for real. Run-level events (cancel, compensation, the outcome) are
    left behind. Steps whose compensation already ran cannot be kept: their
    effect was undone.
    """
    if not status.resting:
        raise RetryRefused(
            f"the run is {status.value}; only finished (failed, cancelled, timed out) or "
            "blocked runs can be retried"
        )
    steps = [e for e in history if e.type in _STEP_EVENTS and e.command_id is not None]
    if from_step is None:
        failed = [
            e for e in steps if e.type is EventType.STEP_FAILED and not e.payload.get("retry_at")
        ]
        if not failed:
            raise RetryRefused(
                "the run has no failed step: name the step to restart at with --from-step"
            )
        from_step = str(failed[0].name)
    starts = [e.command_id for e in steps if e.name == from_step and e.command_id is not None]
    if not starts:
        names = list(dict.fromkeys(str(e.name) for e in steps)) or ["(none)"]
        raise RetryRefused(f"the run has no step {from_step!r}; its steps: {', '.join(names)}")
    cut = min(starts)
    kept = [
        e
        for e in history
        if (e.command_id is None and e.type is EventType.RUN_STARTED)
        or (e.command_id is not None and e.command_id < cut and e.type not in _RUN_LEVEL)
    ]
    kept_steps = list(
        dict.fromkeys(str(e.name) for e in kept if e.type is EventType.STEP_COMPLETED)
    )
    undone = _compensated(history) & set(kept_steps)
    if undone:
        raise RetryRefused(
            f"steps {', '.join(sorted(undone))} were compensated (undone) when the run ended; "
            "restart at or before the first of them with --from-step"
        )
    if not kept or kept[0].type is not EventType.RUN_STARTED:
        raise RetryRefused("the run's history has no RunStarted event; nothing to retry from")
    events = [
        NewEvent(type=e.type, command_id=e.command_id, name=e.name, payload=e.payload) for e in kept
    ]
    return RetryPlan(from_step, cut, events, kept_steps)


def _compensated(history: Sequence[Event]) -> set[str]:
    """Names of steps whose compensation completed."""
    prefix = "compensate:"
    return {
        str(e.name)[len(prefix) :]
        for e in history
        if e.type is EventType.STEP_COMPLETED and str(e.name or "").startswith(prefix)
    }


def with_lineage(events: list[NewEvent], old_uid: str, cut: int) -> list[NewEvent]:
    """Mark the inherited RunStarted with where it came from (shown by `history`)."""
    first = events[0]
    payload = {**first.payload, "retry_of": old_uid, "retry_from_command": cut}
    return [first.model_copy(update={"payload": payload}), *events[1:]]


async def seed(store: Store, new_id: str, old_id: str, from_step: str) -> RetryPlan | None:
    """Copy the inherited history of `old_id` into the (empty) new run `new_id`.

    None if the new run has history already (seeded before, or restarted since).
    The lease is taken for the one append, so it is fenced like any writer.
    """
    if await store.load_history(new_id):
        return None
    old = await store.get_run(old_id)
    if old is None:
        raise RetryRefused(f"spec.retryOf.uid: run {old_id} is not in the store")
    plan = retry_plan(await store.load_history(old_id), old.status, from_step)
    lease = await store.acquire_lease(new_id, f"ratline-retry@{socket.gethostname()}", 60.0)
    try:
        await store.append(lease, with_lineage(plan.events, old_id, plan.cut))
    finally:
        await store.release_lease(lease)
    return plan
