"""Every example in `examples/` runs to its expected result under `WorkflowTestEnv`.

Side effects are counted on each example's fake services, keyed by ids unique
to the test, so "exactly once" claims are checked against what really ran.
Time is the env's fake clock: days pass in no wall time, and tests assert the
clock, never the wall time.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.approval.workflow import ApprovalResult, approval, notifier
from examples.batch_fanout.workflow import BatchResult, batch_fanout, ocr
from examples.fakes import LOG_ENV, read_log
from examples.long_sleep.workflow import ReminderResult, long_sleep, mailer
from examples.order_saga.workflow import (
    OrderInput,
    OrderResult,
    OrderSaga,
    carrier,
    payments,
    warehouse,
)
from examples.stages.workflow import StagesResult, cluster, stages
from examples.sync_backoff.workflow import SyncResult, api, sink, sync_backoff
from ratline import WorkflowContext, WorkflowDefinition
from ratline.engine import resolve_entrypoint
from ratline.engine.codec import validate_input
from ratline.sdk import spec_of
from ratline.store import EventType, InboxKind, RunStatus
from ratline.testing import RunFailedError, WorkflowTestEnv

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_DIRS = sorted(p.parent.name for p in EXAMPLES.glob("*/workflow.yaml"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def manifest(example: str, kind: str) -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLES / example / f"{kind}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# ---------------------------------------------------------------- every example


def test_the_examples_are_all_found() -> None:
    expected = {"approval", "batch_fanout", "hello", "long_sleep", "order_saga", "stages"}
    assert expected | {"sync_backoff"} <= set(EXAMPLE_DIRS)


@pytest.mark.parametrize("example", EXAMPLE_DIRS)
def test_manifests_name_the_workflow_and_a_valid_input(example: str) -> None:
    wf = manifest(example, "workflow")
    run = manifest(example, "run")
    assert (wf["apiVersion"], wf["kind"]) == ("ratline.dev/v1alpha1", "Workflow")
    assert (run["apiVersion"], run["kind"]) == ("ratline.dev/v1alpha1", "WorkflowRun")
    assert wf["spec"]["image"] == "ghcr.io/ratline/examples:0.1.0"
    assert wf["spec"]["entrypoint"].startswith(f"examples.{example}.workflow:")
    assert run["spec"]["workflowRef"]["name"] == wf["metadata"]["name"]
    spec = resolve_entrypoint(wf["spec"]["entrypoint"])
    validate_input(spec.name, spec.input_type, run["spec"]["input"])  # raises if invalid
    assert (EXAMPLES / example / "README.md").read_text().startswith(f"# {example}")


EXPECTED_FROM_RUN_YAML: dict[str, dict[str, Any]] = {
    "approval": {"outcome": "expired", "escalated": True},  # nobody answers in 5 days
    "batch_fanout": {"processed": 4, "failed": 1},
    "hello": {"greeting": "Hello, WORLD! Hello, WORLD!", "letters": 20},
    "long_sleep": {"user": "ada"},
    "order_saga": {"order_id": "1001"},
    "stages": {"completion": "report-2026-q1 done after 3 stage(s)"},
    "sync_backoff": {"pages": 12, "records": 36, "batches": 3},
}


@pytest.mark.parametrize("example", EXAMPLE_DIRS)
async def test_run_yaml_runs_to_its_expected_result(example: str) -> None:
    spec = resolve_entrypoint(manifest(example, "workflow")["spec"]["entrypoint"])
    env = WorkflowTestEnv()
    run = await env.start(spec.name, manifest(example, "run")["spec"]["input"])
    result = (await run.result()).model_dump()
    assert result.items() >= EXPECTED_FROM_RUN_YAML[example].items()


# ---------------------------------------------------------------- order_saga


def order(country: str = "DE", quantity: int = 2) -> dict[str, Any]:
    return {
        "order_id": unique("ord"),
        "customer_id": "cust-1",
        "amount_cents": 2500,
        "lines": [{"sku": "mug", "quantity": quantity}, {"sku": "tea", "quantity": 1}],
        "address": {"name": "Ada", "street": "1 Road", "city": "Hamburg", "country": country},
    }


def side_effects(order_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for service in (payments, warehouse, carrier):
        for call in service.calls_for(order_id):
            counts[call.op] = counts.get(call.op, 0) + 1
    return counts


async def test_order_saga_charges_reserves_and_ships_once() -> None:
    env = WorkflowTestEnv()
    inp = order()
    run = await env.start(OrderSaga, inp)
    result = await run.result()
    assert isinstance(result, OrderResult)
    assert result.order_id == inp["order_id"]
    assert result.payment_id.startswith("pay_")
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "ship": 1}
    (charge,) = payments.calls_for(inp["order_id"], "charge")
    assert charge.data["idempotency_key"] == f"{run.run_id}:1"


async def test_order_saga_shipment_failure_undoes_in_reverse_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "side-effects.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    env = WorkflowTestEnv()
    inp = order(country="ZZ")  # the carrier does not deliver there: final
    run = await env.start(OrderSaga, inp)
    with pytest.raises(RunFailedError) as failed:
        await run.result()
    assert failed.value.status is RunStatus.FAILED
    assert "create-shipment" in failed.value.error["message"]
    assert "AddressRejected" in failed.value.error["message"]
    ops = [(r["service"], r["op"]) for r in read_log(log) if r["key"] == inp["order_id"]]
    assert ops == [
        ("payments", "charge"),
        ("inventory", "reserve"),
        ("inventory", "release"),
        ("payments", "refund"),
    ]
    failed_steps = [e for e in await run.history() if e.type is EventType.STEP_FAILED]
    assert [(e.name, e.payload["retry_at"]) for e in failed_steps] == [("create-shipment", None)]
    (refund,) = payments.calls_for(inp["order_id"], "refund")
    assert refund.data["idempotency_key"] == f"{run.run_id}:5"  # its own step, its own key


async def test_order_saga_out_of_stock_refunds_without_retrying() -> None:
    env = WorkflowTestEnv()
    inp = order(quantity=51)
    run = await env.start(OrderSaga, inp)
    with pytest.raises(RunFailedError, match="NonRetryableError"):
        await run.result()
    assert side_effects(inp["order_id"]) == {"charge": 1, "refund": 1}
    assert env.now() == WorkflowTestEnv().now()  # no backoff waits happened


async def test_order_saga_retries_a_carrier_outage_with_backoff() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    inp = order()
    carrier.fail("ship", inp["order_id"], times=2)
    run = await env.start(OrderSaga, inp)
    await run.result()
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "ship": 1}
    assert env.now() - start == timedelta(seconds=30 + 60)


async def test_order_saga_idempotency_key_survives_a_lost_payment_reply() -> None:
    env = WorkflowTestEnv()
    inp = order()
    payments.fail("charge-reply", inp["order_id"])  # charged, but the reply is lost
    run = await env.start(OrderSaga, inp)
    result = await run.result()
    assert side_effects(inp["order_id"]) == {
        "charge": 1,
        "charge-deduplicated": 1,
        "reserve": 1,
        "ship": 1,
    }
    keys = {c.data["idempotency_key"] for c in payments.calls_for(inp["order_id"])}
    assert keys == {f"{run.run_id}:1"}
    (charge,) = payments.calls_for(inp["order_id"], "charge")
    assert result.payment_id.startswith("pay_")
    assert charge.data["amount_cents"] == 2500


@pytest.mark.parametrize("step", ["charge-payment", "reserve-stock", "create-shipment"])
async def test_order_saga_crash_after_each_step_does_every_side_effect_once(step: str) -> None:
    env = WorkflowTestEnv()
    inp = order()
    env.simulate_crash_after(step)
    run = await env.start(OrderSaga, inp)
    assert run.activations[0].crashed
    await run.result()
    assert run.status is RunStatus.SUCCEEDED
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "ship": 1}
    assert run.was_replayed(step)
    assert all(run.executions(s) == 1 for s in ("charge-payment", "reserve-stock"))


@pytest.mark.parametrize("step", ["charge-payment", "reserve-stock"])
async def test_order_saga_crash_before_the_failure_still_compensates_once(step: str) -> None:
    env = WorkflowTestEnv()
    inp = order(country="ZZ")
    env.simulate_crash_after(step)
    run = await env.start(OrderSaga, inp)
    with pytest.raises(RunFailedError):
        await run.result()
    assert len(run.activations) == 2
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "release": 1, "refund": 1}


@pytest.mark.parametrize("step", ["compensate:reserve-stock", "compensate:charge-payment"])
async def test_order_saga_crash_after_each_undo_step_does_it_once(step: str) -> None:
    env = WorkflowTestEnv()
    inp = order(country="ZZ")
    env.simulate_crash_after(step)
    run = await env.start(OrderSaga, inp)
    with pytest.raises(RunFailedError):
        await run.result()
    assert run.activations[0].crashed
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "release": 1, "refund": 1}


# Two versions of one workflow, registered under the same name: v2 adds a step
# in front without a `patched` guard, v3 adds it behind one.
ND_NAME = "order-saga-versioning-test"


def fraud_check(order_id: str) -> bool:
    return not order_id.startswith("fraud")


class SagaV1(WorkflowDefinition[OrderInput, OrderResult]):
    name = ND_NAME

    async def execute(self, ctx: WorkflowContext, inp: OrderInput) -> OrderResult:
        return await OrderSaga().execute(ctx, inp)


class SagaV2(WorkflowDefinition[OrderInput, OrderResult]):
    name = ND_NAME

    async def execute(self, ctx: WorkflowContext, inp: OrderInput) -> OrderResult:
        await ctx.run("fraud-check", fraud_check, inp.order_id)
        return await OrderSaga().execute(ctx, inp)


class SagaV3(WorkflowDefinition[OrderInput, OrderResult]):
    name = ND_NAME

    async def execute(self, ctx: WorkflowContext, inp: OrderInput) -> OrderResult:
        if ctx.patched("fraud-check"):
            await ctx.run("fraud-check", fraud_check, inp.order_id)
        return await OrderSaga().execute(ctx, inp)


async def test_order_saga_changed_code_on_resume_blocks_the_run() -> None:
    env = WorkflowTestEnv()
    inp = order()
    env.simulate_crash_after("reserve-stock")
    run = await env.start(SagaV1, inp)
    assert run.activations[0].crashed
    run.spec = spec_of(SagaV2)  # a new image is deployed while the run is down
    outcome = await run.resume()
    assert outcome.status is RunStatus.BLOCKED
    assert outcome.error is not None
    assert outcome.error["type"] == "NonDeterminismError"
    assert "fraud-check" in outcome.error["message"]
    assert "charge-payment" in outcome.error["message"]
    stored = await env.store.get_run(run.run_id)
    assert stored is not None
    assert stored.status is RunStatus.BLOCKED
    history = await run.history()
    assert history[-1].type is EventType.RUN_BLOCKED
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1}  # nothing re-ran
    with pytest.raises(RunFailedError, match="blocked"):
        await run.result()


async def test_order_saga_patched_guard_lets_old_runs_continue() -> None:
    env = WorkflowTestEnv()
    inp = order()
    env.simulate_crash_after("reserve-stock")
    old = await env.start(SagaV1, inp)
    old.spec = spec_of(SagaV3)
    await old.result()
    assert side_effects(inp["order_id"]) == {"charge": 1, "reserve": 1, "ship": 1}
    assert old.executions("fraud-check") == 0  # the old run keeps its old path
    new = await env.start(SagaV3, order())
    await new.result()
    assert new.executions("fraud-check") == 1


# ---------------------------------------------------------------- approval


def approval_request() -> dict[str, Any]:
    return {
        "request_id": unique("req"),
        "requester": "sam",
        "title": "Build server",
        "amount_cents": 120000,
        "approver": "dana",
        "escalate_to": "lee",
    }


def sent(request_id: str) -> list[tuple[str, str]]:
    return [(c.data["to"], c.data["template"]) for c in notifier.calls_for(request_id)]


async def test_approval_approved_by_the_approver_in_time() -> None:
    env = WorkflowTestEnv()
    req = approval_request()
    run = await env.start(approval, req)
    assert run.status is RunStatus.SUSPENDED
    assert run.last.waiting_for == ["approval"]
    assert run.last.wake_at == env.now() + timedelta(days=2)
    await run.signal("approval", {"approved": True, "by": "dana", "comment": "go"})
    result = await run.result()
    assert result == ApprovalResult(
        request_id=req["request_id"],
        outcome="approved",
        decided_by="dana",
        escalated=False,
        comment="go",
    )
    assert sent(req["request_id"]) == [("dana", "please-approve"), ("sam", "approved")]


async def test_approval_rejected_by_signal_or_by_rejecting_the_promise() -> None:
    env = WorkflowTestEnv()
    by_signal = await env.start(approval, approval_request())
    await by_signal.signal("approval", {"approved": False, "by": "dana", "comment": "no"})
    assert (await by_signal.result()).outcome == "rejected"
    req = approval_request()
    by_reject = await env.start(approval, req)
    await by_reject.reject("approval", {"by": "dana", "comment": "over budget"})
    result = await by_reject.result()
    assert (result.outcome, result.decided_by) == ("rejected", "dana")
    assert result.comment == "over budget"
    assert sent(req["request_id"])[-1] == ("sam", "rejected")


async def test_approval_escalates_after_two_days_then_the_escalation_decides() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    req = approval_request()
    run = await env.start(approval, req)
    await env.advance("2d")
    assert env.now() - start == timedelta(days=2)
    assert run.status is RunStatus.SUSPENDED
    assert run.last.waiting_for == ["escalation"]
    assert run.last.wake_at == start + timedelta(days=5)
    assert sent(req["request_id"]) == [("dana", "please-approve"), ("lee", "escalated")]
    await env.advance("1d")
    await run.signal("escalation", {"approved": True, "by": "lee"})
    result = await run.result()
    assert (result.outcome, result.decided_by, result.escalated) == ("approved", "lee", True)
    assert env.now() - start == timedelta(days=3)
    late = await env.store.deliver(run.run_id, "approval", InboxKind.SIGNAL, {"approved": False})
    assert late  # delivered, but the run is finished: it changes nothing
    after = await run.resume()
    assert after.status is RunStatus.SUCCEEDED
    assert after.result["outcome"] == "approved"


async def test_approval_expires_when_nobody_answers_for_five_days() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    req = approval_request()
    run = await env.start(approval, req)
    result = await run.result()  # skips both deadlines on the fake clock
    assert (result.outcome, result.decided_by, result.escalated) == ("expired", None, True)
    assert env.now() - start == timedelta(days=5)
    types = [e.type for e in await run.history()]
    assert types.count(EventType.PROMISE_TIMED_OUT) == 2
    assert sent(req["request_id"])[-1] == ("sam", "expired")


# ---------------------------------------------------------------- sync_backoff


def sync_input(**extra: Any) -> dict[str, Any]:
    return {"source": unique("crm"), "credential": "tok", "pages": 7, "batch_size": 3, **extra}


async def test_sync_backoff_copies_every_page_in_batches_with_pauses() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    inp = sync_input(pause="10m")
    run = await env.start(sync_backoff, inp)
    result = await run.result()
    assert result == SyncResult(source=inp["source"], pages=7, records=21, batches=3)
    pages = [c.data["page"] for c in api.calls_for(inp["source"], "fetch")]
    assert pages == [1, 2, 3, 4, 5, 6, 7]
    assert [c.data["count"] for c in sink.calls_for(inp["source"])] == [9, 9, 3]
    assert env.now() - start == timedelta(minutes=20)  # two pauses between three batches
    progress = [e.payload["value"] for e in await run.history() if e.name == "progress"]
    assert progress[-1] == {"pages_done": 7, "pages": 7, "records": 21}
    assert len(progress) == 3


async def test_sync_backoff_retries_a_throttled_page_with_growing_waits() -> None:
    env = WorkflowTestEnv()
    inp = sync_input(pause="1s")
    api.fail("fetch", f"{inp['source']}:5", times=3)
    run = await env.start(sync_backoff, inp)
    assert (await run.result()).records == 21
    assert len(api.calls_for(inp["source"], "throttled")) == 3
    assert len(api.calls_for(inp["source"], "fetch")) == 7  # no page fetched twice
    failed = [e for e in await run.history() if e.type is EventType.STEP_FAILED]
    assert [e.name for e in failed] == ["fetch-page-5"] * 3
    waits = [datetime.fromisoformat(e.payload["retry_at"]) - e.time for e in failed]
    assert waits == [timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=120)]


async def test_sync_backoff_bad_credential_fails_at_once() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    inp = sync_input(credential="revoked-tok")
    run = await env.start(sync_backoff, inp)
    with pytest.raises(RunFailedError, match="refused the credential") as failed:
        await run.result()
    assert failed.value.status is RunStatus.FAILED
    assert len(api.calls_for(inp["source"])) == 1  # no retry
    assert sink.count(inp["source"]) == 0
    assert env.now() == start


async def test_sync_backoff_crash_during_backoff_keeps_attempts_and_pages() -> None:
    env = WorkflowTestEnv()
    inp = sync_input(pause="1s")
    api.fail("fetch", f"{inp['source']}:2", times=2)
    env.simulate_crash_after("fetch-page-1")
    run = await env.start(sync_backoff, inp)
    await run.result()
    assert len(api.calls_for(inp["source"], "fetch")) == 7
    assert len(api.calls_for(inp["source"], "throttled")) == 2
    assert run.executions("fetch-page-1") == 1


# ---------------------------------------------------------------- batch_fanout


async def test_batch_fanout_reports_partial_failures_and_succeeds() -> None:
    env = WorkflowTestEnv()
    batch = unique("batch")
    docs = ["a.pdf", "b.pdf", "c.corrupt", "d.pdf", "e.pdf"]
    ocr.fail("ocr", f"{batch}/b.pdf", times=-1)  # busy forever: exhausts its 3 attempts
    ocr.fail("ocr", f"{batch}/d.pdf", times=1)  # busy once: the retry succeeds
    run = await env.start(batch_fanout, {"batch_id": batch, "documents": docs})
    result = await run.result()
    assert isinstance(result, BatchResult)
    assert run.status is RunStatus.SUCCEEDED
    assert (result.processed, result.failed) == (3, 2)
    assert [r.document for r in result.results] == ["a.pdf", "d.pdf", "e.pdf"]
    failures = {f.document: (f.attempts, f.error.split(":")[0]) for f in result.failures}
    assert failures == {"b.pdf": (3, "OcrBusy"), "c.corrupt": (1, "Unreadable")}
    done = sorted(c.data["document"] for c in ocr.calls_for(batch, "ocr"))
    assert done == ["a.pdf", "d.pdf", "e.pdf"]


async def test_batch_fanout_crash_mid_batch_reruns_only_unfinished_items() -> None:
    env = WorkflowTestEnv()
    batch = unique("batch")
    docs = [f"doc-{i}.pdf" for i in range(8)]
    env.simulate_crash_after("batch-fanout.process-document")
    run = await env.start(batch_fanout, {"batch_id": batch, "documents": docs})
    assert run.activations[0].crashed
    result = await run.result()
    assert (result.processed, result.failed) == (8, 0)
    calls = Counter(c.data["document"] for c in ocr.calls_for(batch, "ocr"))
    assert set(calls) == set(docs)
    resumed = run.activations[-1].steps
    items = [s for s in resumed if s.name == "batch-fanout.process-document"]
    assert len(items) == len(docs)
    replayed = [s for s in items if s.replayed]
    assert replayed  # at least the item checkpointed before the crash
    for step in items:  # handles are issued in document order: command i is docs[i-1]
        # the crash stops the whole activation: an item not checkpointed may or may not
        # have reached the service before it, and runs (again) after it
        assert calls[docs[step.command_id - 1]] in ((1,) if step.replayed else (1, 2))


# ---------------------------------------------------------------- stages


def pipeline() -> dict[str, Any]:
    return {
        "job_id": unique("job"),
        "stages": [
            {"name": "prepare", "units": ["load"]},
            {"name": "compute", "units": ["a", "b", "c"]},
            {"name": "finalise", "units": ["render"]},
        ],
    }


async def test_stages_run_in_order_then_complete() -> None:
    env = WorkflowTestEnv()
    inp = pipeline()
    job = inp["job_id"]
    run = await env.start(stages, inp)
    result = await run.result()
    assert isinstance(result, StagesResult)
    assert [s.name for s in result.stages] == ["prepare", "compute", "finalise"]
    assert result.stages[1].outputs == ["compute/a:ok", "compute/b:ok", "compute/c:ok"]
    order_run = [(c.op, c.data.get("stage")) for c in cluster.calls_for(job)]
    assert order_run[0] == ("unit", "prepare")
    assert order_run[-2:] == [("unit", "finalise"), ("complete", None)]
    assert {stage for op, stage in order_run[1:4]} == {"compute"}
    stage_state = [e.payload["value"] for e in await run.history() if e.name == "stage"]
    assert stage_state == ["1/3 prepare", "2/3 compute", "3/3 finalise"]


async def test_stages_fail_fast_when_a_unit_keeps_failing() -> None:
    env = WorkflowTestEnv()
    inp = pipeline()
    job = inp["job_id"]
    cluster.fail("unit", f"{job}/compute/b", times=2)  # both attempts fail
    run = await env.start(stages, inp)
    with pytest.raises(RunFailedError) as failed:
        await run.result()
    assert failed.value.error["type"] == "StageFailed"
    assert "'compute'" in failed.value.error["message"]
    stages_run = {c.data.get("stage") for c in cluster.calls_for(job)}
    assert "finalise" not in stages_run
    assert cluster.count(job, "complete") == 0


async def test_stages_retry_a_flaky_unit_and_finish() -> None:
    env = WorkflowTestEnv()
    inp = pipeline()
    job = inp["job_id"]
    cluster.fail("unit", f"{job}/compute/c", times=1)
    run = await env.start(stages, inp)
    assert (await run.result()).completion == f"{job} done after 3 stage(s)"
    assert cluster.count(job, "unit-failed") == 1
    assert cluster.count(job, "complete") == 1


# ---------------------------------------------------------------- long_sleep


async def test_long_sleep_sends_after_seven_days_of_fake_time() -> None:
    env = WorkflowTestEnv()
    start = env.now()
    user = unique("user")
    run = await env.start(long_sleep, {"user": user, "message": "renew passport"})
    assert run.status is RunStatus.SUSPENDED
    assert run.last.wake_at == start + timedelta(days=7)
    await env.advance("6d")
    assert run.status is RunStatus.SUSPENDED
    assert mailer.count(user) == 0
    result = await run.result()
    assert isinstance(result, ReminderResult)
    assert env.now() - start == timedelta(days=7)
    assert result.sent_at == result.due == start + timedelta(days=7)
    assert mailer.count(user, "send") == 1
    assert run.was_replayed("send-reminder") is False


async def test_long_sleep_rejects_an_unparseable_delay() -> None:
    env = WorkflowTestEnv()
    run = await env.start(long_sleep, {"user": unique("user"), "message": "x", "delay": "soon"})
    assert run.status is RunStatus.FAILED
    assert run.last.error is not None
    assert run.last.error["field"] == "delay"
