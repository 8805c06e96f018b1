"""History -> WorkflowRun status: a bounded fold plus a pure projection.

`HistoryFold.apply` consumes events incrementally (the caller loads them with
`after_seq`), keeping O(window) state however long the run is: the latest
steps, counters, open promises and timers, capped `ctx.set` state. `project`
turns a fold and the store's `RunRecord` into the status fields the operator
owns through the store. No I/O here: the reconciler and tests drive it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ratline.controller.units import iso, parse_iso
from ratline.store.base import Event, EventType, RunRecord, RunStatus

MAX_STEPS = 50
MAX_PROMISES = 50
MAX_STATE_KEYS = 200
STATE_MAX_BYTES = 8192
STATE_VALUE_MAX_BYTES = 1024
PREVIEW_CHARS = 1024
STEP_ERROR_CHARS = 512

PHASES = {
    RunStatus.PENDING: "Pending",
    RunStatus.RUNNING: "Running",
    RunStatus.SUSPENDED: "Suspended",
    RunStatus.SUCCEEDED: "Succeeded",
    RunStatus.FAILED: "Failed",
    RunStatus.CANCELLED: "Cancelled",
    RunStatus.TIMED_OUT: "TimedOut",
    RunStatus.BLOCKED: "Failed",
}
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "TimedOut"})
# Status keys `project` owns; the reconciler owns the rest.
PROJECTED_KEYS = (
    "phase",
    "progress",
    "currentStep",
    "waiting",
    "steps",
    "stepsOmitted",
    "pendingPromises",
    "earlySignals",
    "sleepingUntil",
    "state",
    "result",
    "error",
    "historyLength",
    "attempt",
    "lastAttemptError",
    "startedAt",
    "finishedAt",
)
# Store error types that end a run for a reason with its own condition (docs/crds.md).
ERROR_CONDITIONS = {
    "InputValidationError": "InputInvalid",
    "InputInvalid": "InputInvalid",
    "EntrypointInvalid": "EntrypointInvalid",
    "WorkerConfigInvalid": "WorkerConfigInvalid",
    "RetriesExhausted": "RetriesExhausted",
}
PROJECTED_CONDITIONS = frozenset(
    {"Finished", "NonDeterministic", "SignalRefused", *ERROR_CONDITIONS.values()}
)

_UNSEEN, _SEEN, _DONE = 0, 1, 2


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One-line compact JSON of `value`, cut to `limit` characters (the full value stays in
    the store). Status, Events and the CLI's tables all show values through this."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: Any, limit: int = PREVIEW_CHARS) -> str:
    """`"Type: message"` for the store's `{type, message, field?}` error dicts."""
    if isinstance(error, dict):
        kind = error.get("type") or "Error"
        message = error.get("message") or ""
        where = f" (field {error['field']})" if error.get("field") else ""
        return preview(f"{kind}: {message}{where}", limit)
    return preview(error, limit) if error is not None else ""


