"""Replay a recorded history against today's code, as Temporal's `Replayer` does.

`history` is what `kubectl ratline history RUN -o json` prints (a JSON list of
events), as text, a file path, or already-loaded dicts or `Event`s. The
replay runs on a throwaway memory store and stops where the history ends: no
step that history does not hold is executed. A command that differs from the
recorded one raises `NonDeterminismError` with the diff (what the code issues
now, what history recorded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic

from ratline.engine import Activation, Execution, ExecutionOptions
from ratline.sdk.definition import spec_of
from ratline.store.base import Event, EventType, NewEvent, NewRun
from ratline.store.memory import MemoryStore

HistoryInput = str | os.PathLike[str] | Sequence[Mapping[str, Any] | Event]

_EVENTS = pydantic.TypeAdapter(list[Event])


def load_history(history: HistoryInput) -> list[Event]:
    """Events from JSON text, a JSON file, or dicts; a bad event names its field."""
    if isinstance(history, os.PathLike):
        history = Path(history).read_text()
    if isinstance(history, str):
        history = json.loads(history)
    if not isinstance(history, Sequence) or isinstance(history, str):
        raise TypeError("history must be a JSON list of events")
    events = _EVENTS.validate_python(
        [e.model_dump() if isinstance(e, Event) else e for e in history]
    )
    return sorted(events, key=lambda e: e.seq)


async def replay(workflow: str | Callable[..., Any] | type, history: HistoryInput) -> Activation:
    """Replay `history` with `workflow`'s current code; `NonDeterminismError` on a
    mismatch. Returns how the replay ended (finished, or waiting where history ends)."""
    spec = spec_of(workflow)
    events = load_history(history)
    if not events or events[0].type is not EventType.RUN_STARTED:
        raise ValueError("history must start with a RunStarted event")
    recorded = events[0].payload.get("workflow")
    if recorded not in (None, spec.name):
        raise ValueError(f"history was recorded by workflow {recorded!r}, not {spec.name!r}")
    last = events[-1].time
    clock: Callable[[], datetime] = lambda: last.astimezone(UTC)  # noqa: E731 - frozen time
    store = MemoryStore(clock=clock)
    run_id = events[0].run_id
    await store.create_run(
        NewRun(
            id=run_id,
            name=f"replay-{run_id[:8]}",
            workflow=spec.name,
            input=events[0].payload.get("input"),
        )
    )
    lease = await store.acquire_lease(run_id, "replayer-seed")
    copies = [
        NewEvent(type=e.type, command_id=e.command_id, name=e.name, payload=e.payload)
        for e in events
    ]
    await store.append(lease, copies)
    await store.release_lease(lease)
    begun = await store.begin(run_id, "replayer")
    assert begun.lease is not None
    options = ExecutionOptions(clock=clock, idle_threshold_s=0.0, replay_only=True)
    execution = Execution(store, begun.lease, begun.run, spec, begun.history, options, [])
    outcome = await execution.activate()
    if execution.blocked is not None:
        raise execution.blocked
    return outcome
