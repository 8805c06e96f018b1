"""Formatting of `ratline history` / `describe`: tables, previews, the step timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from ratline.cli.output import (
    HISTORY_HEADERS,
    describe_data,
    describe_text,
    dump,
    duration,
    event_line,
    history_data,
    history_rows,
    preview,
    table,
    timeline,
)
from ratline.store import Event, EventType, RunRecord, RunStatus

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RUN_ID = "0a1b2c3d-0000-4000-8000-000000000001"


def ev(seq: int, type_: EventType, cmd: int | None = None, name: str | None = None,
       at: float = 0.0, **payload: Any) -> Event:  # fmt: skip
    return Event(
        run_id=RUN_ID,
        seq=seq,
        time=T0 + timedelta(seconds=at),
        type=type_,
        command_id=cmd,
        name=name,
        payload=payload,
    )


HISTORY = [
    ev(1, EventType.RUN_STARTED, input={"order": 42}, workflow="order"),
    ev(2, EventType.STEP_COMPLETED, 1, "reserve", at=2.0, result="r-1", attempt=1,
       duration_ms=1500),
    ev(3, EventType.STEP_FAILED, 2, "charge", at=3.0, attempt=1,
       error={"type": "IOError", "message": "timeout"}, retry_at="2026-03-01T12:00:05+00:00"),
    ev(4, EventType.STEP_COMPLETED, 2, "charge", at=6.0, result={"paid": True}, attempt=2,
       duration_ms=1000),
    ev(5, EventType.TIMER_STARTED, 3, "sleep", at=6.0, fire_at="2026-03-01T13:00:06+00:00"),
    ev(6, EventType.TIMER_FIRED, 3, "sleep", at=3606.0),
    ev(7, EventType.PROMISE_CREATED, 4, "approval", at=3606.0, deadline=None),
    ev(8, EventType.STEP_FAILED, 5, "ship", at=3700.0, attempt=3,
       error={"type": "NonRetryableError", "message": "no address"}, retry_at=None),
    ev(9, EventType.RUN_FAILED, at=3700.0,
       error={"type": "StepFailedError", "message": "step ship failed"}),
]  # fmt: skip


def test_table_aligns_columns_and_uppercases_headers() -> None:
    text = table(("name", "phase"), [["a", "Running"], ["longer-name", None]])
    lines = text.split("\n")
    assert lines[0] == "NAME          PHASE"
    assert lines[1] == "a             Running"
    assert lines[2] == "longer-name"  # trailing spaces stripped, None shown empty


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (0.0001, "<1ms"), (0.25, "250ms"), (12, "12s"), (184, "3m4s"), (120, "2m"),
     (7500, "2h5m"), (3 * 86400 + 4 * 3600, "3d4h"), (86400, "1d")],
)  # fmt: skip
def test_duration_reads_like_kubectl(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_preview_cuts_long_values_on_one_line() -> None:
    assert preview({"b": 1, "a": "x"}) == '{"a": "x", "b": 1}'
    long = preview("word " * 50, limit=20)
    assert len(long) == 20
    assert long.endswith("…")
    assert "\n" not in preview("two\nlines")


def test_history_rows_summarise_every_event() -> None:
    rows = history_rows(HISTORY)
    assert len(rows) == len(HISTORY)
    assert len(rows[0]) == len(HISTORY_HEADERS)
    by_seq = {row[0]: row for row in rows}
    assert by_seq[1][2:] == ["RunStarted", "", "", 'input={"order": 42}']
    assert by_seq[2][5] == "attempt 1 in 1s: r-1"
    assert by_seq[3][5] == ("attempt 1: IOError: timeout, retry at 2026-03-01T12:00:05+00:00")
    assert by_seq[8][5].endswith("no retry left")
    assert by_seq[7][5] == "no deadline"
    assert by_seq[9][5] == "StepFailedError: step ship failed"
    assert by_seq[2][1] == "2026-03-01T12:00:02Z"


def test_history_json_and_yaml_keep_store_fields() -> None:
    data = history_data(HISTORY)
    as_json = json.loads(dump(data, "json"))
    as_yaml = yaml.safe_load(dump(data, "yaml"))
    assert as_json == as_yaml
    assert as_json[3]["payload"]["result"] == {"paid": True}
    assert as_json[3]["type"] == "StepCompleted"
    assert as_json[3]["seq"] == 4


def test_dump_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="table, json, yaml"):
        dump({}, "xml")


def test_event_line_for_local_runs() -> None:
    assert event_line(HISTORY[1]) == "[   2] StepCompleted reserve: attempt 1 in 1s: r-1"
    assert event_line(HISTORY[5]) == "[   6] TimerFired sleep"


def test_timeline_has_one_entry_per_command_in_order() -> None:
    entries = timeline(HISTORY)
    assert [(e.command_id, e.kind, e.name, e.state) for e in entries] == [
        (1, "step", "reserve", "Completed"),
        (2, "step", "charge", "Completed"),
        (3, "timer", "sleep", "Done"),
        (4, "promise", "approval", "Waiting"),
        (5, "step", "ship", "Failed"),
    ]
    reserve, charge, sleep, approval, ship = entries
    # a completed step's start is its commit time minus its recorded duration
    assert reserve.started_at == T0 + timedelta(seconds=0.5)
    assert reserve.seconds == pytest.approx(1.5)
    assert charge.attempts == 2
    assert charge.started_at == T0 + timedelta(seconds=3)  # first seen at its failed attempt
    assert sleep.seconds == pytest.approx(3600)
    assert approval.finished_at is None
    assert ship.attempts == 3
    assert ship.detail == "NonRetryableError: no address"


def test_retrying_step_stays_open() -> None:
    (entry,) = timeline(HISTORY[2:3])
    assert entry.state == "Retrying"
    assert entry.finished_at is None


def _record(**extra: Any) -> RunRecord:
    base: dict[str, Any] = {
        "id": RUN_ID, "namespace": "shop", "name": "order-42", "workflow": "order",
        "entrypoint": "shop:order", "image": "shop:1", "status": RunStatus.FAILED,
        "error": {"type": "StepFailedError", "message": "step ship failed"},
        "history_length": 9, "created_at": T0, "updated_at": T0,
    }  # fmt: skip
    base.update(extra)
    return RunRecord(**base)


RUN_OBJ = {
    "metadata": {"name": "order-42", "namespace": "shop", "uid": RUN_ID},
    "spec": {"workflowRef": {"name": "order"}},
    "status": {
        "phase": "Failed",
        "progress": "2/3",
        "conditions": [{"type": "Ready", "status": "False", "reason": "Failed", "message": "x"}],
    },
}


def test_describe_text_shows_header_store_conditions_and_timeline() -> None:
    data = describe_data(RUN_OBJ, _record(), timeline(HISTORY))
    text = describe_text(data)
    assert "Phase:       Failed (2/3)" in text
    assert "Store:       failed, 9 events" in text
    assert "Error:       StepFailedError: step ship failed" in text
    assert "Ready" in text.split("Conditions:")[1]
    timeline_part = text.split("Timeline:")[1]
    assert (
        timeline_part.index("reserve") < timeline_part.index("charge") < timeline_part.index("ship")
    )
    assert "1.5" not in timeline_part  # durations are human: 1s, 1h
    assert "1h" in timeline_part


def test_describe_without_a_store_record_says_so() -> None:
    data = describe_data({"metadata": {"name": "x"}}, None, [])
    text = describe_text(data)
    assert "no record yet" in text
    assert "(no steps yet)" in text
    assert data["phase"] == "Pending"


def test_describe_data_is_plain_json() -> None:
    data = describe_data(RUN_OBJ, _record(), timeline(HISTORY))
    again = json.loads(dump(data, "json"))
    assert again["store"]["status"] == "failed"
    assert again["timeline"][0]["started_at"] == "2026-03-01T12:00:00Z"
    assert again["timeline"][0]["seconds"] == pytest.approx(1.5)
    assert yaml.safe_load(dump(data, "yaml"))["uid"] == RUN_ID
