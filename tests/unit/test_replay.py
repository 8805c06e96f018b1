"""The public replayer over recorded histories (tests/histories/*.json, as
`kubectl ratline history RUN -o json` prints them)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from ratline import NonDeterminismError, WorkflowContext, workflow
from ratline.engine import resolve_entrypoint
from ratline.store import RunStatus
from ratline.testing import WorkflowTestEnv, replay

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "histories"
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/workflow.yaml"))


def entrypoint(example: str) -> str:
    loaded = yaml.safe_load((ROOT / "examples" / example / "workflow.yaml").read_text())
    return str(loaded["spec"]["entrypoint"])


def test_every_example_has_a_recorded_history() -> None:
    assert {f"{name}.json" for name in EXAMPLES} <= {p.name for p in HISTORIES.glob("*.json")}


@pytest.mark.parametrize("example", EXAMPLES)
async def test_each_recorded_example_history_replays_with_todays_code(example: str) -> None:
    spec = resolve_entrypoint(entrypoint(example))
    outcome = await replay(spec.name, HISTORIES / f"{example}.json")
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.steps  # it did replay steps
    assert all(s.replayed for s in outcome.steps)  # and executed none


async def test_a_history_from_older_code_fails_with_the_diff() -> None:
    spec = resolve_entrypoint(entrypoint("hello"))
    with pytest.raises(NonDeterminismError) as caught:
        await replay(spec.name, HISTORIES / "hello.renamed-step.json")
    assert caught.value.command_id == 1
    assert caught.value.expected == "step 'shout'"
    assert caught.value.recorded == "step 'upper'"


async def test_replay_stops_where_history_ends_and_runs_nothing_new() -> None:
    calls: list[str] = []

    def effect(label: str) -> str:
        calls.append(label)
        return label

    @workflow(name=f"replay-partial-{uuid.uuid4().hex[:8]}")
    async def wf(ctx: WorkflowContext, _: None) -> str:
        await ctx.run("first", effect, "first")
        await ctx.promise("go")
        return await ctx.run("second", effect, "second")

    env = WorkflowTestEnv()
    run = await env.start(wf)
    text = json.dumps([e.model_dump(mode="json") for e in await run.history()])
    assert calls == ["first"]
    outcome = await replay(wf, text)
    assert calls == ["first"]  # the recorded step was not run again
    assert outcome.status is RunStatus.SUSPENDED

    await run.signal("go", True)
    full = [e.model_dump(mode="json") for e in await run.history()]
    cut = [e for e in full if e["name"] != "second" and e["type"] != "RunCompleted"]
    outcome = await replay(wf, cut)  # history ends after the signal: stop there
    assert calls == ["first", "second"]
    assert outcome.status is RunStatus.RUNNING


async def test_a_malformed_history_names_the_field() -> None:
    spec = resolve_entrypoint(entrypoint("hello"))
    started = {"type": "RunStarted", "run_id": "r", "time": "2026-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="seq"):
        await replay(spec.name, [started])
