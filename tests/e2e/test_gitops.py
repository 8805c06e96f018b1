"""GitOps on the real control plane (docs/gitops.md): re-applying the manifests of a
finished run changes nothing, a changed input is refused by the API server, and the
health verdicts of live runs in every phase are right under the real evaluators:
kstatus (sigs.k8s.io/cli-utils: Flux without `healthCheckExprs`, kpt, Config Sync)
and the Argo CD health Lua of docs/gitops.md run by gopher-lua (Argo CD's Lua),
both built from tests/tools/ by tests/tools/build.sh."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    E2E_LOG_ENV,
    Kubectl,
    OperatorProcess,
    run_manifest,
    unique,
    wait_for,
    workflow_manifest,
)
from tests.tools.health import argo_lua, verdict

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


def test_every_phase_reads_right_under_kstatus_and_argo_cd(
    operator: OperatorProcess,
    kubectl: Kubectl,
    effects_log: str,
    tmp_path: Path,
) -> None:
    env = {E2E_LOG_ENV: effects_log}
    kubectl.apply(
        workflow_manifest("hello", "examples.hello.workflow:hello"),
        workflow_manifest("steps", "tests.e2e.workflows.flows:steps", env=env),
        workflow_manifest("gate", "tests.e2e.workflows.flows:gate", env=env),
        workflow_manifest("broken", "tests.e2e.workflows.nowhere:missing"),
    )
    runs = {
        "Succeeded": run_manifest(unique("ok"), "hello", {"name": "x", "times": 1}),
        "Running": run_manifest(
            unique("busy"), "steps", {"key": unique("k"), "steps": 3, "step_seconds": 30}
        ),
        "Suspended": run_manifest(unique("wait"), "gate", {"key": unique("k")}),
        "Failed": run_manifest(unique("bad"), "broken", {}),
        "Pending": run_manifest(unique("lost"), "no-such-workflow", {}),
    }
    kubectl.apply(*runs.values())
    expected = {  # phase -> (kstatus, Argo CD)
        "Succeeded": ("Current", "Healthy"),
        "Running": ("InProgress", "Progressing"),
        "Suspended": ("InProgress", "Suspended"),
        "Failed": ("Failed", "Degraded"),
        "Pending": ("InProgress", "Progressing"),
    }
    argo = argo_lua("WorkflowRun", tmp_path)
    seen: set[str] = set()
    for phase, manifest in runs.items():
        name = manifest["metadata"]["name"]
        kubectl.wait_phase(name, phase, timeout=120)
        obj = kubectl.get("workflowrun", name)
        assert obj is not None
        now = obj["status"]["phase"]  # a Running run may have finished since: judge what is
        got = (verdict(obj, "kstatus"), verdict(obj, "argo", str(argo)))
        assert got == expected[now], f"{name} ({now}): {got}"
        seen.add(now)
    assert seen >= {"Succeeded", "Suspended", "Failed", "Pending"}

    workflow = kubectl.get("workflow", "hello")
    assert workflow is not None
    assert verdict(workflow, "kstatus") == "Current"
    assert verdict(workflow, "argo", str(argo_lua("Workflow", tmp_path))) == "Healthy"


def test_kubectl_wait_for_ready_returns_for_a_succeeding_run(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", "examples.hello.workflow:hello"))
    name = unique("ready")
    kubectl.apply(run_manifest(name, "hello", {"name": "x", "times": 1}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=120s", f"workflowrun/{name}")
    status = kubectl.status(name)
    assert status["phase"] == "Succeeded"
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["observedGeneration"] == 1


def test_a_failed_run_is_stalled_and_its_workflow_says_why(
    operator: OperatorProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    kubectl.apply(workflow_manifest("broken", "tests.e2e.workflows.nowhere:missing"))
    name = unique("bad")
    kubectl.apply(run_manifest(name, "broken", {}))
    kubectl.run("wait", "--for=condition=Stalled", "--timeout=120s", f"workflowrun/{name}")
    conditions = {c["type"]: c for c in kubectl.status(name)["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Stalled"]["reason"] == "EntrypointInvalid"
    assert conditions["Reconciling"]["status"] == "False"

    def workflow_ready() -> dict[str, Any] | None:
        wf = kubectl.get("workflow", "broken") or {}
        found = {c["type"]: c for c in (wf.get("status") or {}).get("conditions") or []}
        ready = found.get("Ready")
        return ready if ready and ready["status"] == "False" else None

    ready = wait_for("the Workflow's Ready=False", workflow_ready, timeout=60)
    assert ready["reason"] == "EntrypointInvalid"
    workflow = kubectl.get("workflow", "broken")
    assert workflow is not None
    assert verdict(workflow, "argo", str(argo_lua("Workflow", tmp_path))) == "Degraded"
