"""`ratline retry` planning on real engine histories (memory store), the retried
run's manifest, and the argument checks that need no cluster."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ratline import NonRetryableError, WorkflowContext, workflow
from ratline.cli.main import main as cli_main
from ratline.cli.runs import (
    RETRY_FROM,
    RETRY_OF,
    RETRY_OF_UID,
    retry_manifest,
)
from ratline.controller.retry import RetryRefused, retry_plan, seed
from ratline.engine import activate, resolve_entrypoint
from ratline.engine.execution import ExecutionOptions
from ratline.store import EventType, NewRun, RunStatus
from ratline.store.memory import MemoryStore

RUNS: dict[str, dict[str, Any]] = {}  # tag -> {"fail": step name or None, "calls": {...}}


def _step(tag: str, name: str) -> str:
    state = RUNS[tag]
    state["calls"][name] = state["calls"].get(name, 0) + 1
    if state["fail"] == name:
        raise NonRetryableError(f"{name} broke")
    return f"{name}-done"


def _undo(tag: str, name: str) -> None:
    RUNS[tag]["calls"][f"undo-{name}"] = RUNS[tag]["calls"].get(f"undo-{name}", 0) + 1


@workflow(name="cli-retry-three")
async def three(ctx: WorkflowContext, inp: dict[str, str]) -> list[str]:
    tag = inp["tag"]
    out = [await ctx.run(name, _step, tag, name) for name in ("reserve", "charge", "ship")]
    return out


@workflow(name="cli-retry-saga")
async def saga(ctx: WorkflowContext, inp: dict[str, str]) -> str:
    tag = inp["tag"]
    await ctx.run("reserve", _step, tag, "reserve", compensate=lambda _r: _undo(tag, "reserve"))
    await ctx.run("charge", _step, tag, "charge")
    return "ok"


async def start(store: MemoryStore, entry: str, tag: str) -> str:
    run_id = str(uuid.uuid4())
    spec = resolve_entrypoint(entry)
    await store.create_run(
        NewRun(id=run_id, name=f"r-{tag[:6]}", workflow=spec.name, entrypoint=entry,
               input={"tag": tag})
    )  # fmt: skip
    await activate(store, run_id, owner="w1", spec=spec, options=ExecutionOptions(attempt=1))
    return run_id


async def seed_retry(store: MemoryStore, old_id: str, entry: str, from_step: str | None) -> str:
    """What the operator does in the store for a run with `spec.retryOf`."""
    old = await store.get_run(old_id)
    assert old is not None
    step = retry_plan(await store.load_history(old_id), old.status, from_step).from_step
    new_id = str(uuid.uuid4())
    await store.create_run(
        NewRun(id=new_id, name="retry", workflow=old.workflow, entrypoint=entry, input=old.input)
    )
    assert await seed(store, new_id, old_id, step) is not None
    assert await seed(store, new_id, old_id, step) is None, "seeding twice is a no-op"
    return new_id


THREE = f"{__name__}:three"
SAGA = f"{__name__}:saga"


async def test_retry_reruns_the_failed_step_and_keeps_the_ones_before() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": "charge", "calls": {}}
    old_id = await start(store, THREE, tag)
    old = await store.get_run(old_id)
    assert old is not None
    assert old.status is RunStatus.FAILED

    RUNS[tag]["fail"] = None  # the bug is fixed
    new_id = await seed_retry(store, old_id, THREE, None)
    outcome = await activate(store, new_id, owner="w2", spec=resolve_entrypoint(THREE))

    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.result == ["reserve-done", "charge-done", "ship-done"]
    assert RUNS[tag]["calls"] == {"reserve": 1, "charge": 2, "ship": 1}


async def test_retry_from_an_earlier_step_reruns_it_too() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": "ship", "calls": {}}
    old_id = await start(store, THREE, tag)
    RUNS[tag]["fail"] = None
    new_id = await seed_retry(store, old_id, THREE, "charge")
    outcome = await activate(store, new_id, owner="w2", spec=resolve_entrypoint(THREE))
    assert outcome.status is RunStatus.SUCCEEDED
    assert RUNS[tag]["calls"] == {"reserve": 1, "charge": 2, "ship": 2}


async def test_plan_keeps_run_started_and_earlier_commands_only() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": "charge", "calls": {}}
    old_id = await start(store, THREE, tag)
    history = await store.load_history(old_id)
    plan = retry_plan(history, RunStatus.FAILED, None)
    assert plan.from_step == "charge"
    assert plan.cut == 2
    assert plan.kept_steps == ["reserve"]
    assert [e.type for e in plan.events] == [EventType.RUN_STARTED, EventType.STEP_COMPLETED]
    assert all(e.command_id is None or e.command_id < plan.cut for e in plan.events)
    assert EventType.RUN_FAILED in {e.type for e in history}


async def test_steps_already_compensated_cannot_be_kept() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": "charge", "calls": {}}
    old_id = await start(store, SAGA, tag)
    assert RUNS[tag]["calls"]["undo-reserve"] == 1
    history = await store.load_history(old_id)
    with pytest.raises(RetryRefused, match="reserve were compensated"):
        retry_plan(history, RunStatus.FAILED, None)
    plan = retry_plan(history, RunStatus.FAILED, "reserve")  # from the undone step: fine
    assert plan.kept_steps == []


async def test_plan_refuses_unfinished_runs_and_unknown_steps() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": "ship", "calls": {}}
    history = await store.load_history(await start(store, THREE, tag))
    with pytest.raises(RetryRefused, match="the run is suspended"):
        retry_plan(history, RunStatus.SUSPENDED, None)
    with pytest.raises(RetryRefused, match="no step 'pack'; its steps: reserve, charge, ship"):
        retry_plan(history, RunStatus.FAILED, "pack")


async def test_plan_without_a_failed_step_asks_for_one() -> None:
    store, tag = MemoryStore(), uuid.uuid4().hex
    RUNS[tag] = {"fail": None, "calls": {}}
    history = await store.load_history(await start(store, THREE, tag))
    with pytest.raises(RetryRefused, match="--from-step"):
        retry_plan(history, RunStatus.SUCCEEDED, None)
    assert retry_plan(history, RunStatus.SUCCEEDED, "ship").kept_steps == ["reserve", "charge"]


def test_retry_manifest_copies_what_defines_the_run_and_records_lineage() -> None:
    old = {
        "metadata": {
            "name": "order-42",
            "namespace": "shop",
            "uid": "u-1",
            "labels": {
                "team": "pay",
                "ratline.dev/parent-uid": "p-1",
                "app.kubernetes.io/instance": "shop-app",
                "kustomize.toolkit.fluxcd.io/name": "shop",
            },
            "resourceVersion": "7",
        },
        "spec": {
            "workflowRef": {"name": "order"},
            "input": {"id": 42},
            "priority": 5,
            "signals": {"approval": True},
            "cancel": True,
        },
        "status": {"phase": "Failed"},
    }
    new = retry_manifest(old, "order-42-retry-1", "charge")
    assert new["spec"] == {
        "workflowRef": {"name": "order"},
        "input": {"id": 42},
        "priority": 5,
        "retryOf": {"uid": "u-1", "fromStep": "charge"},
    }
    assert new["metadata"]["labels"] == {"team": "pay", RETRY_OF: "order-42"}
    assert new["metadata"]["annotations"] == {RETRY_OF_UID: "u-1", RETRY_FROM: "charge"}
    assert "status" not in new
    assert "resourceVersion" not in new["metadata"]


@pytest.mark.parametrize(
    ("data", "message"),
    [("null", "must not be null"), ("{oops", "--data is not valid JSON")],
)
def test_signal_data_is_checked_before_any_api_call(
    data: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["signal", "run-1", "approval", "--data", data, "-n", "ns",
                     "--kubeconfig", "/nonexistent"])  # fmt: skip
    assert code == 1
    assert message in capsys.readouterr().err


def test_missing_kubeconfig_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["history", "run-1", "--kubeconfig", "/nonexistent/kubeconfig"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("ratline history: ")
    assert "kubeconfig" in err
