"""The WorkflowSchedule policy (`schedules.decide`) on tables, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ratline.controller.schedules import (
    ANNOTATION_SCHEDULED_TIME,
    FORBID_RECHECK,
    LABEL_SCHEDULE,
    Policy,
    RunInfo,
    ScheduleInvalid,
    decide,
    parse_spec,
    render_input,
    run_body,
    run_name,
)


def at(hhmm: str, day: int = 2) -> datetime:
    hour, minute = hhmm.split(":")
    return datetime(2026, 12, day, int(hour), int(minute), tzinfo=UTC)


CREATED = at("00:00")


def run(name: str, created: str, phase: str | None = None, finished: str | None = None) -> RunInfo:
    return RunInfo(
        name=name,
        created=at(created),
        phase=phase,
        finished_at=at(finished) if finished else None,
    )


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "* * *"}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "* * * * *", "timeZone": "Mars/Olympus"}, "UnknownTimeZone", "spec.timeZone"),
        ({"schedule": "* * * * *", "startingDeadlineSeconds": -1}, "InvalidSpec", "spec.starting"),
        ({"schedule": "* * * * *", "failedRunsHistoryLimit": -2}, "InvalidSpec", "spec.failed"),
        ({"schedule": "* * * * *", "concurrencyPolicy": "Sometimes"}, "InvalidSpec", "spec.conc"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(ScheduleInvalid) as err:
        parse_spec(spec)
    assert err.value.reason == reason
    assert str(err.value).startswith(field)


def test_macros_and_defaults() -> None:
    spec = parse_spec({"schedule": "@hourly"})
    assert spec.cron == "0 * * * *"
    assert (spec.policy, spec.keep_succeeded, spec.keep_failed, spec.deadline) == (
        Policy.ALLOW,
        3,
        1,
        None,
    )
    assert spec.next_after(at("01:30")) == at("02:00")


def test_time_zone_shifts_firings_and_follows_dst() -> None:
    spec = parse_spec({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"})
    assert spec.next_after(at("00:00")) == at("08:00")  # CET is UTC+1 in December
    summer = datetime(2026, 7, 1, tzinfo=UTC)
    assert spec.next_after(summer) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # CEST


# (now, spec extras, last schedule, runs) -> (create, delete, skipped?, next schedule)
TABLE: list[tuple[str, str, dict[str, Any], str | None, list[RunInfo], Any]] = [
    ("not due yet", "00:00", {}, None, [], (None, (), False, "00:05")),
    ("first firing", "00:05", {}, None, [], ("00:05", (), False, "00:10")),
    ("already fired this one", "00:07", {}, "00:05", [], (None, (), False, "00:10")),
    (
        "after downtime: only the latest missed firing, once",
        "01:02",
        {},
        "00:05",
        [],
        ("01:00", (), False, "01:05"),
    ),
    (
        "missed beyond the deadline: skipped",
        "01:04",
        {"startingDeadlineSeconds": 60},
        "00:05",
        [],
        (None, (), False, "01:05"),
    ),
    (
        "missed within the deadline: started late",
        "01:04",
        {"startingDeadlineSeconds": 300},
        "00:05",
        [],
        ("01:00", (), False, "01:05"),
    ),
    ("suspended: nothing", "00:05", {"suspend": True}, None, [], (None, (), False, None)),
    (
        "Allow: starts while one runs",
        "00:10",
        {},
        "00:05",
        [run("s-1", "00:05", "Running")],
        ("00:10", (), False, "00:15"),
    ),
    (
        "Forbid: skips while one runs",
        "00:10",
        {"concurrencyPolicy": "Forbid"},
        "00:05",
        [run("s-1", "00:05", "Suspended")],
        (None, (), True, "00:15"),
    ),
    (
        "Forbid: starts once the earlier one finished",
        "00:10",
        {"concurrencyPolicy": "Forbid"},
        "00:05",
        [run("s-1", "00:05", "Succeeded", "00:06")],
        ("00:10", (), False, "00:15"),
    ),
    (
        "Replace: deletes the active run",
        "00:10",
        {"concurrencyPolicy": "Replace"},
        "00:05",
        [run("s-1", "00:05", "Running")],
        ("00:10", ("s-1",), False, "00:15"),
    ),
    (
        "history limits keep the newest finished of each kind",
        "00:12",
        {"successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 1},
        "00:10",
        [
            run("ok-1", "00:00", "Succeeded", "00:01"),
            run("ok-2", "00:05", "Succeeded", "00:06"),
            run("bad-1", "00:01", "Failed", "00:02"),
            run("bad-2", "00:02", "TimedOut", "00:03"),
            run("bad-3", "00:03", "Cancelled", "00:04"),
            run("live", "00:10", "Running"),
        ],
        (None, ("ok-1", "bad-1", "bad-2"), False, "00:15"),
    ),
    (
        "limit 0 deletes every finished run, even while suspended",
        "00:12",
        {"successfulRunsHistoryLimit": 0, "suspend": True},
        "00:10",
        [run("ok-1", "00:00", "Succeeded", "00:01")],
        (None, ("ok-1",), False, None),
    ),
]


@pytest.mark.parametrize(
    ("now", "extra", "last", "runs", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decide(
    now: str, extra: dict[str, Any], last: str | None, runs: list[RunInfo], expected: Any
) -> None:
    create, delete, skipped, next_schedule = expected
    spec = parse_spec({"schedule": "*/5 * * * *", **extra})
    decision = decide(at(now), spec, at(last) if last else None, CREATED, runs)
    assert decision.create == (at(create) if create else None)
    assert decision.delete == delete
    assert bool(decision.skipped) is skipped
    assert decision.next_schedule == (at(next_schedule) if next_schedule else None)


def test_forbid_looks_again_soon_and_the_held_firing_expires_with_its_deadline() -> None:
    spec = parse_spec(
        {"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 60}
    )
    active = [run("s-1", "00:05", "Running")]
    held = decide(at("00:10"), spec, at("00:05"), CREATED, active)
    assert held.create is None
    assert held.wake == at("00:10") + FORBID_RECHECK
    assert [r.name for r in held.active] == ["s-1"]
    done = [run("s-1", "00:05", "Succeeded", "00:11")]
    assert decide(at("00:10") + timedelta(seconds=30), spec, at("00:05"), CREATED, done).create == (
        at("00:10")
    )
    assert decide(at("00:12"), spec, at("00:05"), CREATED, done).create is None


def test_a_schedule_does_not_fire_for_times_before_it_existed() -> None:
    spec = parse_spec({"schedule": "*/5 * * * *"})
    assert decide(at("00:07"), spec, None, at("00:06"), []).create is None
    assert decide(at("00:10"), spec, None, at("00:06"), []).create == at("00:10")


def test_run_names_are_deterministic_per_firing() -> None:
    assert run_name("nightly", at("00:05")) == run_name("nightly", at("00:05"))
    assert run_name("nightly", at("00:05")) != run_name("nightly", at("00:10"))
    assert run_name("nightly", at("00:05")) == f"nightly-{int(at('00:05').timestamp()) // 60}"
    assert run_name("nightly", at("00:05"), manual=True).startswith("nightly-m")


def test_run_body_carries_input_labels_owner_and_ttl() -> None:
    schedule = {
        "metadata": {"name": "nightly", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "workflowRef": {"name": "report"},
            "input": {"day": "${scheduledTime}", "tags": ["${scheduleName}", 3]},
            "runLabels": {"team": "data"},
            "ttlSecondsAfterFinished": 60,
        },
    }
    body = run_body(schedule, at("00:05"))
    meta = body["metadata"]
    assert meta["labels"] == {"team": "data", LABEL_SCHEDULE: "nightly"}
    assert meta["annotations"][ANNOTATION_SCHEDULED_TIME] == "2026-12-02T00:05:00Z"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert body["spec"] == {
        "workflowRef": {"name": "report"},
        "input": {"day": "2026-12-02T00:05:00Z", "tags": ["nightly", 3]},
        "ttlSecondsAfterFinished": 60,
    }


def test_render_input_leaves_other_values_alone() -> None:
    assert render_input({"n": 1, "b": None, "s": "x"}, "s", at("00:00")) == {
        "n": 1,
        "b": None,
        "s": "x",
    }
