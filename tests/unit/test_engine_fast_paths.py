"""The engine's and store's unvalidated constructors build exactly what validation would.

Hot paths (a step's event, its StepInfo note, replayed history) skip Pydantic and
dataclass __init__; these tests pin that the objects they make are the same.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ratline import WorkflowContext, workflow
from ratline.engine import activate
from ratline.engine.history import HistoryIndex
from ratline.sdk import spec_of
from ratline.sdk.context import StepInfo
from ratline.store import Event, EventType, NewEvent, NewRun, RunStatus
from ratline.store.base import trusted
from ratline.store.memory import MemoryStore


def _double(x: int) -> int:
    return x * 2


@workflow(name="fast-paths-two-steps")
async def _two_steps(ctx: WorkflowContext, n: int) -> int:
    a: int = await ctx.run("double", _double, n)
    b: int = await ctx.run("double-again", _double, a)
    return b


async def test_steps_notes_and_events_equal_their_validated_forms() -> None:
    store = MemoryStore()
    run_id = f"run-{uuid.uuid4()}"
    await store.create_run(NewRun(id=run_id, name="fp", workflow="fast-paths-two-steps", input=3))
    outcome = await activate(store, run_id, owner="w", spec=spec_of(_two_steps))
    assert (outcome.status, outcome.result) == (RunStatus.SUCCEEDED, 12)
    assert outcome.steps == [
        StepInfo(
            command_id=1,
            name="double",
            kind="step",
            attempts=1,
            replayed=False,
            executed=True,
            ok=True,
        ),
        StepInfo(
            command_id=2,
            name="double-again",
            kind="step",
            attempts=1,
            replayed=False,
            executed=True,
            ok=True,
        ),
    ]
    history = await store.load_history(run_id)
    for event in history:
        assert event == Event.model_validate(event.model_dump())
    record = await store.get_run(run_id)
    assert record is not None
    assert record.lease_owner is None  # released by the final append
    assert [e.type for e in history] == [
        EventType.RUN_STARTED,
        EventType.STEP_COMPLETED,
        EventType.STEP_COMPLETED,
        EventType.RUN_COMPLETED,
    ]


def test_trusted_new_event_equals_a_validated_one() -> None:
    fields = {"type": EventType.MARKER, "command_id": 1, "name": "now", "payload": {"value": 1}}
    assert trusted(NewEvent, dict(fields)) == NewEvent.model_validate(fields)


def test_history_index_build_groups_commands_and_reads_run_level_facts() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)

    def event(seq: int, type_: EventType, command_id: int | None, **payload: object) -> Event:
        return Event(
            run_id="r", seq=seq, time=at, type=type_, command_id=command_id, payload=payload
        )

    events = [
        event(1, EventType.RUN_STARTED, None),
        event(2, EventType.STEP_COMPLETED, 1),
        event(3, EventType.CANCEL_REQUESTED, None, reason="timed_out"),
        event(4, EventType.STEP_FAILED, 3),
        event(5, EventType.COMPENSATION_STARTED, None),
    ]
    built = HistoryIndex.build(events)
    assert (built.max_command, built.cancel_seq) == (3, 3)
    assert built.by_command == {1: [events[1]], 3: [events[3]]}
    assert (built.cancel_reason, built.run_started, built.compensation_started) == (
        "timed_out",
        True,
        True,
    )
