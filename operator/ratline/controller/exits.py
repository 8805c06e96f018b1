"""What to do about one ended worker pod: a pure decision, table-tested.

`decide` reads only durable facts: how the pod ended, the run's row in the
store (after projecting it) and the run's published status (`retries` and the
previous `lastExit`). `Workers.handle_exit` then carries the decision out in
an order that survives an operator killed between any two writes: the store
writes (idempotent: set a final status only if not final yet, revoke the
lease) first, then ONE status patch that records the exit as handled together
with the retry count and the backoff, then the pod deletion and the wake-up.
An operator restarted before that patch simply decides again, from the same
facts, and gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ratline.controller.pods import ExitAction, PodExit, backoff_delay
from ratline.store.base import RunRecord, RunStatus

FAILURE_TEXT = {
    ExitAction.INPUT_INVALID: "the input does not fit the workflow's input model",
    ExitAction.ENTRYPOINT_INVALID: "the entrypoint cannot be imported or is not a workflow",
    ExitAction.CONFIG_INVALID: "the worker is missing a required setting (see the pod's log)",
}


@dataclass(frozen=True)
class Limits:
    """The operator's crash-loop settings."""

    max_retries: int
    backoff_initial: float
    backoff_max: float


@dataclass(frozen=True)
class ExitDecision:
    """The outcome of one exit; `fail` is the store error to record (run not final yet)."""

    fail: dict[str, Any] | None = None
    revoke: bool = False  # fence the dead worker's lease
    retries: int = 0  # after a crash: crashes since the run last made progress; else as was
    delay: float | None = None  # start a replacement after this many seconds
    reconcile: bool = False  # look at the run again now (it suspended)
    finished: bool = False  # the run is over: keep (or delete) the last pod
    event: tuple[str, str, bool] | None = None  # (reason, message, warning)


def rests(record: RunRecord | None) -> bool:
    """Finished or blocked: no worker will ever be needed again."""
    return record is not None and record.status.resting


def crashes_so_far(record: RunRecord | None, status: dict[str, Any]) -> int:
    """Crashes counted towards `max_retries`: reset once the history grew since the last exit."""
    retries = int(status.get("retries") or 0)
    before = (status.get("lastExit") or {}).get("historyLength")
    if record is not None and isinstance(before, int) and record.history_length > before:
        return 0
    return retries


def decide(
    ended: PodExit, record: RunRecord | None, status: dict[str, Any], limits: Limits
) -> ExitDecision:
    """The decision for `ended` given the run's (projected) record and published status."""
    action = ended.action
    kept = int(status.get("retries") or 0)  # what status shows unless this exit is a crash
    retries = crashes_so_far(record, status)
    code = "none" if ended.code is None else str(ended.code)
    if action in FAILURE_TEXT:
        message = f"worker pod {ended.pod} exited {ended.code}: {FAILURE_TEXT[action]}"
        if record is not None and record.error and record.status.finished:
            message += f": {record.error.get('message') or ''}"
        fail = None
        if record is not None and not rests(record):
            fail = {"type": action.value, "message": message}
        return ExitDecision(
            fail=fail, retries=kept, finished=True, event=(action.value, message, True)
        )
    if rests(record):
        return ExitDecision(retries=kept, finished=True)
    if action is ExitAction.PROJECT and record is not None and record.status is RunStatus.SUSPENDED:
        return ExitDecision(retries=kept, reconcile=True)
    # A crash, an eviction, a vanished pod, or exit 0 while the store says it still runs.
    if retries >= limits.max_retries:
        message = (
            f"worker pod {ended.pod} ended ({ended.reason}, exit code {code}) and "
            f"{retries} replacement(s) already failed without progress "
            f"(max {limits.max_retries})"
        )
        fail = {"type": "RetriesExhausted", "message": message} if record is not None else None
        return ExitDecision(
            fail=fail,
            revoke=record is not None,
            retries=retries,
            finished=True,
            event=("RetriesExhausted", message, True),
        )
    retries += 1
    delay = backoff_delay(retries, limits.backoff_initial, limits.backoff_max)
    message = (
        f"worker pod {ended.pod} ended ({ended.reason}, exit code {code}); "
        f"replacement {retries} in {delay:g}s"
    )
    return ExitDecision(
        revoke=record is not None,
        retries=retries,
        delay=delay,
        event=("WorkerRestarting", message, True),
    )
