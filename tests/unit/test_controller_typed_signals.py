"""Typed signals and whole-workflow attempts on a cluster, operator side.

A refused payload shows as the SignalRefused condition and one Warning Event per
refusal (even across operator restarts); a corrected payload patched into
`spec.signals` reaches the inbox once, under a name derived from its content;
AttemptFailed shows as `status.attempt` and `status.lastAttemptError`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ratline.controller.projection import HistoryFold, project
from ratline.controller.reconciler import signal_tag
from ratline.store.base import EventType, NewEvent, RunStatus, RunUpdate
from tests.unit.controller_harness import NS, Harness
from tests.unit.kube_fake import Crash
from tests.unit.test_controller_projection import History, record

BAD = {"amount": "lots"}
GOOD = {"amount": 12}
REFUSAL = {
    "field": "amount",
    "message": "amount: Input should be a valid integer",
    "signal": "approval",
    "payload": BAD,
}


def test_signal_tag_is_canonical_and_short() -> None:
    assert signal_tag({"a": 1, "b": [1, 2]}) == signal_tag({"b": [1, 2], "a": 1})
    assert signal_tag(GOOD) != signal_tag(BAD)
    assert len(signal_tag(GOOD)) == 12


def test_refusal_condition_is_true_until_the_promise_resolves() -> None:
    history = History()
    history.add(EventType.PROMISE_CREATED, 1, "approval")
    history.add(EventType.SIGNAL_REFUSED, 1, "approval", **REFUSAL)
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    refused = [n for n in notices if n.reason == "SignalRefused"]
    assert len(refused) == 1
    assert refused[0].warning
    assert refused[0].seq == 2
    assert "field amount" in refused[0].message
    assert "approval" in refused[0].message
    suspended = record(RunStatus.SUSPENDED, waiting_for=["approval"])
    cond = project(suspended, fold).conditions["SignalRefused"]
    assert cond["status"] == "True"
    assert "promise approval" in cond["message"]
    assert "field amount" in cond["message"]
    history.add(EventType.PROMISE_RESOLVED, 1, "approval", value=GOOD)
    fold.apply_all(history.events)
    cond = project(record(RunStatus.RUNNING), fold).conditions["SignalRefused"]
    assert (cond["status"], cond["reason"]) == ("False", "NoRefusal")


def test_no_refusal_no_condition_and_a_second_refusal_is_a_second_notice() -> None:
    history = History()
    history.add(EventType.PROMISE_CREATED, 1, "approval")
    fold = HistoryFold()
    fold.apply_all(history.events)
    assert "SignalRefused" not in project(record(RunStatus.SUSPENDED), fold).conditions
    history.add(EventType.SIGNAL_REFUSED, 1, "approval", **REFUSAL)
    history.add(EventType.SIGNAL_REFUSED, 1, "approval", **{**REFUSAL, "field": "owner"})
    notices = fold.apply_all(history.events)
    assert [n.data["field"] for n in notices] == ["amount", "owner"]
    message = project(record(RunStatus.SUSPENDED), fold).conditions["SignalRefused"]["message"]
    assert "field owner" in message


def test_attempt_failed_sets_the_attempt_and_the_last_error() -> None:
    history = History()
    history.add(EventType.PROMISE_CREATED, 1, "approval")
    fold = HistoryFold()
    fold.apply_all(history.events)
    assert project(record(RunStatus.RUNNING), fold).fields["attempt"] == 1
    assert project(record(RunStatus.RUNNING), fold).fields["lastAttemptError"] is None
    error = {"type": "ValueError", "message": "flaky"}
    history.add(
        EventType.ATTEMPT_FAILED, attempt=1, error=error, retry_at="2030-01-02T03:05:00Z", base=2
    )
    notices = fold.apply_all(history.events)
    assert [n.reason for n in notices] == ["AttemptFailed"]
    assert "attempt 1 failed" in notices[0].message
    assert "flaky" in notices[0].message
    fields = project(record(RunStatus.RUNNING), fold).fields
    assert fields["attempt"] == 2
    assert fields["lastAttemptError"] == "ValueError: flaky"
    assert fields["pendingPromises"] is None, "the failed attempt's waits are over"


async def _refused_run(h: Harness) -> str:
    """A run whose worker refused the bad `approval` payload and suspended on it."""
    h.kube.add_workflow(NS, "wf")
    h.kube.add_run(NS, "r", "wf", signals={"approval": BAD})
    await h.reconcile("r", "create")
    uid = h.key("r").uid
    lease = await h.store.acquire_lease(uid, "r-w1", 30.0)
    events = [
        NewEvent(type=EventType.PROMISE_CREATED, command_id=1, name="approval"),
        NewEvent(type=EventType.SIGNAL_REFUSED, command_id=1, name="approval", payload=REFUSAL),
    ]
    update = RunUpdate(status=RunStatus.SUSPENDED, waiting_for=["approval"], release_lease=True)
    await h.store.append(lease, events, update, consumed_inbox=["approval"])
    await h.op.ctx.projector.refresh(h.key("r"))
    await h.flush("r")
    return uid


def _refusal_events(events: list[tuple[str, str, str]]) -> list[str]:
    return [message for _, reason, message in events if reason == "SignalRefused"]


async def test_refusal_shows_once_and_a_corrected_payload_is_delivered_tagged() -> None:
    h = Harness()
    uid = await _refused_run(h)
    assert h.conditions("r")["SignalRefused"]["status"] == "True"
    assert "field amount" in h.conditions("r")["SignalRefused"]["message"]
    [message] = _refusal_events(await h.posted())
    assert "field amount" in message
    assert h.status("r")["phase"] == "Suspended"

    await h.reconcile("r", "resync")  # same payload: nothing is delivered again
    await h.reconcile("r", "resync")
    assert [i.name for i in await h.store.pending_inbox(uid)] == []
    assert [w for w in h.writes.log if w.startswith("store deliver")] == ["store deliver approval"]
    await h.flush("r")
    assert h.status("r")["delivered"] == ["approval"]

    h.kube.runs[(NS, "r")]["spec"]["signals"]["approval"] = GOOD
    await h.reconcile("r", "spec changed")
    tagged = f"approval#{signal_tag(GOOD)}"
    pending = await h.store.pending_inbox(uid)
    assert [(i.name, i.payload) for i in pending] == [(tagged, GOOD)]
    record = await h.store.get_run(uid)
    assert record is not None
    assert record.wake_at is not None, "the corrected signal wakes it"
    await h.flush("r")
    assert h.status("r")["delivered"] == ["approval", tagged]

    await h.restart()  # a new operator: status says what was reported and delivered
    try:
        await h.reconcile("r", "resume")
        await h.op.ctx.projector.refresh(h.key("r"))
        await h.flush("r")
        assert len(_refusal_events(await h.posted())) == 1, "one Event per refusal"
    finally:
        await h.stop()
    assert [i.name for i in await h.store.pending_inbox(uid)] == [tagged]


@pytest.mark.parametrize("crash_after", [None, 1, 2, 3])
async def test_corrected_payload_goes_in_once_whatever_write_the_operator_died_after(
    crash_after: int | None,
) -> None:
    h = Harness()
    h.start()
    try:
        uid = await _refused_run(h)
        h.kube.runs[(NS, "r")]["spec"]["signals"]["approval"] = GOOD
        if crash_after is not None:
            h.writes.crash_after = len(h.writes.log) + crash_after
        with contextlib.suppress(Crash):
            await h.reconcile("r", "spec changed")
        await h.restart()
        await h.reconcile("r", "resume")
        await h.reconcile("r", "resync")
        await h.flush("r")
    finally:
        await h.stop()
    tagged = f"approval#{signal_tag(GOOD)}"
    item = await h.store.inbox_item(uid, tagged)
    assert item is not None
    assert item.payload == GOOD
    assert [i.name for i in await h.store.pending_inbox(uid)] == [tagged]
    deliveries = [w for w in h.writes.log if w.startswith("store deliver approval#")]
    assert deliveries, "the corrected payload was delivered"


async def test_an_unchanged_payload_is_not_delivered_again_when_status_was_lost() -> None:
    """Only the inbox decides: without `status.delivered` the same payload stays put."""
    h = Harness()
    uid = await _refused_run(h)
    status: dict[str, Any] = h.kube.runs[(NS, "r")]["status"]
    status.pop("delivered", None)
    await h.restart()
    try:
        await h.reconcile("r", "resume")
    finally:
        await h.stop()
    assert await h.store.inbox_item(uid, f"approval#{signal_tag(BAD)}") is None
    assert await h.store.pending_inbox(uid) == []
