"""The status projection: history + run record -> WorkflowRun status (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ratline.controller.projection import (
    MAX_STEPS,
    STATE_MAX_BYTES,
    HistoryFold,
    capped_state,
    error_text,
    preview,
    project,
)
from ratline.store.base import Event, EventType, RunRecord, RunStatus

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class History:
    """Builds events with increasing seq, like the store would."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(
        self,
        kind: EventType,
        command_id: int | None = None,
        name: str | None = None,
        **payload: Any,
    ) -> Event:
        seq = len(self.events) + 1
        event = Event(
            run_id="r1",
            seq=seq,
            time=T0 + timedelta(seconds=seq),
            type=kind,
            command_id=command_id,
            name=name,
            payload=payload,
        )
        self.events.append(event)
        return event


def record(status: RunStatus, **extra: Any) -> RunRecord:
    base: dict[str, Any] = {
        "id": "r1",
        "namespace": "ns",
        "name": "run",
        "workflow": "wf",
        "entrypoint": "m:f",
        "image": "img",
        "status": status,
        "created_at": T0,
        "updated_at": T0,
        "started_at": T0,
    }
    base.update(extra)
    return RunRecord(**base)


def test_no_record_is_pending() -> None:
    projection = project(None, HistoryFold())
    assert projection.phase == "Pending"
    assert projection.fields["progress"] == "0/0"


def test_phases_follow_run_status() -> None:
    expected = {
        RunStatus.PENDING: "Pending",
        RunStatus.RUNNING: "Running",
        RunStatus.SUSPENDED: "Suspended",
        RunStatus.SUCCEEDED: "Succeeded",
        RunStatus.FAILED: "Failed",
        RunStatus.CANCELLED: "Cancelled",
        RunStatus.TIMED_OUT: "TimedOut",
        RunStatus.BLOCKED: "Failed",
    }
    for status, phase in expected.items():
        assert project(record(status), HistoryFold()).phase == phase, status


def test_three_steps_progress_and_result_preview() -> None:
    history = History()
    history.add(EventType.RUN_STARTED, input={"x": 1}, workflow="wf")
    for cid, name in enumerate(["fetch", "charge", "ship"], start=1):
        history.add(EventType.STEP_COMPLETED, cid, name, result=cid, attempt=1, duration_ms=3)
    history.add(EventType.RUN_COMPLETED, result={"ok": True})
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    rec = record(RunStatus.SUCCEEDED, result={"ok": True}, history_length=5, finished_at=T0)
    fields = project(rec, fold).fields
    assert fields["phase"] == "Succeeded"
    assert fields["progress"] == "3/3"
    assert [s["name"] for s in fields["steps"]] == ["fetch", "charge", "ship"]
    assert all(s["state"] == "Completed" for s in fields["steps"])
    assert json.loads(fields["result"]) == {"ok": True}
    assert fields["historyLength"] == 5
    assert fields["finishedAt"] == "2030-01-02T03:04:05Z"
    assert fields["waiting"] is None
    assert [n.reason for n in notices] == ["Completed"]


def test_incremental_fold_equals_full_fold_and_ignores_replays() -> None:
    history = History()
    for cid in range(1, 8):
        history.add(EventType.STEP_COMPLETED, cid, f"s{cid}", attempt=1)
    full = HistoryFold()
    full.apply_all(history.events)
    parts = HistoryFold()
    parts.apply_all(history.events[:3])
    parts.apply_all(history.events[:5])  # overlapping reload: already-seen seqs are skipped
    parts.apply_all(history.events[5:])
    rec = record(RunStatus.RUNNING, history_length=7)
    assert project(rec, parts).fields == project(rec, full).fields
    assert parts.steps_completed == 7


