"""Rendering for the `ratline` sub-commands: tables, JSON/YAML, step timelines.

Pure functions over store records and WorkflowRun dicts, so the formatting is
unit tested without a cluster or a database; `runs.py` and `run_local.py` do
the I/O and call these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml

from ratline.controller import projection, units
from ratline.store.base import COMMAND_KIND, Event, EventType, RunRecord

FORMATS = ("table", "json", "yaml")
PREVIEW = 60  # characters of a payload shown in a table cell

_STEP_EVENTS = {EventType.STEP_STARTED, EventType.STEP_COMPLETED, EventType.STEP_FAILED}


def preview(value: Any, limit: int = PREVIEW) -> str:
    """`projection.preview` with the table cell's width as default."""
    return projection.preview(value, limit)


def iso(value: datetime | None) -> str:
    """RFC 3339 time for tables (`units.iso`); empty when unknown."""
    return units.iso(value) or ""


def duration(seconds: float | None) -> str:
    """Human duration like kubectl prints ages: 850ms, 12s, 3m4s, 2h5m, 3d4h."""
    if seconds is None:
        return ""
    if seconds < 0.001:
        return "<1ms"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """kubectl-style columns: upper-case headers, left aligned, three spaces apart."""
    cells = [[str(h).upper() for h in headers]]
    cells += [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def dump(data: Any, fmt: str) -> str:
    """`json` (indented, keys sorted) or `yaml` (block style) of plain data."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(_plain(data), sort_keys=True, default_flow_style=False).rstrip()
    raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")


def _plain(data: Any) -> Any:
    """YAML-safe copy: datetimes as ISO strings, everything else as JSON would have it."""
    return json.loads(json.dumps(data, default=str))


# -- history ---------------------------------------------------------------------------------


def event_summary(event: Event) -> str:
    """What an event says, in a few words (the DETAILS column and `ratline run` lines)."""
    p = event.payload
    match event.type:
        case EventType.RUN_STARTED:
            return f"input={preview(p.get('input'))}"
        case EventType.STEP_COMPLETED:
            took = p.get("duration_ms")
            took_s = duration(took / 1000) if isinstance(took, int | float) else "?"
            return f"attempt {p.get('attempt', 1)} in {took_s}: {preview(p.get('result'))}"
        case EventType.STEP_FAILED:
            retry = p.get("retry_at")
            then = f", retry at {retry}" if retry else ", no retry left"
            return f"attempt {p.get('attempt', 1)}: {_error_text(p.get('error'))}{then}"
        case EventType.TIMER_STARTED:
            return f"until {p.get('fire_at')}"
        case EventType.PROMISE_CREATED:
            deadline = p.get("deadline")
            return f"deadline {deadline}" if deadline else "no deadline"
        case EventType.PROMISE_RESOLVED:
            return preview(p.get("value"))
        case EventType.PROMISE_REJECTED:
            return _error_text(p.get("error"))
        case EventType.STATE_SET | EventType.MARKER:
            return preview(p.get("value"))
        case EventType.CHILD_STARTED:
            return f"workflow={p.get('workflow')} input={preview(p.get('input'), 40)}"
        case EventType.CHILD_COMPLETED:
            return preview(p["result"]) if "result" in p else _error_text(p.get("error"))
        case EventType.COMPENSATION_STARTED:
            return f"reason={p.get('reason')} steps={preview(p.get('steps'), 40)}"
        case EventType.RUN_COMPLETED:
            return preview(p.get("result"))
        case EventType.RUN_FAILED:
            return _error_text(p.get("error"))
        case EventType.RUN_BLOCKED:
            return f"expected {p.get('expected')}, recorded {p.get('recorded')}"
        case _:
            return preview(p) if p else ""


def _error_text(error: Any) -> str:
    return projection.error_text(error, 120)


def history_rows(events: Sequence[Event]) -> list[list[Any]]:
    """Rows of `ratline history`: seq, time, type, command, name, details."""
    return [
        [
            e.seq,
            iso(e.time),
            e.type.value,
            "" if e.command_id is None else e.command_id,
            e.name or "",
            event_summary(e),
        ]
        for e in events
    ]


HISTORY_HEADERS = ("seq", "time", "event", "cmd", "name", "details")


def history_data(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events as plain dicts for `-o json|yaml` (the store's own field names)."""
    return [e.model_dump(mode="json") for e in events]


def event_line(event: Event) -> str:
    """One line per event as `ratline run` prints them while a run advances."""
    label = f"{event.type.value} {event.name}" if event.name else event.type.value
    summary = event_summary(event)
    return f"[{event.seq:>4}] {label}" + (f": {summary}" if summary else "")


# -- step timeline ------------------------------------------------------------------------------


@dataclass
class TimelineEntry:
    """One command of the run as `describe` shows it: when it began, ended, how it went."""

    command_id: int
    kind: str
    name: str
    state: str  # Completed, Failed, Retrying, Waiting, Done
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    detail: str

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def timeline(events: Sequence[Event]) -> list[TimelineEntry]:
    """Steps, timers, promises and children in command order, one entry each.

    A completed step has no start event (one commit per step), so its start is
    its completion time minus the recorded `duration_ms`; markers are skipped.
    """
    entries: dict[int, TimelineEntry] = {}
    for event in events:
        kind = COMMAND_KIND.get(event.type)
        if kind in (None, "marker") or event.command_id is None:
            continue
        entry = entries.get(event.command_id)
        if entry is None:
            entry = entries[event.command_id] = TimelineEntry(
                event.command_id, kind, event.name or "", "Waiting", 0, event.time, None, ""
            )
        _advance(entry, event)
    return [entries[k] for k in sorted(entries)]


def _advance(entry: TimelineEntry, event: Event) -> None:
    p = event.payload
    if event.type is EventType.STEP_COMPLETED:
        entry.attempts = int(p.get("attempt") or entry.attempts + 1)
        took = p.get("duration_ms")
        if entry.state == "Waiting" and isinstance(took, int | float):
            entry.started_at = min(entry.started_at, _minus_ms(event.time, took))
        entry.state, entry.finished_at = "Completed", event.time
        entry.detail = preview(p.get("result"))
    elif event.type is EventType.STEP_FAILED:
        entry.attempts = int(p.get("attempt") or entry.attempts + 1)
        entry.detail = _error_text(p.get("error"))
        if p.get("retry_at"):
            entry.state = "Retrying"
        else:
            entry.state, entry.finished_at = "Failed", event.time
    elif event.type is EventType.STEP_STARTED:
        entry.state = "Running"
    elif event.type is EventType.TIMER_STARTED:
        entry.detail = f"until {p.get('fire_at')}"
    elif event.type in (EventType.PROMISE_CREATED, EventType.CHILD_STARTED):
        entry.detail = event_summary(event)
    elif event.type is EventType.PROMISE_REJECTED:
        entry.state, entry.finished_at = "Rejected", event.time
        entry.detail = event_summary(event)
    elif event.type is EventType.PROMISE_TIMED_OUT:
        entry.state, entry.finished_at = "TimedOut", event.time
    elif event.type is EventType.CHILD_COMPLETED and "result" not in p:
        entry.state, entry.finished_at = "Failed", event.time
        entry.detail = event_summary(event)
    else:  # TimerFired, PromiseResolved, ChildCompleted (ok), StateSet
        entry.state, entry.finished_at = "Done", event.time
        if event.type is not EventType.TIMER_FIRED:
            entry.detail = event_summary(event)


def _minus_ms(when: datetime, ms: float) -> datetime:
    return when - timedelta(milliseconds=ms)


TIMELINE_HEADERS = ("#", "kind", "name", "state", "attempts", "started", "took", "details")


def timeline_rows(entries: Sequence[TimelineEntry]) -> list[list[Any]]:
    """Rows of the `describe` timeline; `took` is relative, start times absolute."""
    return [
        [
            e.command_id,
            e.kind,
            e.name,
            e.state,
            e.attempts or "",
            iso(e.started_at),
            duration(e.seconds),
            e.detail,
        ]
        for e in entries
    ]


def timeline_data(entries: Sequence[TimelineEntry]) -> list[dict[str, Any]]:
    return [
        {
            **asdict(e),
            "started_at": iso(e.started_at),
            "finished_at": iso(e.finished_at),
            "seconds": e.seconds,
        }
        for e in entries
    ]


# -- describe ----------------------------------------------------------------------------------


def describe_data(
    run: Mapping[str, Any], record: RunRecord | None, entries: Sequence[TimelineEntry]
) -> dict[str, Any]:
    """The WorkflowRun (spec, status) with the store's view and the timeline, as plain data."""
    meta = run.get("metadata") or {}
    status = run.get("status") or {}
    data: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "workflow": (run.get("spec") or {}).get("workflowRef", {}).get("name"),
        "phase": status.get("phase", "Pending"),
        "progress": status.get("progress"),
        "waiting": status.get("waiting"),
        "workerPod": status.get("workerPod"),
        "conditions": status.get("conditions") or [],
        "store": None,
        "timeline": timeline_data(entries),
    }
    if record is not None:
        data["store"] = {
            "status": record.status.value,
            "image": record.image,
            "entrypoint": record.entrypoint,
            "wakeAt": iso(record.wake_at),
            "waitingFor": list(record.waiting_for),
            "historyLength": record.history_length,
            "result": record.result,
            "error": record.error,
            "createdAt": iso(record.created_at),
            "startedAt": iso(record.started_at),
            "finishedAt": iso(record.finished_at),
        }
    return data


