"""The operator's happy paths on the real control plane, with real worker processes.

Each test runs its own operator (subprocess) on its own namespace and
database; workers are `python -m ratline.worker` processes started by the
process kubelet from the pods the operator creates.
"""

from __future__ import annotations

import json
import time

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
from tests.e2e.workflows.flows import read_all_effects, read_effects

pytestmark = pytest.mark.e2e

GATE = "tests.e2e.workflows.flows:gate"
STEPS = "tests.e2e.workflows.flows:steps"


def test_hello_run_succeeds_with_result_and_steps(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    kubectl.apply(workflow_manifest("hello", "examples.hello.workflow:hello"))
    kubectl.apply(run_manifest("hello-world", "hello", {"name": "world", "times": 2}))
    status = kubectl.wait_phase("hello-world", "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {
        "greeting": "Hello, WORLD! Hello, WORLD!",
        "letters": 20,
    }
    assert status["progress"] == "3/3"
    assert [s["name"] for s in status["steps"]] == ["shout", "compose", "count"]
    assert all(s["state"] == "Completed" for s in status["steps"])
    assert status["image"] == "ratline-e2e:local"
    assert status["entrypoint"] == "examples.hello.workflow:hello"
    assert status["activations"] == 1
    assert status.get("retries", 0) == 0
    assert status["state"] == {"greeting": "Hello, WORLD! Hello, WORLD!"}
    assert status["startedAt"] <= status["finishedAt"]
    finished = {c["type"]: c for c in status["conditions"]}["Finished"]
    assert finished["reason"] == "Succeeded"
    pod = kubectl.get("pod", status["workerPod"])
    assert pod is not None  # the finished run keeps its last pod for `kubectl logs`
    assert pod["spec"]["automountServiceAccountToken"] is False
    events = kubectl.run("get", "events", "--field-selector", "involvedObject.name=hello-world")
    assert "Completed" in events.stdout
    metrics = operator.metrics()
    assert "ratline_worker_pods_started_total 1.0" in metrics
    assert 'ratline_runs{phase="Succeeded"} 1.0' in metrics
    assert "ratline_reconcile_seconds_count" in metrics


def test_promise_suspends_without_a_pod_and_a_signal_completes_it(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("gate"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key}))
    status = kubectl.wait_phase(name, "Suspended", timeout=60)
    assert status["pendingPromises"][0]["name"] == "go"
    assert status["waiting"] == "signal go"
    wait_for("the worker pod to end", lambda: not kubectl.live_worker_pods(name), timeout=30)

    kubectl.patch_run(name, {"spec": {"signals": {"go": {"approved": True}}}})
    status = kubectl.wait_phase(name, "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {"outcome": "signalled", "value": {"approved": True}}
    assert status["delivered"] == ["go"]
    activations = status["activations"]
    assert activations == 2

    # The same patch again (and a new, unrelated signal) change nothing.
    kubectl.patch_run(name, {"spec": {"signals": {"go": {"approved": True}}}})
    kubectl.patch_run(name, {"spec": {"signals": {"go": {"approved": False}}}})
    time.sleep(2)
    again = kubectl.status(name)
    assert again["phase"] == "Succeeded"
    assert again["activations"] == activations
    assert again["result"] == status["result"]
    ops = [r["op"] for r in read_effects(effects_log, key)]
    assert ops == ["reserve", "proceed"]
    assert "ratline_signal_to_resume_seconds_count 1.0" in operator.metrics()


def test_promise_deadline_takes_the_timeout_path(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("deadline"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key, "timeout": "4s"}))
    suspended = kubectl.wait_phase(name, "Suspended", timeout=60)
    assert suspended["pendingPromises"][0]["deadline"]
    status = kubectl.wait_phase(name, "Succeeded", timeout=60)
    assert json.loads(status["result"]) == {"outcome": "expired"}
    assert [r["op"] for r in read_effects(effects_log, key)] == ["reserve", "expired"]


