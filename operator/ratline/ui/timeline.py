"""The run page's Gantt chart: history events -> lanes of bars -> an SVG drawn server-side.

One lane per command (step, timer, promise, child), in command order. A step's
lane holds one bar per attempt and a backoff bar between a failed attempt and
its retry; compensation steps (`compensate:<step>`) get their own colour and the
moment compensation began is a vertical marker. A completed step records its
duration, so its bar starts `duration_ms` before the completion; a failed
attempt does not, so it starts at the previous event of the run (or at the
retry time it waited for). Open bars (a pending promise, a running step, a
timer not yet fired) run to `now`. Pure functions: unit tested on hand-made
histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

from ratline.store.base import COMMAND_KIND, Event, EventType

COMPENSATE = "compensate:"

# Bar kinds and their colours (also the legend).
COLOURS = {
    "attempt": "#2f7d4f",
    "failed": "#c0392b",
    "backoff": "#e0a030",
    "sleep": "#6c7a89",
    "promise": "#7d5ba6",
    "child": "#2c6fbb",
    "compensation": "#a0522d",
    "running": "#56b886",
}


@dataclass
class Bar:
    kind: str  # a COLOURS key
    start: datetime
    end: datetime | None  # None: still open
    label: str = ""


@dataclass
class Lane:
    command_id: int
    kind: str  # step, timer, promise, child, state
    name: str
    bars: list[Bar] = field(default_factory=list)
    deadline: datetime | None = None

    @property
    def compensation(self) -> bool:
        return self.name.startswith(COMPENSATE)


@dataclass
class Timeline:
    lanes: list[Lane]
    start: datetime | None
    end: datetime | None
    markers: list[tuple[datetime, str]]


def _ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def build(events: Sequence[Event], now: datetime) -> Timeline:
    """Lanes and bars from a run's history (oldest first)."""
    lanes: dict[int, Lane] = {}
    markers: list[tuple[datetime, str]] = []
    previous: datetime | None = None  # time of the run's previous event
    waiting_retry: dict[int, datetime] = {}  # command -> when its next attempt may start
    for event in events:
        kind = COMMAND_KIND.get(event.type)
        if event.type is EventType.COMPENSATION_STARTED:
            markers.append((event.time, "compensation"))
        elif event.type in (EventType.CANCEL_REQUESTED,):
            markers.append((event.time, "cancel requested"))
        if kind in (None, "marker", "state") or event.command_id is None:
            previous = event.time
            continue
        lane = lanes.get(event.command_id)
        if lane is None:
            lane = lanes[event.command_id] = Lane(event.command_id, kind or "", event.name or "")
        _apply(lane, event, previous, waiting_retry)
        previous = event.time
    ordered = [lanes[k] for k in sorted(lanes)]
    for lane in ordered:
        for bar in lane.bars:
            if bar.end is None and bar.start > now:
                bar.start = now
    # The chart spans the bars (and markers), not the run: a worker's start-up before
    # the first step would otherwise squeeze every bar to the right.
    times = [b.start for lane in ordered for b in lane.bars]
    times += [b.end or now for lane in ordered for b in lane.bars]
    times += [t for t, _ in markers]
    if not times and events:
        times = [events[0].time, events[-1].time]
    return Timeline(ordered, min(times, default=None), max(times, default=None), markers)


def _apply(
    lane: Lane, event: Event, previous: datetime | None, waiting: dict[int, datetime]
) -> None:
    p, at, cid = event.payload, event.time, event.command_id or 0
    attempt_kind = "compensation" if lane.compensation else "attempt"
    match event.type:
        case EventType.STEP_STARTED:
            _close_open(lane, at)
            lane.bars.append(Bar("running", waiting.pop(cid, at), None, f"attempt {_n(p)}"))
        case EventType.STEP_COMPLETED:
            took = p.get("duration_ms")
            begin = at - timedelta(milliseconds=took) if isinstance(took, int | float) else at
            begin = _drop_open(lane, begin)
            lane.bars.append(Bar(attempt_kind, begin, at, f"attempt {_n(p)} ok"))
            waiting.pop(cid, None)
        case EventType.STEP_FAILED:
            begin = _drop_open(lane, waiting.pop(cid, previous or at))
            lane.bars.append(Bar("failed", min(begin, at), at, f"attempt {_n(p)} failed"))
            retry_at = _ts(p.get("retry_at"))
            if retry_at is not None:
                lane.bars.append(Bar("backoff", at, retry_at, f"backoff until {retry_at:%H:%M:%S}"))
                waiting[cid] = retry_at
        case EventType.TIMER_STARTED:
            fire_at = _ts(p.get("fire_at"))
            lane.bars.append(Bar("sleep", at, None, "sleep"))
            lane.deadline = fire_at
        case EventType.TIMER_FIRED:
            _close_open(lane, at)
        case EventType.PROMISE_CREATED:
            lane.bars.append(Bar("promise", at, None, "waiting for signal"))
            lane.deadline = _ts(p.get("deadline"))
        case EventType.PROMISE_RESOLVED | EventType.PROMISE_REJECTED | EventType.PROMISE_TIMED_OUT:
            _close_open(lane, at)
            if lane.bars:
                lane.bars[-1].label = event.type.value.removeprefix("Promise").lower()
        case EventType.CHILD_STARTED:
            lane.bars.append(Bar("child", at, None, str(p.get("workflow") or "child")))
        case EventType.CHILD_COMPLETED:
            _close_open(lane, at)
        case _:
            pass


