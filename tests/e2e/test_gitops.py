"""GitOps on the real control plane (docs/gitops.md): re-applying the manifests of a
finished run changes nothing, and a changed input is refused by the API server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl, OperatorProcess

pytestmark = pytest.mark.e2e

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


def snapshot(kubectl: Kubectl) -> dict[str, Any]:
    """What must not move: versions and generations of both objects, and the pods."""
    wf = kubectl.get("workflow", "hello")
    run = kubectl.get("workflowrun", "hello-world")
    assert wf is not None
    assert run is not None
    return {
        "workflow": (wf["metadata"]["resourceVersion"], wf["metadata"]["generation"]),
        "run": (run["metadata"]["resourceVersion"], run["metadata"]["generation"]),
        "status": run["status"],
        "pods": sorted(p["metadata"]["name"] for p in kubectl.items("pods")),
    }


def test_reapplying_a_finished_run_is_a_no_op(operator: OperatorProcess, kubectl: Kubectl) -> None:
    files = ("-f", str(HELLO / "workflow.yaml"), "-f", str(HELLO / "run.yaml"))
    kubectl.run("apply", *files)
    kubectl.wait_phase("hello-world", "Succeeded", timeout=60)
    time.sleep(1.5)  # let the debounced status writer settle (interval 0.3 s)
    before = snapshot(kubectl)

    again = kubectl.run("apply", *files).stdout
    assert "workflow.ratline.dev/hello unchanged" in again
    assert "workflowrun.ratline.dev/hello-world unchanged" in again
    time.sleep(3)  # several status intervals and wake polls
    after = snapshot(kubectl)
    assert after == before
    assert after["status"]["activations"] == 1


def test_changing_the_input_of_an_applied_run_is_refused(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.run("apply", "-f", str(HELLO / "workflow.yaml"), "-f", str(HELLO / "run.yaml"))
    changed = yaml.safe_load((HELLO / "run.yaml").read_text())
    changed["spec"]["input"]["name"] = "someone else"
    refused = kubectl.apply(changed, check=False)
    assert refused.returncode != 0
    assert "spec.input is immutable" in refused.stderr