def describe_text(data: Mapping[str, Any]) -> str:
    """`ratline describe` for humans: a header block, the conditions, the timeline."""
    lines = [
        f"Name:        {data['name']}",
        f"Namespace:   {data['namespace']}",
        f"UID:         {data['uid']}",
        f"Workflow:    {data['workflow']}",
        f"Phase:       {data['phase']}" + (f" ({data['progress']})" if data["progress"] else ""),
    ]
    if data.get("waiting"):
        lines.append(f"Waiting:     {data['waiting']}")
    if data.get("workerPod"):
        lines.append(f"Worker pod:  {data['workerPod']}")
    store = data.get("store")
    if store is None:
        lines.append("Store:       no record yet (the operator has not started the run)")
    else:
        lines.append(f"Store:       {store['status']}, {store['historyLength']} events")
        lines.append(f"Image:       {store['image']}")
        if store["wakeAt"]:
            lines.append(f"Wakes at:    {store['wakeAt']}")
        if store["waitingFor"]:
            lines.append(f"Promises:    {', '.join(store['waitingFor'])}")
        if store["result"] is not None:
            lines.append(f"Result:      {preview(store['result'], 200)}")
        if store["error"]:
            lines.append(f"Error:       {_error_text(store['error'])}")
    conditions = data.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        rows = [[c.get("type"), c.get("status"), c.get("reason"), c.get("message")]
                for c in conditions]  # fmt: skip
        lines += _indent(table(("type", "status", "reason", "message"), rows))
    lines.append("Timeline:")
    rows_t = [
        [r["command_id"], r["kind"], r["name"], r["state"], r["attempts"] or "",
         r["started_at"], duration(r["seconds"]), r["detail"]]
        for r in data["timeline"]
    ]  # fmt: skip
    if rows_t:
        lines += _indent(table(TIMELINE_HEADERS, rows_t))
    else:
        lines.append("  (no steps yet)")
    return "\n".join(lines)


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.split("\n")]
