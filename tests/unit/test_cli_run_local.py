"""`ratline run`: local runs on the memory store, printed step by step."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest

from ratline import NonRetryableError, WorkflowContext, workflow
from ratline.cli.main import main as cli_main
from ratline.cli.run_local import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAITING,
    LocalRun,
    run_id_for,
)
from ratline.engine import resolve_entrypoint
from ratline.store import EventType, RunStatus
from ratline.store.memory import MemoryStore

CALLS: dict[str, int] = {}


def _count(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    return key


@workflow(name="cli-local-steps")
async def steps_flow(ctx: WorkflowContext, inp: dict[str, str]) -> str:
    first = await ctx.run("first", _count, f"{inp['tag']}:first")
    await ctx.sleep(timedelta(milliseconds=300))
    second = await ctx.run("second", _count, f"{inp['tag']}:second")
    return f"{first}+{second}"


@workflow(name="cli-local-promise")
async def promise_flow(ctx: WorkflowContext, inp: None) -> str:
    await ctx.run("before", lambda: "ok")
    value = await ctx.promise("approval").wait()
    return str(value)


def _boom() -> None:
    raise NonRetryableError("card declined")


@workflow(name="cli-local-fails")
async def failing_flow(ctx: WorkflowContext, inp: None) -> None:
    await ctx.run("charge", _boom)


def local(entry: str, inp: object, out: io.StringIO, **kw: object) -> LocalRun:
    return LocalRun(
        spec=resolve_entrypoint(entry),
        entrypoint=entry,
        inp=inp,
        out=out,
        idle_threshold_s=0.0,
        poll_s=0.05,
        **kw,  # type: ignore[arg-type]
    )


async def test_run_prints_each_step_and_sleeps_through_a_timer() -> None:
    tag = uuid.uuid4().hex
    out = io.StringIO()
    run = local(f"{__name__}:steps_flow", {"tag": tag}, out)
    code = await run.run(MemoryStore())
    text = out.getvalue()
    assert code == EXIT_OK
    assert "StepCompleted first" in text
    assert "TimerStarted sleep" in text
    assert "sleeping until" in text
    assert text.index("StepCompleted first") < text.index("StepCompleted second")
    assert f'succeeded: "{tag}:first+{tag}:second"' in text
    # the timer ended the first activation: a second one replayed `first` and ran `second`
    assert len(run.activations) >= 2
    assert CALLS[f"{tag}:first"] == 1
    assert CALLS[f"{tag}:second"] == 1


async def test_every_event_is_printed_once_in_order() -> None:
    out = io.StringIO()
    await local(f"{__name__}:steps_flow", {"tag": uuid.uuid4().hex}, out).run(MemoryStore())
    seqs = [int(line[1:5]) for line in out.getvalue().splitlines() if line.startswith("[")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= 6  # RunStarted, first, TimerStarted, TimerFired, second, RunCompleted


async def test_promise_wait_exits_with_a_message() -> None:
    out = io.StringIO()
    code = await local(f"{__name__}:promise_flow", None, out).run(MemoryStore())
    assert code == EXIT_WAITING
    assert "waiting for promise approval" in out.getvalue()
    assert "cannot receive signals" in out.getvalue()


async def test_failed_step_exits_1_with_the_error() -> None:
    out = io.StringIO()
    code = await local(f"{__name__}:failing_flow", None, out).run(MemoryStore())
    assert code == EXIT_FAILED
    assert "StepFailed charge" in out.getvalue()
    assert "card declined" in out.getvalue().splitlines()[-1]


async def test_same_name_resumes_the_recorded_run() -> None:
    """A named run keeps its id, so running it again replays instead of re-executing."""
    store = MemoryStore()
    tag = uuid.uuid4().hex
    name = f"resume-{tag[:8]}"
    first = local(f"{__name__}:steps_flow", {"tag": tag}, io.StringIO(), name=name)
    assert await first.run(store) == EXIT_OK
    again_out = io.StringIO()
    again = local(f"{__name__}:steps_flow", {"tag": tag}, again_out, name=name)
    assert await again.run(store) == EXIT_OK
    assert CALLS[f"{tag}:first"] == 1
    assert CALLS[f"{tag}:second"] == 1
    record = await store.get_run(run_id_for(name))
    assert record is not None
    assert record.status is RunStatus.SUCCEEDED
    history = await store.load_history(record.id)
    assert [e.type for e in history].count(EventType.RUN_COMPLETED) == 1


def test_run_id_is_stable_for_a_name_and_fresh_without() -> None:
    assert run_id_for("a") == run_id_for("a")
    assert run_id_for("a") != run_id_for("b")
    assert run_id_for(None) != run_id_for(None)


def test_cli_runs_the_hello_example(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["run", "examples.hello.workflow:hello", "--input", '{"name": "ada"}'])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "StepCompleted shout" in out
    assert '"greeting": "Hello, ADA!"' in out


def test_cli_bad_input_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["run", "examples.hello.workflow:hello", "--input", "{nope"])
    assert code == EXIT_USAGE
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_unknown_entrypoint_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["run", "examples.nowhere:flow"])
    assert code == EXIT_USAGE
    assert "cannot import" in capsys.readouterr().err


def test_cli_input_failing_the_model_fails_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["run", "examples.hello.workflow:hello", "--input", '{"name": ""}'])
    out = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert "name" in out.splitlines()[-1]
