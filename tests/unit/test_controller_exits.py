"""The exit handler's decisions: a table of cases, both arrival orders, and restarts.

cert-manager style: objects before, the event, the expected durable outcome.
The restart tests stop the operator after every single write of handling an
exit (with the background status writer running, as in production) and start
a new one on the same store and API objects; the outcome must not change.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from ratline.controller.exits import Limits, crashes_so_far, decide
from ratline.controller.pods import PodExit
from ratline.store.base import EventType, NewEvent, RunRecord, RunStatus, RunUpdate
from tests.unit.controller_harness import NS, Harness
from tests.unit.kube_fake import Crash

LIMITS = Limits(max_retries=3, backoff_initial=1.0, backoff_max=300.0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rec(status: RunStatus, history: int = 1, error: dict[str, Any] | None = None) -> RunRecord:
    return RunRecord(
        id="u", namespace=NS, name="r", workflow="wf", entrypoint="m:w", image="i",
        status=status, history_length=history, error=error, created_at=T0, updated_at=T0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "record", "status", "fail", "revoke", "retries", "delay", "finished"),
    [
        # a crash of a running run: fence, count, back off
        (1, rec(RunStatus.RUNNING), {}, None, True, 1, 1.0, False),
        (None, rec(RunStatus.RUNNING), {"retries": 2,
         "lastExit": {"historyLength": 1}}, None, True, 3, 4.0, False),
        # progress since the last crash: the count starts again
        (1, rec(RunStatus.RUNNING, history=5), {"retries": 3,
         "lastExit": {"historyLength": 1}}, None, True, 1, 1.0, False),
        # no progress and the budget used: RetriesExhausted, written once
        (1, rec(RunStatus.RUNNING), {"retries": 3, "lastExit": {"historyLength": 1}},
         "RetriesExhausted", True, 3, None, True),
        # exit 0 and the store says it waits: no fencing, reconcile now
        (0, rec(RunStatus.SUSPENDED), {}, None, False, 0, None, False),
        # exit 0 but the store says it still runs: a crash
        (0, rec(RunStatus.RUNNING), {}, None, True, 1, 1.0, False),
        # the run is over, whatever the code; the last crash count stays visible
        (0, rec(RunStatus.SUCCEEDED), {}, None, False, 0, None, True),
        (0, rec(RunStatus.SUCCEEDED, history=9), {"retries": 1,
         "lastExit": {"historyLength": 1}}, None, False, 1, None, True),
        (75, rec(RunStatus.FAILED), {}, None, False, 0, None, True),
        (1, rec(RunStatus.BLOCKED), {}, None, False, 0, None, True),
        # permanent problems: failed once, never retried
        (66, rec(RunStatus.PENDING), {}, "EntrypointInvalid", False, 0, None, True),
        (65, rec(RunStatus.RUNNING), {}, "InputInvalid", False, 0, None, True),
        (2, rec(RunStatus.PENDING), {}, "WorkerConfigInvalid", False, 0, None, True),
        # ... and not written again if the worker already wrote it
        (66, rec(RunStatus.FAILED, error={"type": "EntrypointInvalid", "message": "x"}), {},
         None, False, 0, None, True),
    ],
)  # fmt: skip
def test_exit_decisions(
    code: int | None,
    record: RunRecord,
    status: dict[str, Any],
    fail: str | None,
    revoke: bool,
    retries: int,
    delay: float | None,
    finished: bool,
) -> None:
    decision = decide(PodExit("r-w1", code, "Error"), record, status, LIMITS)
    assert (decision.fail or {}).get("type") == fail
    assert decision.revoke is revoke
    assert decision.retries == retries
    assert decision.delay == delay
    assert decision.finished is finished


def test_retries_without_a_previous_exit_are_kept() -> None:
    assert crashes_so_far(rec(RunStatus.RUNNING, history=9), {"retries": 2}) == 2


async def _running(h: Harness, name: str = "r") -> dict[str, Any]:
    """A run whose first worker pod took the lease and recorded a step; returns the pod."""
    h.kube.add_workflow(NS, "wf")
    h.kube.add_run(NS, name, "wf")
    await h.reconcile(name, "create")
    key = h.key(name)
    lease = await h.store.acquire_lease(key.uid, f"{name}-w1", 30.0)
    await h.store.append(
        lease,
        [NewEvent(type=EventType.STEP_COMPLETED, command_id=1, name="a", payload={})],
        RunUpdate(status=RunStatus.RUNNING),
    )
    assert (NS, f"{name}-w1") in h.kube.pods
    return h.kube.pods[(NS, f"{name}-w1")]


async def _exit_with_restarts(crash_after: int | None, code: int) -> Harness:
    h = Harness()
    h.start()
    try:
        await _running(h)
        pod = h.kube.end_pod(NS, "r-w1", code)
        if crash_after is not None:
            h.writes.crash_after = len(h.writes.log) + crash_after
        with contextlib.suppress(Crash):
            await h.pod_event(pod)
        await h.restart()
        # What a new operator gets: kopf's resume of the run and the pod (if it is left).
        await h.reconcile("r", "resume")
        left = h.kube.pods.get((NS, "r-w1"))
        if left is not None:
            await h.pod_event(left)
        await h.flush("r")
    finally:
        await h.stop()
    return h


def _outcome(h: Harness) -> dict[str, Any]:
    status = h.status("r")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}
    return {
        "phase": status.get("phase"),
        "retries": status.get("retries"),
        "lastExit": (status.get("lastExit") or {}).get("pod"),
        "backoff": bool(status.get("nextAttemptAt")),
        "pods": sorted(name for _, name in h.kube.pods),
        "conditions": conditions,
    }


@pytest.mark.parametrize("crash_after", [None, 1, 2, 3, 4, 5, 6])
async def test_crash_exit_is_handled_once_whatever_write_the_operator_died_after(
    crash_after: int | None,
) -> None:
    h = await _exit_with_restarts(crash_after, code=1)
    outcome = _outcome(h)
    assert outcome["retries"] == 1, outcome
    assert outcome["lastExit"] == "r-w1"
    assert outcome["backoff"], "the replacement must wait for its backoff"
    assert outcome["pods"] == [], "no replacement before the backoff, the dead pod deleted"
    record = await h.store.get_run(h.key("r").uid)
    assert record is not None
    assert record.lease_epoch >= 2, "the dead worker was fenced"
    assert set(h.op.ctx.scheduler.pending(h.key("r").uid)) == {"crash backoff"}


@pytest.mark.parametrize("crash_after", [None, 1, 2, 3, 4])
async def test_entrypoint_invalid_survives_restarts(crash_after: int | None) -> None:
    h = await _exit_with_restarts(crash_after, code=66)
    outcome = _outcome(h)
    assert outcome["phase"] == "Failed"
    assert outcome["conditions"]["EntrypointInvalid"] == ("True", "EntrypointInvalid")
    assert outcome["conditions"]["Stalled"] == ("True", "EntrypointInvalid")
    assert outcome["retries"] == 0


@pytest.mark.parametrize("store_first", [True, False])
async def test_pod_exit_and_store_notification_in_either_order(store_first: bool) -> None:
    """The worker wrote EntrypointInvalid itself, then exited 66."""
    h = Harness()
    pod = await _running(h)
    key = h.key("r")
    error = {"type": "EntrypointInvalid", "message": "no module named m"}
    await h.store.set_status(key.uid, RunUpdate(status=RunStatus.FAILED, error=error))
    pod = h.kube.end_pod(NS, "r-w1", 66)
    if store_first:
        await h.op.ctx.projector.refresh(key)
        await h.flush("r")
        await h.pod_event(pod)
    else:
        await h.pod_event(pod)
        await h.op.ctx.projector.refresh(key)
    await h.flush("r")
    outcome = _outcome(h)
    assert outcome["phase"] == "Failed"
    assert outcome["conditions"]["EntrypointInvalid"][0] == "True"
    assert outcome["conditions"]["Ready"] == ("False", "Failed")
    assert outcome["conditions"]["Stalled"] == ("True", "EntrypointInvalid")
    assert "no module named m" in h.conditions("r")["EntrypointInvalid"]["message"]
    workflow = h.kube.workflows[(NS, "wf")]["status"]["conditions"][0]
    assert (workflow["status"], workflow["reason"]) == ("False", "EntrypointInvalid")
