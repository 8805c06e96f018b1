"""`ratline list`'s pure parts: times, cursors, merging namespaces' pages, rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ratline.cli.list_runs import (
    Page,
    merge_pages,
    parse_time,
    phase,
    row_data,
    start_cursor,
    table_rows,
)
from ratline.cli.main import build_parser
from ratline.store import RunStatus
from ratline.store.base import RunRecord
from ratline.store.queries import Cursor, RunRow

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def row(run_id: str, minutes_ago: int, ns: str = "a", status: str = "succeeded") -> RunRow:
    at = NOW - timedelta(minutes=minutes_ago)
    record = RunRecord(
        id=run_id,
        namespace=ns,
        name=f"run-{run_id}",
        workflow="wf",
        entrypoint="",
        image="",
        status=RunStatus(status),
        created_at=at,
        updated_at=at,
        finished_at=at + timedelta(seconds=5) if status == "succeeded" else None,
    )
    return RunRow(run=record, steps_done=2, steps_seen=3, current_step="ship")


def test_times_are_rfc3339_or_ages() -> None:
    assert parse_time("2h", "--since", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2026-12-01T00:00:00Z", "--since", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T00:00:00", "--until", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time(None, "--since", NOW) is None
    with pytest.raises(ValueError, match="--until"):
        parse_time("yesterday", "--until", NOW)


def test_until_and_the_page_cursor_combine_to_the_tighter_bound() -> None:
    older = Cursor(created_at=NOW - timedelta(hours=3), id="x")
    until = NOW - timedelta(hours=1)
    assert start_cursor(None, None) is None
    assert start_cursor(older, None) == older
    assert start_cursor(None, until) == Cursor(created_at=until, id="")
    assert start_cursor(older, until) == older
    assert start_cursor(Cursor(created_at=NOW, id="y"), until) == Cursor(created_at=until, id="")


def test_merging_namespaces_keeps_newest_first_and_a_cursor_when_more_exist() -> None:
    a = [row("a1", 1), row("a2", 5)]
    b = [row("b1", 3, ns="b"), row("b2", 7, ns="b")]
    page = merge_pages([(a, False), (b, False)], limit=3, since=None)
    assert [r.run.id for r in page.rows] == ["a1", "b1", "a2"]
    assert page.next == Cursor(created_at=NOW - timedelta(minutes=5), id="a2")
    last = merge_pages([(a, False), (b, False)], limit=10, since=None)
    assert len(last.rows) == 4
    assert last.next is None
    more = merge_pages([(a, True)], limit=10, since=None)
    assert more.next is not None


def test_since_cuts_the_page_and_ends_pagination() -> None:
    rows = [row("new", 1), row("mid", 30), row("old", 90)]
    page = merge_pages([(rows, True)], limit=10, since=NOW - timedelta(minutes=60))
    assert [r.run.id for r in page.rows] == ["new", "mid"]
    assert page.next is None


def test_rows_show_phase_progress_and_whether_the_cr_is_gone() -> None:
    assert phase(RunStatus.TIMED_OUT) == "TimedOut"
    page = Page(rows=(row("u1", 1), row("u2", 2, status="running")), next=None)
    data = row_data(page.rows[0], {"u2"})
    assert data["phase"] == "Succeeded"
    assert data["progress"] == "2/3"
    assert data["workflowRun"] == "gone"
    assert row_data(page.rows[1], {"u2"})["workflowRun"] == "present"
    assert "workflowRun" not in row_data(page.rows[0], None)
    wide = table_rows(page, True, {"u2"})
    assert wide[0][-1] == "gone"
    assert wide[1][3] == "Running"
    assert len(table_rows(page, False, None)[0]) == 7


def test_the_command_parses() -> None:
    args = build_parser().parse_args(
        ["list", "-n", "a", "-n", "b", "--phase", "Succeeded", "-o", "wide", "--limit", "5"]
    )
    assert args.namespaces == ["a", "b"]
    assert args.phase == ["Succeeded"]
    assert args.output == "wide"
