"""Bad input never crash-loops: each mistake ends in a clear condition, and stays there."""

from __future__ import annotations

import time
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

HELLO = "examples.hello.workflow:hello"


def conditions(status: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status.get("conditions", [])}  # type: ignore[attr-defined]


def failed_and_handled(kubectl: Kubectl, name: str, timeout: float) -> dict[str, Any]:
    """The status once the run is Failed and its last worker's exit is handled: the phase
    comes from the store and lastExit from the pod, so either may be published first."""
    kubectl.wait_phase(name, "Failed", timeout=timeout)

    def probe() -> dict[str, Any] | None:
        status = kubectl.status(name)
        handled = (status.get("lastExit") or {}).get("pod") == status.get("workerPod")
        return status if handled and status.get("phase") == "Failed" else None

    result: dict[str, Any] = wait_for(f"the exit of {name}'s worker handled", probe, timeout)
    return result


def test_missing_workflow_waits_then_runs_when_it_appears(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    name = unique("early")
    kubectl.apply(run_manifest(name, "not-yet", {"name": "early"}))

    def not_found() -> dict[str, object] | None:
        status = kubectl.status(name)
        return status if "WorkflowNotFound" in conditions(status) else None

    status = wait_for("the WorkflowNotFound condition", not_found, timeout=30)
    assert status["phase"] == "Pending"
    assert "not-yet" in conditions(status)["WorkflowNotFound"]["message"]
    assert status["waiting"] == "workflow not-yet"
    assert not kubectl.worker_pods(name)
    assert operator.alive

    kubectl.apply(workflow_manifest("not-yet", HELLO))
    done = kubectl.wait_phase(name, "Succeeded", timeout=60)
    assert "WorkflowNotFound" not in conditions(done)


def test_bad_input_fails_once_with_input_invalid(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", HELLO))
    name = unique("badinput")
    kubectl.apply(run_manifest(name, "hello", {"name": "", "times": 99}))
    status = failed_and_handled(kubectl, name, timeout=60)
    condition = conditions(status)["InputInvalid"]
    assert condition["status"] == "True"
    assert "name" in condition["message"] or "times" in condition["message"]
    assert status["lastExit"]["exitCode"] == 65
    assert conditions(status)["Stalled"]["reason"] == "InputInvalid"
    time.sleep(3)  # no retry, no new pod
    after = kubectl.status(name)
    assert after["activations"] == 1
    assert after.get("retries", 0) == 0
    assert len(kubectl.worker_pods(name)) == 1
    assert operator.alive


def test_unknown_entrypoint_fails_with_entrypoint_invalid(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("ghost", "examples.nowhere:nothing"))
    name = unique("ghost")
    kubectl.apply(run_manifest(name, "ghost", {"a": 1}))
    status = failed_and_handled(kubectl, name, timeout=60)
    assert "EntrypointInvalid" in conditions(status)
    assert status["lastExit"]["exitCode"] == 66
    time.sleep(3)
    assert kubectl.status(name)["activations"] == 1
    assert operator.alive


def test_crashing_worker_is_replaced_with_backoff_then_exhausted(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    """A worker that dies mid-step every time is replaced with backoff, counted in
    retries, and the run fails with RetriesExhausted: no endless crash loop."""
    operator.extra_args = ["--max-retries", "2"]
    operator.restart(kill=False)
    kubectl.apply(
        workflow_manifest(
            "crash", "tests.e2e.workflows.flows:crash", env={E2E_LOG_ENV: effects_log}
        )
    )
    name, key = unique("crashy"), unique("k")
    kubectl.apply(run_manifest(name, "crash", {"key": key}))
    status = failed_and_handled(kubectl, name, timeout=120)
    condition = conditions(status)["RetriesExhausted"]
    assert "exit code 3" in condition["message"]
    assert status["retries"] == 2
    assert status["activations"] == 3
    assert status["lastExit"]["exitCode"] == 3
    assert [r["op"] for r in read_effects(effects_log, key)] == ["die"] * 3
    time.sleep(2)
    assert kubectl.status(name)["activations"] == 3
    assert operator.alive


def test_worker_that_cannot_start_shows_why_and_recovers_when_fixed(
    operator: OperatorProcess, kubectl: Kubectl, migrated_dsn: str
) -> None:
    """Its DSN Secret is missing: the pod cannot start (no crash, no retry loop); the
    run says why, and carries on once the Secret exists."""
    operator.extra_args = ["--worker-dsn-secret", "not-there-yet"]
    operator.restart(kill=False)
    kubectl.apply(workflow_manifest("hello", HELLO))
    name = unique("blocked")
    kubectl.apply(run_manifest(name, "hello", {"name": "x"}))

    def pending() -> dict[str, object] | None:
        status = kubectl.status(name)
        return status if "WorkerPending" in conditions(status) else None

    status = wait_for("the WorkerPending condition", pending, timeout=60)
    condition = conditions(status)["WorkerPending"]
    assert condition["reason"] == "CreateContainerConfigError"
    assert "not-there-yet" in condition["message"]
    assert status["activations"] == 1
    assert status.get("retries", 0) == 0

    kubectl.run(
        "create", "secret", "generic", "not-there-yet", f"--from-literal=dsn={migrated_dsn}"
    )
    done = kubectl.wait_phase(name, "Succeeded", timeout=90)
    assert "WorkerPending" not in conditions(done)
    assert done["activations"] == 1
