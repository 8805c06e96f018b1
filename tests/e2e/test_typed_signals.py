"""Typed signals and whole-workflow attempts on the real control plane (issue 8, items 7, 8).

A run waits on `ctx.promise("approval", type=Approval)`. A payload that does not
validate is refused: the run stays Suspended, the SignalRefused condition and a
Warning Event name the field. The corrected payload, patched into the same
`spec.signals` key, is delivered as `approval#<digest>` and the run succeeds with
the typed value.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.e2e.workflows.flows import read_effects

pytestmark = pytest.mark.e2e

TYPED = "tests.e2e.workflows.flows:typed_approval"
RETRIED = "tests.e2e.workflows.flows:retried"


def _refusal_events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},reason=SignalRefused"
    return kubectl.items("events", "--field-selector", selector)


@pytest.mark.timeout(300)
def test_a_refused_signal_is_shown_and_a_corrected_one_resolves_the_promise(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("typed", TYPED))
    name = unique("typed")
    kubectl.apply(run_manifest(name, "typed", {"key": unique("k")}))
    kubectl.wait_phase(name, "Suspended", timeout=60)
    wait_for("the worker pod to end", lambda: not kubectl.live_worker_pods(name), timeout=60)

    kubectl.patch_run(name, {"spec": {"signals": {"approval": {"approved": True, "amount": "x"}}}})

    def refused() -> dict[str, Any] | None:
        status = kubectl.status(name)
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        cond = conditions.get("SignalRefused") or {}
        return status if cond.get("status") == "True" else None

    status = wait_for("the SignalRefused condition", refused, timeout=90)
    cond = {c["type"]: c for c in status["conditions"]}["SignalRefused"]
    assert "promise approval" in cond["message"], cond
    assert "field amount" in cond["message"], cond
    wait_for("the refusing worker to end", lambda: not kubectl.live_worker_pods(name), timeout=60)
    status = kubectl.status(name)
    assert status["phase"] == "Suspended", status
    assert [p["name"] for p in status["pendingPromises"]] == ["approval"]
    [event] = wait_for("the SignalRefused Event", lambda: _refusal_events(kubectl, name), 60)
    assert event["type"] == "Warning"
    assert "field amount" in event["message"], event

    kubectl.patch_run(name, {"spec": {"signals": {"approval": {"approved": True, "amount": 12}}}})
    final = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert final["phase"] == "Succeeded", final
    assert json.loads(final["result"]) == {"type": "Approval", "approved": True, "amount": 12}
    delivered = final["delivered"]
    assert delivered[0] == "approval", delivered
    assert len(delivered) == 2, delivered
    assert delivered[1].startswith("approval#"), delivered
    cond = {c["type"]: c for c in final["conditions"]}["SignalRefused"]
    assert cond["status"] == "False", cond
    assert len(_refusal_events(kubectl, name)) == 1, "one Event per refusal"


@pytest.mark.timeout(300)
def test_a_whole_workflow_retry_shows_the_attempt_in_status(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    """Item 8 on a cluster: the failed attempt's error and the attempt number in status."""
    kubectl.apply(workflow_manifest("retried", RETRIED, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("retried"), unique("k")
    kubectl.apply(run_manifest(name, "retried", {"key": key}))
    final = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert final["phase"] == "Succeeded", final
    assert json.loads(final["result"]) == {"attempt": 2}
    assert final["attempt"] == 2, final
    assert final["lastAttemptError"] == "ValueError: the first attempt fails", final
    assert [r["op"] for r in read_effects(effects_log, key)] == ["work", "work"]
    selector = f"involvedObject.name={name},reason=AttemptFailed"
    [event] = wait_for(
        "the AttemptFailed Event", lambda: kubectl.items("events", "--field-selector", selector), 60
    )
    assert event["type"] == "Warning"
    assert "attempt 1 failed" in event["message"], event