def test_ten_thousand_steps_keep_a_small_status() -> None:
    history = History()
    for cid in range(1, 10_001):
        history.add(EventType.STEP_COMPLETED, cid, f"step-{cid}", attempt=1)
    fold = HistoryFold()
    fold.apply_all(history.events)
    fields = project(record(RunStatus.RUNNING, history_length=10_000), fold).fields
    assert fields["progress"] == "10000/10000"
    assert len(fields["steps"]) == MAX_STEPS
    assert fields["stepsOmitted"] == 10_000 - MAX_STEPS
    assert fields["steps"][-1]["name"] == "step-10000"
    assert len(json.dumps(fields)) < 20_000


def test_out_of_order_fan_out_completions_count_each_step_once() -> None:
    history = History()
    for cid in range(1, 61):  # more than the window: early ones get evicted
        history.add(
            EventType.STEP_FAILED,
            cid,
            f"item-{cid}",
            attempt=1,
            error={"type": "E", "message": "boom"},
            retry_at=(T0 + timedelta(minutes=1)).isoformat(),
        )
    for cid in reversed(range(1, 61)):
        history.add(EventType.STEP_COMPLETED, cid, f"item-{cid}", attempt=2)
    history.add(EventType.STEP_COMPLETED, 60, "item-60", attempt=2)  # a duplicate: ignored
    fold = HistoryFold()
    fold.apply_all(history.events)
    assert fold.steps_seen == 60
    assert fold.steps_completed == 60
    assert fold.retry_waits == {}
    assert project(record(RunStatus.RUNNING), fold).fields["progress"] == "60/60"


def test_retrying_step_shows_attempts_error_and_sleep() -> None:
    retry_at = T0 + timedelta(seconds=30)
    history = History()
    history.add(EventType.STEP_COMPLETED, 1, "reserve", attempt=1)
    history.add(
        EventType.STEP_FAILED,
        2,
        "charge",
        attempt=2,
        error={"type": "HTTPError", "message": "503"},
        retry_at=retry_at.isoformat(),
    )
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    fields = project(record(RunStatus.SUSPENDED), fold).fields
    step = fields["steps"][-1]
    assert step == {
        "name": "charge",
        "commandId": 2,
        "state": "Retrying",
        "attempts": 2,
        "startedAt": "2030-01-02T03:04:07Z",
        "error": "HTTPError: 503",
    }
    assert fields["currentStep"] == "charge"
    assert fields["progress"] == "1/2"
    assert fields["sleepingUntil"] == "2030-01-02T03:04:35Z"
    assert fields["waiting"] == "timer until 2030-01-02T03:04:35Z"
    assert notices[0].reason == "StepRetrying"
    assert notices[0].warning


def test_final_step_failure_notice() -> None:
    history = History()
    history.add(
        EventType.STEP_FAILED,
        1,
        "charge",
        attempt=3,
        error={"type": "ValueError", "message": "no"},
        retry_at=None,
    )
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    assert fold.steps[1].state == "Failed"
    assert [n.reason for n in notices] == ["StepFailed"]
    assert "after 3 attempt(s)" in notices[0].message


def test_promise_wait_and_resolution() -> None:
    deadline = T0 + timedelta(hours=1)
    history = History()
    history.add(EventType.PROMISE_CREATED, 1, "approval", deadline=deadline.isoformat())
    fold = HistoryFold()
    waiting = fold.apply_all(history.events)
    fields = project(record(RunStatus.SUSPENDED, waiting_for=["approval"]), fold).fields
    assert fields["pendingPromises"] == [
        {"name": "approval", "since": "2030-01-02T03:04:06Z", "deadline": "2030-01-02T04:04:05Z"}
    ]
    assert fields["waiting"] == "signal approval"
    assert waiting[0].reason == "Waiting"
    history.add(EventType.PROMISE_RESOLVED, 1, "approval", value={"by": "ann"})
    resolved = fold.apply_all(history.events)
    assert [n.reason for n in resolved] == ["SignalReceived"]
    assert resolved[0].data == {"name": "approval", "verb": "resolved"}
    assert project(record(RunStatus.RUNNING), fold).fields["pendingPromises"] is None


