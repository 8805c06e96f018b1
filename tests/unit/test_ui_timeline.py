"""The run page's Gantt chart built from hand-made histories (no I/O)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from ratline.store import Event, EventType
from ratline.ui import timeline

T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


class History:
    """Events appended in order, each `dt` seconds after T0."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(
        self, dt: float, type_: EventType, cid: int | None = None, name: str | None = None,
        **payload: Any,
    ) -> History:  # fmt: skip
        self.events.append(
            Event(
                run_id="r",
                seq=len(self.events) + 1,
                time=T0 + timedelta(seconds=dt),
                type=type_,
                command_id=cid,
                name=name,
                payload=payload,
            )
        )
        return self


def at(dt: float) -> datetime:
    return T0 + timedelta(seconds=dt)


def kinds(lane: timeline.Lane) -> list[str]:
    return [b.kind for b in lane.bars]


def test_a_retried_step_has_attempts_with_backoff_between_them() -> None:
    h = History().add(0, EventType.RUN_STARTED, input={})
    h.add(2, EventType.STEP_FAILED, 1, "ship", attempt=1, error={}, retry_at=at(5).isoformat())
    h.add(7, EventType.STEP_COMPLETED, 1, "ship", attempt=2, result=1, duration_ms=1000)
    tl = timeline.build(h.events, now=at(10))
    (lane,) = tl.lanes
    assert kinds(lane) == ["failed", "backoff", "attempt"]
    failed, backoff, ok = lane.bars
    # the failed attempt began at the previous event (no duration is recorded)
    assert (failed.start, failed.end) == (at(0), at(2))
    assert (backoff.start, backoff.end) == (at(2), at(5))
    assert (ok.start, ok.end) == (at(6), at(7))
    assert "attempt 2" in ok.label


def test_a_step_still_running_is_open_until_now() -> None:
    h = History().add(0, EventType.RUN_STARTED).add(1, EventType.STEP_STARTED, 1, "slow")
    (lane,) = timeline.build(h.events, now=at(4)).lanes
    assert kinds(lane) == ["running"]
    assert lane.bars[0].end is None


def test_sleeps_promises_and_children_span_their_wait() -> None:
    h = History().add(0, EventType.RUN_STARTED)
    h.add(1, EventType.TIMER_STARTED, 1, "sleep", fire_at=at(3).isoformat())
    h.add(3, EventType.TIMER_FIRED, 1, "sleep")
    h.add(3, EventType.PROMISE_CREATED, 2, "approval", deadline=at(60).isoformat())
    h.add(9, EventType.PROMISE_RESOLVED, 2, "approval", value=True)
    h.add(9, EventType.CHILD_STARTED, 3, "child", workflow="w")
    h.add(12, EventType.CHILD_COMPLETED, 3, "child", result=1)
    h.add(12, EventType.PROMISE_CREATED, 4, "late")
    tl = timeline.build(h.events, now=at(20))
    sleep, promise, child, late = tl.lanes
    assert [(b.kind, b.start, b.end) for b in sleep.bars] == [("sleep", at(1), at(3))]
    assert [(b.kind, b.start, b.end) for b in promise.bars] == [("promise", at(3), at(9))]
    assert promise.deadline == at(60)
    assert promise.bars[0].label == "resolved"
    assert [(b.kind, b.start, b.end) for b in child.bars] == [("child", at(9), at(12))]
    assert late.bars[0].end is None  # still waiting
    assert tl.start == at(1)  # the first bar, not RunStarted
    assert tl.end == at(20)


def test_compensation_lanes_and_marker() -> None:
    h = History().add(0, EventType.RUN_STARTED)
    h.add(1, EventType.STEP_COMPLETED, 1, "charge", attempt=1, result=1, duration_ms=500)
    h.add(2, EventType.STEP_FAILED, 2, "ship", attempt=1, error={}, retry_at=None)
    h.add(2, EventType.COMPENSATION_STARTED, None, None, reason="failed", steps=["charge"])
    h.add(3, EventType.STEP_COMPLETED, 3, "compensate:charge", attempt=1, duration_ms=100)
    h.add(3, EventType.RUN_FAILED, None, None, error={})
    tl = timeline.build(h.events, now=at(3))
    assert [(lane.name, kinds(lane)) for lane in tl.lanes] == [
        ("charge", ["attempt"]),
        ("ship", ["failed"]),
        ("compensate:charge", ["compensation"]),
    ]
    assert tl.lanes[2].compensation
    assert tl.markers == [(at(2), "compensation")]


def test_state_and_markers_are_not_lanes() -> None:
    h = History().add(0, EventType.RUN_STARTED)
    h.add(1, EventType.STATE_SET, 1, "stage", value="a")
    h.add(1, EventType.MARKER, 2, "patch")
    assert timeline.build(h.events, now=at(2)).lanes == []


def test_the_svg_names_every_lane_and_escapes_names() -> None:
    h = History().add(0, EventType.RUN_STARTED)
    h.add(1, EventType.STEP_COMPLETED, 1, "<b>&x", attempt=1, duration_ms=300)
    h.add(2, EventType.PROMISE_CREATED, 2, "p", deadline=at(2.5).isoformat())
    text = timeline.svg(timeline.build(h.events, now=at(3)), now=at(3))
    assert text.startswith("<svg")
    assert text.endswith("</svg>")
    assert "<b>" not in text
    assert "&lt;b&gt;&amp;x" in text
    assert len(re.findall(r'<g class="lane"', text)) == 2
    assert 'class="deadline"' in text
    assert 'stroke-dasharray="3,2"' in text  # the open promise bar
    assert "style=" not in text  # the CSP forbids inline styles


def test_an_empty_history_draws_a_placeholder() -> None:
    text = timeline.svg(timeline.build([], now=T0), now=T0)
    assert "no steps yet" in text


def test_schedule_rows_tolerate_missing_fields() -> None:
    from ratline.ui.schedules import schedule_rows

    rows = schedule_rows(
        [
            {"metadata": {"name": "z"}, "spec": {"schedule": "0 * * * *", "suspend": True}},
            {
                "metadata": {"name": "a"},
                "spec": {
                    "schedule": "@daily",
                    "timeZone": "Europe/Berlin",
                    "workflowRef": {"name": "hello"},
                },
                "status": {"lastRun": "a-1", "active": [{"name": "a-1"}]},
            },
        ]
    )
    assert [r["name"] for r in rows] == ["a", "z"]
    assert rows[0]["time_zone"] == "Europe/Berlin"
    assert rows[0]["active"] == 1
    assert rows[1]["suspended"] is True
    assert rows[1]["time_zone"] == "UTC"