@dataclass
class StepView:
    """One step as status shows it."""

    command_id: int | None
    name: str
    state: str = "Running"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "state": self.state, "attempts": self.attempts}
        if self.command_id is not None:
            out["commandId"] = self.command_id
        if self.started_at is not None:
            out["startedAt"] = iso(self.started_at)
        if self.finished_at is not None:
            out["finishedAt"] = iso(self.finished_at)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Notice:
    """Something worth a Kubernetes Event or an operator action, seen in history."""

    seq: int
    reason: str
    message: str
    warning: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HistoryFold:
    """Bounded aggregate of one run's history, fed in `seq` order."""

    last_seq: int = 0
    steps: dict[int, StepView] = field(default_factory=dict)  # insertion = first seen
    step_marks: bytearray = field(default_factory=bytearray)  # per command id: unseen/seen/done
    steps_seen: int = 0
    steps_completed: int = 0
    steps_omitted: int = 0
    last_step: int | None = None
    promises: dict[str, dict[str, Any]] = field(default_factory=dict)
    timers: dict[int, datetime] = field(default_factory=dict)
    retry_waits: dict[int, datetime] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    state_omitted: int = 0
    children: dict[str, dict[str, Any]] = field(default_factory=dict)  # started, not completed
    blocked: dict[str, Any] | None = None
    compensating: bool = False
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)  # open promise -> refusal
    last_refused: str = ""  # the promise of the latest refusal, open or not
    attempt: int = 1  # the whole-workflow attempt running now
    attempt_error: str = ""  # why the previous attempt failed
    _anonymous: int = 0

    def apply_all(self, events: Iterable[Event]) -> list[Notice]:
        notices: list[Notice] = []
        for event in events:
            notices.extend(self.apply(event))
        return notices

    def apply(self, event: Event) -> list[Notice]:
        """Fold one event; events at or below `last_seq` are ignored (reloads are safe)."""
        if event.seq <= self.last_seq:
            return []
        self.last_seq = event.seq
        handler = _HANDLERS.get(event.type)
        return handler(self, event) if handler is not None else []

    # steps
    def _mark(self, command_id: int) -> int:
        return self.step_marks[command_id] if command_id < len(self.step_marks) else _UNSEEN

    def _set_mark(self, command_id: int, mark: int) -> None:
        if command_id >= len(self.step_marks):
            self.step_marks.extend(bytes(command_id + 1 - len(self.step_marks)))
        self.step_marks[command_id] = mark

    def _step(self, event: Event) -> StepView | None:
        """The window entry of the event's step, creating it when first seen."""
        key = event.command_id
        if key is None:  # not per the contract; count it as its own step
            self._anonymous += 1
            key = -self._anonymous
        elif self._mark(key) != _UNSEEN and key not in self.steps:
            return None  # an old step pushed out of the window
        if key not in self.steps:
            if key >= 0:
                self._set_mark(key, _SEEN)
            self.steps_seen += 1
            self.steps[key] = StepView(
                command_id=event.command_id, name=event.name or "?", started_at=event.time
            )
            self._evict()
        self.last_step = key
        return self.steps.get(key)

    def _evict(self) -> None:
        while len(self.steps) > MAX_STEPS:
            victim = next(
                (k for k, s in self.steps.items() if s.state in ("Completed", "Failed")),
                next(iter(self.steps)),
            )
            del self.steps[victim]
            self.steps_omitted += 1

    def _completed(self, event: Event) -> list[Notice]:
        if event.command_id is not None and self._mark(event.command_id) == _DONE:
            return []
        step = self._step(event)
        self.steps_completed += 1
        if event.command_id is not None:
            self._set_mark(event.command_id, _DONE)
            self.retry_waits.pop(event.command_id, None)
        if step is not None:
            step.state = "Completed"
            step.attempts = int(event.payload.get("attempt") or step.attempts + 1)
            step.finished_at = event.time
            step.error = ""
        return []

    def _failed(self, event: Event) -> list[Notice]:
        step = self._step(event)
        attempt = int(event.payload.get("attempt") or (step.attempts + 1 if step else 1))
        message = error_text(event.payload.get("error"), STEP_ERROR_CHARS)
        retry_at = parse_iso(event.payload.get("retry_at"))
        if step is not None:
            step.attempts = attempt
            step.error = message
            step.state = "Retrying" if retry_at else "Failed"
            step.finished_at = None if retry_at else event.time
        name = event.name or "?"
        if retry_at is not None and event.command_id is not None:
            self.retry_waits[event.command_id] = retry_at
            text = f"step {name} attempt {attempt} failed, retrying at {iso(retry_at)}: {message}"
            return [Notice(event.seq, "StepRetrying", text, warning=True)]
        if event.command_id is not None:
            self.retry_waits.pop(event.command_id, None)
        text = f"step {name} failed after {attempt} attempt(s): {message}"
        return [Notice(event.seq, "StepFailed", text, warning=True)]

    def _started(self, event: Event) -> list[Notice]:
        step = self._step(event)
        if step is not None and step.state != "Completed":
            step.state = "Running"
        return []

    # waits
    def _timer_started(self, event: Event) -> list[Notice]:
        fire_at = parse_iso(event.payload.get("fire_at"))
        if fire_at is not None and event.command_id is not None:
            self.timers[event.command_id] = fire_at
        return []

    def _timer_fired(self, event: Event) -> list[Notice]:
        if event.command_id is not None:
            self.timers.pop(event.command_id, None)
        return []

    def _promise_created(self, event: Event) -> list[Notice]:
        name = event.name or f"promise-{event.command_id}"
        deadline = event.payload.get("deadline")
        self.promises[name] = {"name": name, "since": iso(event.time)}
        if deadline:
            self.promises[name]["deadline"] = iso(parse_iso(deadline)) or str(deadline)
        return [Notice(event.seq, "Waiting", f"waiting for promise {name}", data={"name": name})]

    def _promise_ended(self, event: Event) -> list[Notice]:
        name = event.name or f"promise-{event.command_id}"
        self.promises.pop(name, None)
        self.refused.pop(name, None)
        for child, request in list(self.children.items()):
            if request["promise"] == name:  # a child's outcome settles its promise
                del self.children[child]
        if event.type is EventType.PROMISE_TIMED_OUT:
            return [Notice(event.seq, "PromiseTimedOut", f"promise {name} timed out", True)]
        verb = "resolved" if event.type is EventType.PROMISE_RESOLVED else "rejected"
        return [
            Notice(
                event.seq,
                "SignalReceived",
                f"promise {name} {verb}",
                data={"name": name, "verb": verb},
            )
        ]

    def _signal_refused(self, event: Event) -> list[Notice]:
        """A typed promise refused a payload; it keeps waiting for a corrected resend."""
        name = event.name or f"promise-{event.command_id}"
        field_name = str(event.payload.get("field") or "payload")
        detail = preview(str(event.payload.get("message") or ""), STEP_ERROR_CHARS)
        signal = str(event.payload.get("signal") or name)
        text = f"promise {name} refused signal {signal} (field {field_name}): {detail}"
        self.last_refused = name
        if name in self.promises:
            self.refused[name] = {"field": field_name, "message": text}
        return [Notice(event.seq, "SignalRefused", text, True, data={"field": field_name})]

    def _attempt_failed(self, event: Event) -> list[Notice]:
        """The workflow function failed and starts again: the old attempt's waits end."""
        failed = int(event.payload.get("attempt") or self.attempt)
        self.attempt = failed + 1
        self.attempt_error = error_text(event.payload.get("error"), STEP_ERROR_CHARS)
        self.promises.clear()
        self.refused.clear()
        self.timers.clear()
        self.retry_waits.clear()
        retry_at = iso(parse_iso(event.payload.get("retry_at"))) or "now"
        text = f"attempt {failed} failed, attempt {self.attempt} starts at {retry_at}: "
        return [Notice(event.seq, "AttemptFailed", text + self.attempt_error, True)]

    # state and children
    def _state_set(self, event: Event) -> list[Notice]:
        key = event.name or "?"
        if key in self.state or len(self.state) < MAX_STATE_KEYS:
            self.state[key] = event.payload.get("value")
        else:
            self.state_omitted += 1
        return []

    def _child_started(self, event: Event) -> list[Notice]:
        # The engine names the run in `run_name` (the event's name is the step's).
        name = str(event.payload.get("run_name") or event.name or "")
        child = {
            "name": name,
            "workflow": event.payload.get("workflow"),
            "input": event.payload.get("input"),
            "promise": event.payload.get("promise") or f"child:{event.command_id}",
        }
        self.children[name] = child
        return [Notice(event.seq, "ChildStarted", f"child run {name} requested", data=child)]

    def _child_completed(self, event: Event) -> list[Notice]:
        name = str(event.payload.get("run_name") or event.name or "")
        self.children.pop(name, None)
        return []

    # the run's own lifecycle
    def _lifecycle(self, event: Event) -> list[Notice]:
        kind = event.type
        if kind is EventType.COMPENSATION_STARTED:
            self.compensating = True
            reason = event.payload.get("reason", "")
            return [Notice(event.seq, "Compensating", f"compensation started ({reason})")]
        if kind is EventType.RUN_BLOCKED:
            self.blocked = dict(event.payload)
            return [Notice(event.seq, "NonDeterministic", blocked_message(self.blocked), True)]
        if kind is EventType.CANCEL_REQUESTED:
            return [Notice(event.seq, "CancelRequested", "cancellation requested")]
        texts = {
            EventType.RUN_COMPLETED: ("Completed", "run completed", False),
            EventType.RUN_FAILED: ("Failed", error_text(event.payload.get("error")), True),
            EventType.RUN_CANCELLED: ("Cancelled", "run cancelled", False),
            EventType.RUN_TIMED_OUT: ("TimedOut", "run exceeded its maxDuration", True),
        }
        reason, message, warning = texts[kind]
        return [Notice(event.seq, reason, message or reason, warning)]


