"""Every example's own YAML, applied to the real control plane, with the operator and
real worker processes: each reaches the state its README promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl, OperatorProcess, wait_for
from tests.unit.test_examples import EXPECTED_FROM_RUN_YAML

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TO_END = ["hello", "batch_fanout", "order_saga", "stages", "sync_backoff"]


def apply_example(kubectl: Kubectl, example: str, **input_changes: Any) -> str:
    """Apply the example's Workflow and WorkflowRun; returns the run's name."""
    workflow = yaml.safe_load((EXAMPLES / example / "workflow.yaml").read_text())
    run = yaml.safe_load((EXAMPLES / example / "run.yaml").read_text())
    run["spec"]["input"].update(input_changes)
    kubectl.apply(workflow, run)
    return str(run["metadata"]["name"])


def result_of(status: dict[str, Any]) -> dict[str, Any]:
    value = json.loads(status["result"])
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("example", RUN_TO_END)
def test_example_runs_to_its_expected_result(
    operator: OperatorProcess, kubectl: Kubectl, example: str
) -> None:
    # sync_backoff pauses 30 s between batches in its YAML; 1 s keeps the test short
    changes = {"pause": "1s"} if example == "sync_backoff" else {}
    name = apply_example(kubectl, example, **changes)
    status = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert result_of(status).items() >= EXPECTED_FROM_RUN_YAML[example].items()
    assert status["steps"], status


def test_approval_example_waits_for_the_signal_with_no_pod(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    name = apply_example(kubectl, "approval")
    waiting = kubectl.wait_phase(name, "Suspended", timeout=60)
    assert [p["name"] for p in waiting["pendingPromises"]] == ["approval"]
    kubectl.patch_run(name, {"spec": {"signals": {"approval": {"approved": True, "by": "dana"}}}})
    status = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=60)
    assert status["phase"] == "Succeeded", status
    assert result_of(status)["outcome"] == "approved"


def test_long_sleep_example_sleeps_without_a_pod(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    name = apply_example(kubectl, "long_sleep")
    status = kubectl.wait_phase(name, "Suspended", timeout=60)
    assert status["sleepingUntil"]
    wait_for("the worker pod to end", lambda: not kubectl.live_worker_pods(name), timeout=30)