def _n(payload: dict[str, object]) -> object:
    return payload.get("attempt") or 1


def _close_open(lane: Lane, at: datetime) -> None:
    for bar in lane.bars:
        if bar.end is None:
            bar.end = at


def _drop_open(lane: Lane, begin: datetime) -> datetime:
    """A StepStarted bar is superseded by its outcome; keep the earlier start."""
    if lane.bars and lane.bars[-1].kind == "running" and lane.bars[-1].end is None:
        begin = min(begin, lane.bars.pop().start)
    return begin


# -- SVG ------------------------------------------------------------------------------------------

WIDTH, LABEL_W, ROW_H, TOP = 960, 220, 22, 24


def svg(tl: Timeline, now: datetime) -> str:
    """The chart as an inline SVG string (presentation attributes only: the page's CSP
    forbids inline styles). Every bar has a <title> for hover details."""
    height = TOP + ROW_H * max(1, len(tl.lanes)) + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" role="img" '
        f'aria-label="step timeline" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}">'
    ]
    if tl.start is None or tl.end is None:
        out.append('<text x="8" y="16" font-size="12">no steps yet</text></svg>')
        return "".join(out)
    span = max((tl.end - tl.start).total_seconds(), 0.001)
    plot_w = WIDTH - LABEL_W - 10

    def x(at: datetime) -> float:
        return LABEL_W + plot_w * (at - tl.start).total_seconds() / span  # type: ignore[operator]

    for i in range(5):  # a time axis: 0, a quarter, ... the whole span
        tx = LABEL_W + plot_w * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="18" y2="{height - 4}" stroke="#e4e4e4"/>'
            f'<text x="{tx:.1f}" y="14" font-size="11" fill="#555" text-anchor="{anchor}">'
            f"{'0' if i == 0 else '+' + escape(_span_text(span * i / 4))}</text>"
        )
    for row, lane in enumerate(tl.lanes):
        y = TOP + row * ROW_H
        colour = "#a0522d" if lane.compensation else "#222"
        out.append(
            f'<g class="lane" data-kind="{escape(lane.kind)}" data-name="{escape(lane.name)}">'
            f'<text x="4" y="{y + 15}" font-size="12" fill="{colour}">'
            f"{escape(_clip(f'{lane.command_id}. {lane.name}', 32))}</text>"
        )
        for bar in lane.bars:
            end = bar.end or now
            x0, x1 = x(bar.start), x(max(end, bar.start))
            w = max(x1 - x0, 2.0)
            open_ = ' stroke="#000" stroke-dasharray="3,2"' if bar.end is None else ""
            title = f"{lane.name}: {bar.label} ({_span_text((end - bar.start).total_seconds())})"
            out.append(
                f'<rect class="bar bar-{bar.kind}" data-kind="{bar.kind}" x="{x0:.1f}" '
                f'y="{y + 4}" width="{w:.1f}" height="{ROW_H - 8}" rx="2" '
                f'fill="{COLOURS[bar.kind]}"{open_}><title>{escape(title)}</title></rect>'
            )
        if lane.deadline is not None and tl.start <= lane.deadline <= tl.end:
            dx = x(lane.deadline)
            out.append(
                f'<line class="deadline" x1="{dx:.1f}" x2="{dx:.1f}" y1="{y + 2}" '
                f'y2="{y + ROW_H - 2}" stroke="#000" stroke-width="2">'
                f"<title>deadline {escape(lane.deadline.isoformat())}</title></line>"
            )
        out.append("</g>")
    for at, label in tl.markers:
        mx = x(at)
        out.append(
            f'<line class="marker" data-label="{escape(label)}" x1="{mx:.1f}" x2="{mx:.1f}" '
            f'y1="{TOP - 4}" y2="{height - 4}" stroke="#a0522d" stroke-dasharray="4,3">'
            f"<title>{escape(label)} at {escape(at.isoformat())}</title></line>"
        )
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _span_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