_HANDLERS = {
    EventType.STEP_STARTED: HistoryFold._started,
    EventType.STEP_COMPLETED: HistoryFold._completed,
    EventType.STEP_FAILED: HistoryFold._failed,
    EventType.TIMER_STARTED: HistoryFold._timer_started,
    EventType.TIMER_FIRED: HistoryFold._timer_fired,
    EventType.PROMISE_CREATED: HistoryFold._promise_created,
    EventType.PROMISE_RESOLVED: HistoryFold._promise_ended,
    EventType.PROMISE_REJECTED: HistoryFold._promise_ended,
    EventType.PROMISE_TIMED_OUT: HistoryFold._promise_ended,
    EventType.SIGNAL_REFUSED: HistoryFold._signal_refused,
    EventType.ATTEMPT_FAILED: HistoryFold._attempt_failed,
    EventType.STATE_SET: HistoryFold._state_set,
    EventType.CHILD_STARTED: HistoryFold._child_started,
    EventType.CHILD_COMPLETED: HistoryFold._child_completed,
    EventType.COMPENSATION_STARTED: HistoryFold._lifecycle,
    EventType.RUN_COMPLETED: HistoryFold._lifecycle,
    EventType.RUN_FAILED: HistoryFold._lifecycle,
    EventType.CANCEL_REQUESTED: HistoryFold._lifecycle,
    EventType.RUN_CANCELLED: HistoryFold._lifecycle,
    EventType.RUN_TIMED_OUT: HistoryFold._lifecycle,
    EventType.RUN_BLOCKED: HistoryFold._lifecycle,
}