def test_cancel_runs_compensation_and_ends_cancelled(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("cancel"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key}))
    kubectl.wait_phase(name, "Suspended", timeout=60)
    kubectl.patch_run(name, {"spec": {"cancel": True}})
    status = kubectl.wait_phase(name, "Cancelled", "Failed", timeout=90)
    assert status["phase"] == "Cancelled", status
    assert "cancel" in status["delivered"]
    ops = [r["op"] for r in read_effects(effects_log, key)]
    assert ops == ["reserve", "release"]
    wait_for("the worker pod to end", lambda: not kubectl.live_worker_pods(name), timeout=30)


def test_max_duration_times_the_run_out_with_compensation(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("gate", GATE, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("slow"), unique("k")
    kubectl.apply(run_manifest(name, "gate", {"key": key}, maxDuration="3s"))
    status = kubectl.wait_phase(name, "TimedOut", "Failed", timeout=90)
    assert status["phase"] == "TimedOut", status
    # Whichever noticed first (the worker's own clock or the operator's inbox entry
    # `timeout`), the run times out once, with compensation.
    assert [r["op"] for r in read_effects(effects_log, key)] == ["reserve", "release"]


def test_deleting_a_run_removes_its_pods(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(workflow_manifest("steps", STEPS, env={E2E_LOG_ENV: effects_log}))
    name, key = unique("doomed"), unique("k")
    kubectl.apply(run_manifest(name, "steps", {"key": key, "steps": 20, "step_seconds": 1}))
    wait_for("the worker to start a step", lambda: read_effects(effects_log, key), timeout=60)
    assert kubectl.worker_pods(name)
    kubectl.run("delete", "workflowrun", name, "--wait", "--timeout=30s")
    wait_for("the worker pods to go", lambda: not kubectl.worker_pods(name), timeout=30)
    assert kubectl.get("workflowrun", name) is None


def test_concurrency_queues_runs_in_priority_order(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    kubectl.apply(
        workflow_manifest("one-at-a-time", STEPS, env={E2E_LOG_ENV: effects_log}, concurrency=1)
    )
    first, low, high = unique("first"), unique("low"), unique("high")
    kubectl.apply(
        run_manifest(first, "one-at-a-time", {"key": first, "steps": 2, "step_seconds": 1.5})
    )
    wait_for("the first run to hold the slot", lambda: kubectl.live_worker_pods(first))
    kubectl.apply(run_manifest(low, "one-at-a-time", {"key": low, "steps": 1}, priority=1))
    kubectl.apply(run_manifest(high, "one-at-a-time", {"key": high, "steps": 1}, priority=9))
    queued = wait_for(
        "the later runs to be queued",
        lambda: all(
            any(c["type"] == "Queued" for c in kubectl.status(n).get("conditions", []))
            for n in (low, high)
        ),
    )
    assert queued
    for name in (first, low, high):
        kubectl.wait_phase(name, "Succeeded", timeout=90)
    order = [r["key"] for r in read_all_effects(effects_log) if r["op"] == "start"]
    first_seen = sorted({k: order.index(k) for k in (first, low, high)}.items(), key=lambda i: i[1])
    assert [k for k, _ in first_seen] == [first, high, low]


def test_child_run_is_created_owned_and_wakes_the_parent(
    operator: OperatorProcess, kubectl: Kubectl, effects_log: str
) -> None:
    env = {E2E_LOG_ENV: effects_log}
    kubectl.apply(
        workflow_manifest("e2e-parent", "tests.e2e.workflows.flows:parent", env=env),
        workflow_manifest("e2e-steps", STEPS, env=env),
    )
    name, key = unique("parent"), unique("k")
    kubectl.apply(run_manifest(name, "e2e-parent", {"key": key}))
    status = kubectl.wait_phase(name, "Succeeded", timeout=90)
    assert json.loads(status["result"]) == {"child": {"total": 3}}
    parent_uid = kubectl.get("workflowrun", name)["metadata"]["uid"]  # type: ignore[index]
    (child,) = kubectl.items("workflowruns", "-l", f"ratline.dev/parent-uid={parent_uid}")
    assert child["metadata"]["ownerReferences"][0]["uid"] == parent_uid
    assert child["status"]["phase"] == "Succeeded"
    assert [r["op"] for r in read_effects(effects_log, key)] == ["after-child"]
