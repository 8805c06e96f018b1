"""`spec.retryOf`: the reconciler creates the retried run's row and seeds its history,
once, before its first worker pod, even when the operator dies in between."""

from __future__ import annotations

import contextlib

import pytest

from ratline.store.base import EventType, NewEvent, NewRun, RunStatus, RunUpdate
from tests.unit.controller_harness import NS, Harness
from tests.unit.kube_fake import Crash


async def _failed_run(h: Harness) -> str:
    """A run that completed `reserve`, then failed for good in `charge`."""
    old = "old-uid"
    await h.store.create_run(NewRun(id=old, namespace=NS, name="old", workflow="wf"))
    lease = await h.store.acquire_lease(old, "w", 30.0)
    events = [
        NewEvent(type=EventType.RUN_STARTED, payload={"input": {}}),
        NewEvent(type=EventType.STEP_COMPLETED, command_id=1, name="reserve", payload={}),
        NewEvent(type=EventType.STEP_FAILED, command_id=2, name="charge", payload={}),
        NewEvent(type=EventType.RUN_FAILED, payload={"error": {"type": "X"}}),
    ]
    await h.store.append(lease, events, RunUpdate(status=RunStatus.FAILED, release_lease=True))
    return old


@pytest.mark.parametrize("crash_after", [None, 1, 2])
async def test_retry_of_is_seeded_once_before_the_first_pod(crash_after: int | None) -> None:
    h = Harness()
    old = await _failed_run(h)
    h.kube.add_workflow(NS, "wf")
    h.kube.add_run(NS, "again", "wf", retryOf={"uid": old, "fromStep": "charge"})
    if crash_after is not None:
        h.writes.crash_after = len(h.writes.log) + crash_after
    with contextlib.suppress(Crash):
        await h.reconcile("again", "create")
    await h.restart()
    await h.reconcile("again", "resume")
    await h.stop()

    uid = h.key("again").uid
    history = await h.store.load_history(uid)
    assert [(e.type, e.name) for e in history] == [
        (EventType.RUN_STARTED, None),
        (EventType.STEP_COMPLETED, "reserve"),
    ]
    assert history[0].payload["retry_of"] == old
    record = await h.store.get_run(uid)
    assert record is not None
    assert record.workflow == "wf"  # the pinned Workflow, as for any run
    assert record.image == "img:1"
    assert (NS, "again-w1") in h.kube.pods


async def test_retry_of_an_unknown_run_is_an_invalid_spec() -> None:
    h = Harness()
    h.kube.add_workflow(NS, "wf")
    h.kube.add_run(NS, "again", "wf", retryOf={"uid": "nope", "fromStep": "charge"})
    with pytest.raises(Exception, match=r"spec\.retryOf"):
        await h.reconcile("again", "create")
    await h.flush("again")
    assert h.conditions("again")["InvalidSpec"]["status"] == "True"
    assert h.conditions("again")["Stalled"]["reason"] == "InvalidSpec"
    assert (NS, "again-w1") not in h.kube.pods