def blocked_message(payload: dict[str, Any] | None) -> str:
    """The non-determinism diff, readable: what the code did vs what history says."""
    payload = payload or {}
    expected = preview(payload.get("expected"), 400)
    recorded = preview(payload.get("recorded"), 400)
    return f"workflow code diverged from history: code issued {expected}, history has {recorded}"


def capped_state(state: dict[str, Any], omitted: int = 0) -> dict[str, Any]:
    """`ctx.set` values for status: big values become previews, the total stays small."""
    out: dict[str, Any] = {}
    total = 2
    skipped = omitted
    for key, value in state.items():
        encoded = json.dumps(value, default=str)
        shown: Any = value
        if len(encoded) > STATE_VALUE_MAX_BYTES:
            shown = preview(encoded, 256)
            encoded = json.dumps(shown)
        size = len(key) + len(encoded) + 4
        if total + size > STATE_MAX_BYTES:
            skipped += 1
            continue
        out[key] = shown
        total += size
    if skipped:
        out["_omitted"] = skipped
    return out


def _waiting(fold: HistoryFold, sleeping_until: datetime | None) -> str:
    if fold.promises:
        names = list(fold.promises)
        more = f" +{len(names) - 3}" if len(names) > 3 else ""
        return "signal " + ", ".join(names[:3]) + more
    if sleeping_until is not None:
        return f"timer until {iso(sleeping_until)}"
    return ""