def test_timer_sleep_then_fire() -> None:
    fire_at = T0 + timedelta(days=1)
    history = History()
    history.add(EventType.TIMER_STARTED, 1, "sleep", fire_at=fire_at.isoformat())
    fold = HistoryFold()
    fold.apply_all(history.events)
    assert project(record(RunStatus.SUSPENDED), fold).fields["sleepingUntil"] == iso_z(fire_at)
    history.add(EventType.TIMER_FIRED, 1, "sleep")
    fold.apply_all(history.events)
    assert project(record(RunStatus.RUNNING), fold).fields["sleepingUntil"] is None


def iso_z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_state_is_capped() -> None:
    history = History()
    history.add(EventType.STATE_SET, 1, "stage", value="billing")
    history.add(EventType.STATE_SET, 2, "blob", value="x" * 50_000)
    for i in range(300):
        history.add(EventType.STATE_SET, 3 + i, f"k{i:03}", value="v" * 100)
    fold = HistoryFold()
    fold.apply_all(history.events)
    state = project(record(RunStatus.RUNNING), fold).fields["state"]
    assert state["stage"] == "billing"
    assert isinstance(state["blob"], str)
    assert len(state["blob"]) <= 256
    assert state["_omitted"] > 0
    assert len(json.dumps(state)) <= STATE_MAX_BYTES + 100


def test_capped_state_small_is_unchanged() -> None:
    assert capped_state({"a": 1, "b": [1, 2]}) == {"a": 1, "b": [1, 2]}


def test_blocked_run_is_failed_with_the_diff() -> None:
    history = History()
    history.add(
        EventType.RUN_BLOCKED,
        expected={"kind": "step", "name": "charge", "command_id": 2},
        recorded={"kind": "step", "name": "reserve", "command_id": 2},
    )
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    projection = project(record(RunStatus.BLOCKED), fold)
    assert projection.phase == "Failed"
    condition = projection.conditions["NonDeterministic"]
    assert condition["status"] == "True"
    assert "charge" in condition["message"]
    assert "reserve" in condition["message"]
    assert notices[0].reason == "NonDeterministic"


def test_failed_run_error_preview_names_the_field() -> None:
    rec = record(
        RunStatus.FAILED,
        error={"type": "InputInvalid", "message": "value is not an int", "field": "amount"},
    )
    projection = project(rec, HistoryFold())
    assert projection.fields["error"] == "InputInvalid: value is not an int (field amount)"
    assert projection.conditions["Finished"]["reason"] == "Failed"


def test_child_started_and_completed() -> None:
    history = History()
    history.add(
        EventType.CHILD_STARTED,
        3,
        "parent-child-3",
        workflow="sub",
        input={"n": 1},
        promise="child:3",
    )
    fold = HistoryFold()
    notices = fold.apply_all(history.events)
    assert notices[0].reason == "ChildStarted"
    assert notices[0].data["promise"] == "child:3"
    assert "parent-child-3" in fold.children
    history.add(EventType.CHILD_COMPLETED, 3, "parent-child-3", result=2)
    fold.apply_all(history.events)
    assert fold.children == {}


def test_child_named_by_run_name_is_settled_by_its_promise() -> None:
    history = History()
    history.add(
        EventType.CHILD_STARTED,
        2,
        "sub",
        workflow="sub",
        input=None,
        promise="child:2",
        run_name="parent-sub-2",
    )
    fold = HistoryFold()
    fold.apply_all(history.events)
    assert list(fold.children) == ["parent-sub-2"]
    history.add(EventType.PROMISE_RESOLVED, 2, "child:2", value=5)
    fold.apply_all(history.events)
    assert fold.children == {}


def test_previews_are_capped() -> None:
    assert len(preview("x" * 10_000)) == 1024
    assert preview({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert error_text(None) == ""