def _current_step(fold: HistoryFold) -> str:
    in_flight = [s for s in fold.steps.values() if s.state in ("Running", "Retrying")]
    if in_flight:
        return in_flight[-1].name
    if fold.last_step is not None and fold.last_step in fold.steps:
        return fold.steps[fold.last_step].name
    return ""


@dataclass(frozen=True)
class Projection:
    """Status fields and conditions derived from the store for one run."""

    fields: dict[str, Any]
    conditions: dict[str, dict[str, Any]]  # type -> {status, reason, message}

    @property
    def phase(self) -> str:
        return str(self.fields.get("phase", "Pending"))


def project(record: RunRecord | None, fold: HistoryFold) -> Projection:
    """The projected status of a run; `record` None means not in the store yet."""
    if record is None:
        return Projection(fields={"phase": "Pending", "progress": "0/0"}, conditions={})
    phase = PHASES[record.status]
    finished = phase in FINAL_PHASES
    waits = list(fold.timers.values()) + list(fold.retry_waits.values())
    sleeping_until = None if finished or not waits else min(waits)
    steps = [step.as_status() for step in fold.steps.values()]
    fields: dict[str, Any] = {
        "phase": phase,
        "progress": f"{fold.steps_completed}/{fold.steps_seen}",
        "currentStep": _current_step(fold) or None,
        "waiting": None if finished else (_waiting(fold, sleeping_until) or None),
        "steps": steps or None,
        "stepsOmitted": fold.steps_omitted or None,
        "pendingPromises": None
        if finished or not fold.promises
        else list(fold.promises.values())[:MAX_PROMISES],
        "earlySignals": None if finished else record.early_signals[:MAX_PROMISES] or None,
        "sleepingUntil": iso(sleeping_until),
        "state": capped_state(fold.state, fold.state_omitted) if fold.state else None,
        "result": preview(record.result) if record.status is RunStatus.SUCCEEDED else None,
        "error": error_text(record.error) if record.error and finished else None,
        "historyLength": max(record.history_length, fold.last_seq),
        "attempt": fold.attempt,
        "lastAttemptError": fold.attempt_error or None,
        "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at) if finished else None,
    }
    conditions: dict[str, dict[str, Any]] = {}
    if finished:
        message = fields["error"] or ("completed" if phase == "Succeeded" else phase.lower())
        conditions["Finished"] = {"status": "True", "reason": phase, "message": message}
    failure = ERROR_CONDITIONS.get(str((record.error or {}).get("type")))
    if record.status is RunStatus.FAILED and failure is not None:
        message = error_text(record.error, 2000)
        conditions[failure] = {"status": "True", "reason": failure, "message": message}
    if record.status is RunStatus.BLOCKED:
        blocked = fold.blocked or (record.error or {})
        conditions["NonDeterministic"] = {
            "status": "True",
            "reason": "HistoryMismatch",
            "message": preview(blocked_message(blocked), 2000)
            if fold.blocked
            else error_text(record.error, 2000),
        }
        fields["error"] = fields["error"] or conditions["NonDeterministic"]["message"][:1024]
    refused = _refused_condition(fold, finished)
    if refused is not None:
        conditions["SignalRefused"] = refused
    return Projection(fields=fields, conditions=conditions)


def _refused_condition(fold: HistoryFold, finished: bool) -> dict[str, Any] | None:
    """True while an open promise's latest signal was refused; False once resolved."""
    if not fold.last_refused:
        return None
    if fold.refused and not finished:
        latest = fold.refused.get(fold.last_refused) or list(fold.refused.values())[-1]
        more = f" (+{len(fold.refused) - 1} more promise(s))" if len(fold.refused) > 1 else ""
        return {"status": "True", "reason": "SignalRefused", "message": latest["message"] + more}
    text = "no open promise is waiting on a refused signal"
    return {"status": "False", "reason": "NoRefusal", "message": text}
